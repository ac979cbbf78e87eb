"""The Task interface: seeded sampling, disjoint train/test splits, verifiable scoring.

A task is anything that can (1) draw a question with its reference answer from a seeded RNG,
(2) keep a held-out split that training never sees, and (3) check an extracted answer. Scoring in
the R1 template (format + correctness, see ``rewards.py``) is shared by every task.

Held out means held out: every task defines what "the same problem" means with a canonical
``key`` (commutative operands sorted, number multisets, function family + parameters; each task's
docstring says which) and a procedural task's split is a hash bucket of that key, so no test
problem has a twin in the train split, in the pretraining corpus or among RL prompts.
``near_duplicate_key`` (exact answer + the question's words, lower-cased and sorted) is a second,
task-independent key; ``r1lab check-task TASK`` measures the overlap under both.
"""

from __future__ import annotations

import random
import re
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from r1lab import rewards

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Example:
    """One problem. ``solution`` is a worked, step-by-step solution whose last line leads to
    ``answer``; procedural tasks provide it so that a pretraining corpus can mix solution styles,
    other tasks leave it empty."""

    question: str
    answer: str
    solution: str = ""


class Task(ABC):
    """A source of verifiable problems. Subclasses set ``name`` and implement ``sample``/``check``."""

    name: str = "task"

    @abstractmethod
    def sample(self, rng: random.Random, split: Split) -> Example:
        """Draw one example of ``split``; the same RNG state gives the same example."""

    @abstractmethod
    def check(self, answer: str, example: Example) -> float:
        """Exact correctness of an extracted answer string: 1.0 or 0.0, nothing in between (a
        reference that cannot be parsed gives 0.0)."""

    graded: bool = False
    "whether ``partial`` gives graded credit; if not, the partial reward component equals ``correct``"

    def partial(self, answer: str, example: Example) -> float:
        """Graded credit in [0, 1] (a separate reward component, off by default, never counted as
        correct); only called when ``graded`` is set."""
        return self.check(answer, example)

    def pool(self, split: Split) -> list[Example] | None:
        """Every distinct example of ``split`` when the split is a finite pool (reasoning-gym,
        JSONL files); None for a generator that can always draw more (the default)."""
        return None

    def key(self, example: Example) -> str:
        """The canonical problem key: two examples with equal keys are the same problem. The
        default is the question with its white space normalised; tasks with twins (reordered
        operands, permuted numbers) override it."""
        return " ".join(example.question.split())

    def difficulty(self, example: Example) -> str | None:
        """A label of the example's difficulty (``r1lab rejection-sample`` reports acceptance per
        label), or None when the task has none (the default)."""
        return None

    def examples(self, split: Split, n: int, seed: int) -> list[Example]:
        """``n`` distinct examples of ``split``, deterministic in ``seed`` (for evaluation).

        Raises ValueError if the split holds fewer than ``n`` distinct questions: at once for a
        finite pool, else once ``max(2000, 10 x found)`` draws in a row brought no new question (a
        generator with a small space is exhausted: humaneval's 164, chain's few thousand test
        questions) or after ``50 n + 1000`` draws in all. Asked for 10^7, a generator used to draw
        for hours before the same error."""
        pool = self.pool(split)
        if pool is not None and len({ex.question for ex in pool}) < n:
            raise ValueError(f"task {self.name!r}: its {split} split has {len({ex.question for ex in pool}):,} distinct questions, fewer than {n:,}")
        rng = random.Random(seed)
        seen: dict[str, Example] = {}
        since_new = 0
        for _ in range(50 * n + 1000):
            if len(seen) == n or since_new > max(2000, 10 * len(seen)):
                break
            ex = self.sample(rng, split)
            since_new = since_new + 1 if ex.question in seen else 0
            seen.setdefault(ex.question, ex)
        if len(seen) < n:
            raise ValueError(f"task {self.name!r}: its {split} split has fewer than {n:,} distinct questions ({len(seen):,} found)")
        return list(seen.values())

    def score(self, completion: str, example: Example, weights: rewards.RewardWeights) -> rewards.Score:
        """Reward of a completion in the R1 template (format + correctness)."""
        partial = (lambda answer: self.partial(answer, example)) if self.graded else None
        return rewards.score(completion, lambda answer: self.check(answer, example), weights, partial=partial)

    def step_checks(self, example: Example, steps: list[str]) -> list[bool | None] | None:
        """Exact verdict on each reasoning step (a line of the ``<think>`` text): True right, False
        wrong, None for a line the check cannot read. None as a whole: the task has no exact step
        check (the default). Procedural tasks whose solutions are chains of ``a+b=c`` lines have one;
        ``r1lab label`` shows it on demand and ``--agreement`` compares labels with it."""
        return None


STEP_RE = re.compile(r"\A\s*(\d+)\s*([-+*/])\s*(\d+)\s*=\s*(-?\d+)\s*\Z")
"one worked step, ``a op b = c`` with non-negative operands"


def parse_step(line: str) -> tuple[int, str, int, int] | None:
    """``(a, op, b, c)`` of a step line ``a op b = c``; None for any other line."""
    m = STEP_RE.match(line)
    return None if m is None else (int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)))


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (``hash()`` is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def near_duplicate_key(example: Example) -> str:
    """A task-independent near-duplicate key: the exact (stripped) answer and the question's
    white-space separated words, lower-cased and sorted. It catches reordered words, changed case
    and spacing (``Use 3 7 2 to make 23`` and ``Use 7 2 3 to make 23`` with the same answer)."""
    return example.answer.strip() + "\x00" + " ".join(sorted(example.question.lower().split()))


class ProceduralTask(Task):
    """A task that generates problems from a seed. The test split is a fixed hash bucket of the
    canonical ``key`` (``test_fraction`` of all keys), so the splits are disjoint by construction,
    twins included, and stay so whatever the seeds."""

    test_fraction: float = 0.1

    @abstractmethod
    def generate(self, rng: random.Random) -> Example:
        """One random example, of either split."""

    def split_of(self, example: Example) -> Split:
        bucket = stable_hash(self.key(example)) % 10_000
        return "test" if bucket < self.test_fraction * 10_000 else "train"

    def sample(self, rng: random.Random, split: Split) -> Example:
        while True:
            ex = self.generate(rng)
            if self.split_of(ex) == split:
                return ex
