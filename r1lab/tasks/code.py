"""Code: write a short Python function from a one-line spec and two examples; hidden tests decide.

DeepSeek-R1 (arXiv:2501.12948, sec. 2.2.2) rewards code by running it against test cases. This
task makes such problems for tiny models: one function over ints, strings or lists, from a family
of parameterised specs (``Return 3 * x - 2``, ``shift every lowercase letter by 5``, ...). The
question shows the signature, the spec and two examples; ``check`` runs the model's code in the
sandbox on ten hidden inputs and compares with this module's reference implementation, in this
process: expected values never reach the child. Pass/fail scoring (1.0 only when every hidden
test passes), as in R1; ``Verdict.fraction`` is there for partial credit if wanted.

The same problem: the same function, i.e. the same family and parameters (``affine`` with a=3,
b=-2), whatever example calls the question shows. The split hashes that key: splitting on the
question text, whose example calls are random, put 98.5% of test functions in training with the
very reference code that pretraining places inside ``<answer>``. Families with few parameter
values (``repeat`` has 3) may have no test problem at all; the test split is still 10% of keys.

Hidden tests come from a seed that is a hash of the question, so any process regenerates them
from the ``Example`` alone; the sandbox hides this file from the child (Landlock, and an empty
tmpfs over the project), so the reference cannot be read or imported from there.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Callable

from r1lab.sandbox import CallTests, Limits, Verdict, run_tests_many
from r1lab.tasks.base import Example, ProceduralTask, stable_hash

N_HIDDEN = 10
LIMITS = Limits(timeout_s=2.0)
_FENCE_RE = re.compile(r"^\s*```[a-zA-Z0-9]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


@dataclass(frozen=True)
class Family:
    """A parameterised spec: ``spec`` and ``source`` are format strings over ``params``."""

    key: str
    signature: str
    spec: str
    params: Callable[[random.Random], dict]
    reference: Callable[..., Callable]
    source: str
    inputs: Callable[[random.Random], tuple]


def _word(rng: random.Random, lo: int = 1, hi: int = 8) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))


def _sentence(rng: random.Random) -> str:
    return " ".join(_word(rng, 1, 6) for _ in range(rng.randint(1, 5)))


def _ints(rng: random.Random) -> list[int]:
    return [rng.randint(-20, 20) for _ in range(rng.randint(0, 7))]


def _caesar(text: str, k: int) -> str:
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) if "a" <= c <= "z" else c for c in text)


FAMILIES = [
    Family("affine", "f(x: int) -> int", "Return {a} * x + {b}.",
           lambda r: {"a": r.randint(-9, 9), "b": r.randint(-20, 20)},
           lambda a, b: lambda x: a * x + b, "def f(x):\n    return {a} * x + {b}\n",
           lambda r: (r.randint(-100, 100),)),
    Family("square", "f(x: int) -> int", "Return x * x + {c}.",
           lambda r: {"c": r.randint(-20, 20)},
           lambda c: lambda x: x * x + c, "def f(x):\n    return x * x + {c}\n",
           lambda r: (r.randint(-50, 50),)),
    Family("clip", "f(x: int) -> int", "Return x clipped to the range [{lo}, {hi}].",
           lambda r: (lambda lo: {"lo": lo, "hi": lo + r.randint(1, 30)})(r.randint(-20, 20)),
           lambda lo, hi: lambda x: min(max(x, lo), hi), "def f(x):\n    return min(max(x, {lo}), {hi})\n",
           lambda r: (r.randint(-60, 60),)),
    Family("multiples", "f(n: int) -> int", "Return the sum of the non-negative integers below n that are divisible by {k}.",
           lambda r: {"k": r.randint(2, 9)},
           lambda k: lambda n: sum(i for i in range(max(n, 0)) if i % k == 0),
           "def f(n):\n    return sum(i for i in range(max(n, 0)) if i % {k} == 0)\n",
           lambda r: (r.randint(0, 100),)),
    Family("digits", "f(x: int) -> int", "Return the sum of the decimal digits of abs(x), times {m}.",
           lambda r: {"m": r.randint(1, 5)},
           lambda m: lambda x: m * sum(int(d) for d in str(abs(x))),
           "def f(x):\n    return {m} * sum(int(d) for d in str(abs(x)))\n",
           lambda r: (r.randint(-10**6, 10**6),)),
    Family("count", "f(s: str) -> int", "Return how many times the letter '{c}' occurs in s.",
           lambda r: {"c": r.choice("aeiourst")},
           lambda c: lambda s: s.count(c), "def f(s):\n    return s.count('{c}')\n",
           lambda r: ("".join(r.choice("aeiourstxyz") for _ in range(r.randint(0, 12))),)),
    Family("repeat", "f(s: str) -> str", "Return s with every character repeated {k} times.",
           lambda r: {"k": r.randint(2, 4)},
           lambda k: lambda s: "".join(c * k for c in s), "def f(s):\n    return ''.join(c * {k} for c in s)\n",
           lambda r: (_word(r, 0, 6),)),
    Family("caesar", "f(s: str) -> str", "Return s with every lowercase letter shifted {k} places forward in the alphabet (z wraps to a); other characters stay.",
           lambda r: {"k": r.randint(1, 25)},
           lambda k: lambda s: _caesar(s, k),
           "def f(s):\n    return ''.join(chr((ord(c) - 97 + {k}) % 26 + 97) if 'a' <= c <= 'z' else c for c in s)\n",
           lambda r: (_sentence(r),)),
    Family("words", "f(s: str) -> str", "Return the words of s (split on spaces) in reverse order, joined by '{sep}'.",
           lambda r: {"sep": r.choice(["-", "+", "/", "_"])},
           lambda sep: lambda s: sep.join(reversed(s.split())), "def f(s):\n    return '{sep}'.join(reversed(s.split()))\n",
           lambda r: (_sentence(r),)),
    Family("above", "f(xs: list[int]) -> list[int]", "Return the elements of xs that are greater than {t}, in their original order.",
           lambda r: {"t": r.randint(-10, 10)},
           lambda t: lambda xs: [x for x in xs if x > t], "def f(xs):\n    return [x for x in xs if x > {t}]\n",
           lambda r: (_ints(r),)),
    Family("scale", "f(xs: list[int]) -> int", "Return the sum of xs multiplied by {m}, plus the length of xs.",
           lambda r: {"m": r.randint(2, 7)},
           lambda m: lambda xs: m * sum(xs) + len(xs), "def f(xs):\n    return {m} * sum(xs) + len(xs)\n",
           lambda r: (_ints(r),)),
]
_BY_KEY = {f.key: f for f in FAMILIES}


def _spec_pattern(family: Family) -> re.Pattern:
    pattern = re.escape(family.spec)
    for name, sample in family.params(random.Random(0)).items():
        group = r"-?\d+" if type(sample) is int else "."  # parameters are ints or single characters
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{group})")
    return re.compile(pattern)


_PATTERNS = [(f, _spec_pattern(f)) for f in FAMILIES]


def _call(args: tuple) -> str:
    return "f(" + ", ".join(repr(a) for a in args) + ")"


def strip_fences(answer: str) -> str:
    """The code inside an optional Markdown fence (```python ... ```)."""
    match = _FENCE_RE.match(answer)
    return match.group(1) if match else answer


def parse_spec(question: str) -> tuple[Family, dict]:
    """The family and parameters of a code-task question, read from its spec line."""
    lines = question.split("\n")
    spec_line = lines[1] if len(lines) > 1 else question
    for family, pattern in _PATTERNS:
        match = pattern.fullmatch(spec_line)
        if match:
            return family, {k: (int(v) if re.fullmatch(r"-?\d+", v) else v) for k, v in match.groupdict().items()}
    raise ValueError(f"not a code-task question: {spec_line!r}")


class CodeTask(ProceduralTask):
    name = "code"

    def __init__(self, families: tuple[str, ...] | None = None):
        self.families = [_BY_KEY[k] for k in families] if families else FAMILIES

    def generate(self, rng: random.Random) -> Example:
        family = rng.choice(self.families)
        params = family.params(rng)
        ref = family.reference(**params)
        examples = []
        while len(examples) < 2:
            args = family.inputs(rng)
            if all(a != args for a, _ in examples):
                examples.append((args, ref(*args)))
        shown = "\n".join(f"{_call(args)} == {out!r}" for args, out in examples)
        question = (
            f"Write a Python function {family.signature}.\n{family.spec.format(**params)}\n"
            f"Examples:\n{shown}\nAnswer with the code of the function only."
        )
        return Example(question=question, answer=family.source.format(**params))

    def key(self, example: Example) -> str:
        family, params = parse_spec(example.question)
        return f"code {family.key}(" + ", ".join(f"{k}={v!r}" for k, v in sorted(params.items())) + ")"

    def tests(self, example: Example) -> CallTests:
        """The hidden tests of a question, rebuilt from its text alone."""
        family, params = parse_spec(example.question)
        ref = family.reference(**params)
        rng = random.Random(stable_hash(example.question))
        inputs = tuple(family.inputs(rng) for _ in range(N_HIDDEN))
        return CallTests("f", inputs=inputs, expected=tuple(ref(*args) for args in inputs))

    def verdicts(self, answers: list[str], examples: list[Example]) -> list[Verdict]:
        batch = [(strip_fences(a), self.tests(ex)) for a, ex in zip(answers, examples)]
        return run_tests_many(batch, LIMITS)

    def check(self, answer: str, example: Example) -> float:
        return self.check_many([answer], [example])[0]

    def check_many(self, answers: list[str], examples: list[Example]) -> list[float]:
        """Pass/fail of each answer, judged as one batch over the sandbox pool."""
        return [1.0 if v.ok else 0.0 for v in self.verdicts(answers, examples)]

