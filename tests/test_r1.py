"""``r1lab r1``: the cold-start set is verified, distinct, train-split worked solutions; the
pipeline runs every stage, evaluates after each, and resumes bit-identically after kill -9."""

from __future__ import annotations

import json
import random

import pytest

from r1lab.recipes import common
from r1lab.recipes.r1 import cold_start_records
from r1lab.tasks import get_task
from r1lab.tasks.base import Example, Task
from r1lab.tokenizer import CharTokenizer


def test_cold_start_records_are_verified_distinct_train_solutions():
    task, tok = get_task("chain"), CharTokenizer.build()
    records = cold_start_records(task, tok, 50, seed=3)
    assert len(records) == 50
    examples = [Example(r["question"], r["answer"], r["solution"]) for r in records]
    assert len({task.key(ex) for ex in examples}) == 50  # distinct problems, not just distinct texts
    assert all(task.split_of(ex) == "train" for ex in examples)  # never a held-out problem
    for ex in examples:
        assert ex.solution.splitlines()[-1].endswith(f"={ex.answer}")  # the worked steps lead to the answer
        assert task.score(tok.completion_text(ex.solution, ex.answer), ex, common_weights()).correct == 1.0
    assert cold_start_records(task, tok, 50, seed=3) == records  # seeded


def common_weights():
    from r1lab.rewards import RewardWeights

    return RewardWeights()


class _Broken(Task):
    """A task whose worked solutions lead to a wrong answer, or that has none."""

    name = "broken"

    def __init__(self, solution: str):
        self.solution = solution

    def sample(self, rng: random.Random, split):
        a = rng.randint(0, 10_000)
        return Example(f"{a}+1", str(a + 1), self.solution)

    def check(self, answer: str, example: Example) -> float:
        return 1.0 if answer == example.answer else 0.0


def test_cold_start_without_usable_solutions_is_a_one_line_error():
    tok = CharTokenizer.build()
    with pytest.raises(common.StageError, match="no verified worked solutions"):
        cold_start_records(_Broken(""), tok, 5, seed=0)
    # a solution that renders into a malformed completion (a tag inside <think>) is never kept
    with pytest.raises(common.StageError, match="r1.cold_start_data"):
        cold_start_records(_Broken("<answer>"), tok, 5, seed=0)
