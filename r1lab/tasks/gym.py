"""Any reasoning-gym dataset as a task: ``gym:basic_arithmetic``, ``gym:spell_backward``, ...

reasoning-gym (Stojanovski et al. 2025, arXiv:2505.24760) ships ~100 procedural generators with
verifiers, built for RL with verifiable rewards. Each entry is a dict with ``question``,
``answer`` and ``metadata``; the dataset's own ``score_answer(answer, entry)`` is the verifier,
and it needs the whole entry (some datasets have no single oracle answer and check the answer
against the metadata instead). ``Example`` holds only text, so the task keeps the entries in a
private dict keyed by question, and ``check`` looks the entry up from ``example.question``.

Splits: reasoning-gym seeds item ``i`` of a dataset with ``seed + i``, so two datasets built with
seeds 0 and 1 share all but one item. The test split is therefore drawn from a fixed seed far from
any training seed (``TEST_SEED``) and is the same whatever ``seed`` is, so that runs with
different training seeds are evaluated on the same problems; the training pool is generated from
``seed`` and any question of the test split is removed from it, so the splits are disjoint even
where the generator repeats questions.

Departures: a pool of ``size`` training and ``test_size`` test entries is generated up front
(reasoning-gym datasets are finite too); datasets without a single oracle answer get ``""`` as
``Example.answer``; a verifier that raises on a malformed answer scores 0 instead of crashing.
"""

from __future__ import annotations

import difflib
import random
from typing import Any

from r1lab.tasks.base import Example, Split, Task

# Far from any seed a user would pass, and small enough for generators that seed numpy (< 2**32).
TEST_SEED = 2**31

_LIST_HINT = 'see the names with: python -c "import reasoning_gym.factory as f; print(sorted(f.DATASETS))"'


class GymTask(Task):
    """``gym:<dataset>``: ``size`` training entries from ``seed``, ``test_size`` test entries from
    ``TEST_SEED``, scored by the dataset's own verifier (which may give partial credit)."""

    def __init__(self, dataset: str, size: int = 2000, seed: int = 0, test_size: int = 500):
        # Imported here: reasoning_gym takes about a second to import and most runs never use it.
        import reasoning_gym
        from reasoning_gym.factory import DATASETS

        if dataset not in DATASETS:
            close = difflib.get_close_matches(dataset, DATASETS, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown reasoning-gym dataset {dataset!r}{hint}; {_LIST_HINT}")
        if size < 1 or test_size < 1:
            raise ValueError(f"size and test_size must be positive, got {size}, {test_size}")
        if seed <= TEST_SEED < seed + size or TEST_SEED <= seed < TEST_SEED + test_size:
            raise ValueError(f"seed {seed} overlaps the test seeds [{TEST_SEED}, {TEST_SEED + test_size})")
        self.name = f"gym:{dataset}"
        self.dataset_name = dataset
        self._train_ds = reasoning_gym.create_dataset(dataset, size=size, seed=seed)
        test_ds = reasoning_gym.create_dataset(dataset, size=test_size, seed=TEST_SEED)
        # question -> entry, for both splits (disjoint keys); first entry wins on a repeated question.
        self._entries: dict[str, dict[str, Any]] = {}
        self._pools: dict[Split, list[str]] = {"train": [], "test": []}
        for split, ds in (("test", test_ds), ("train", self._train_ds)):
            for i in range(len(ds)):
                entry = ds[i]
                if entry["question"] not in self._entries:
                    self._entries[entry["question"]] = entry
                    self._pools[split].append(entry["question"])
        if not self._pools["train"]:
            raise ValueError(f"{self.name}: every training question is also a test question")

    def _example(self, question: str) -> Example:
        answer = self._entries[question]["answer"]
        return Example(question=question, answer="" if answer is None else str(answer))

    def sample(self, rng: random.Random, split: Split) -> Example:
        return self._example(rng.choice(self._pools[split]))

    def pool(self, split: Split) -> list[Example]:
        """Every distinct example of ``split``, in generation order."""
        return [self._example(q) for q in self._pools[split]]

    def check(self, answer: str, example: Example) -> float:
        entry = self._entries.get(example.question)
        if entry is None:
            question = example.question[:80]
            raise ValueError(f"{self.name}: this question is not in the task's pool: {question!r}")
        try:
            value = float(self._train_ds.score_answer(answer, entry))
        except Exception:  # a verifier that chokes on a malformed answer: the answer is wrong
            return 0.0
        return min(max(value, 0.0), 1.0)
