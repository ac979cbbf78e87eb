"""The Task interface: seeded sampling, disjoint train/test splits, verifiable scoring.

A task is anything that can (1) draw a question with its reference answer from a seeded RNG,
(2) keep a held-out split that training never sees, and (3) check an extracted answer. Scoring in
the R1 template (format + correctness, see ``rewards.py``) is shared by every task.
"""

from __future__ import annotations

import random
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
        """Correctness in [0, 1] of an extracted answer string."""

    def examples(self, split: Split, n: int, seed: int) -> list[Example]:
        """``n`` distinct examples of ``split``, deterministic in ``seed`` (for evaluation).

        Raises ValueError if the split holds fewer than ``n`` distinct questions."""
        rng = random.Random(seed)
        seen: dict[str, Example] = {}
        for _ in range(50 * n + 1000):
            if len(seen) == n:
                break
            ex = self.sample(rng, split)
            seen.setdefault(ex.question, ex)
        if len(seen) < n:
            raise ValueError(f"task {self.name!r}: its {split} split has fewer than {n} distinct questions")
        return list(seen.values())

    def score(self, completion: str, example: Example, weights: rewards.RewardWeights) -> rewards.Score:
        """Reward of a completion in the R1 template (format + correctness)."""
        return rewards.score(completion, lambda answer: self.check(answer, example), weights)

    def step_checks(self, example: Example, steps: list[str]) -> list[bool | None] | None:
        """Exact verdict on each reasoning step (a line of the ``<think>`` text): True right, False
        wrong, None for a line the check cannot read. None as a whole: the task has no exact step
        check (the default). Procedural tasks whose solutions are chains of ``a+b=c`` lines have one;
        ``r1lab label`` shows it on demand and ``--agreement`` compares labels with it."""
        return None


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (``hash()`` is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


class ProceduralTask(Task):
    """A task that generates problems from a seed. The test split is a fixed hash bucket of the
    question text (``test_fraction`` of all questions), so the splits are disjoint by construction
    and stay so whatever the seeds."""

    test_fraction: float = 0.1

    @abstractmethod
    def generate(self, rng: random.Random) -> Example:
        """One random example, of either split."""

    def split_of(self, example: Example) -> Split:
        bucket = stable_hash(example.question) % 10_000
        return "test" if bucket < self.test_fraction * 10_000 else "train"

    def sample(self, rng: random.Random, split: Split) -> Example:
        while True:
            ex = self.generate(rng)
            if self.split_of(ex) == split:
                return ex
