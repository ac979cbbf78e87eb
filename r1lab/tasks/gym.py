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
``seed`` (the run's ``--seed``) and any entry whose key is a test key is removed from it, so the
splits are disjoint even where the generator repeats questions.

The same problem (``key``): the same answer and the same question words in any order, case and
spacing (``near_duplicate_key``), since the datasets are too many to model one by one.

Correctness is exact: with an oracle answer, the answer must equal it after white space is
normalised; without one (answer None), the verifier must give exactly 1.0. ``score_answer`` alone
cannot decide it: it gives partial credit (``basic_arithmetic`` scores the gold with a trailing 0
at 0.92, ``spell_backward`` the gold plus a letter at 1.0000000000000002, a float sum), so a
``>= 1`` test would count wrong answers as right. The verifier's score is the graded ``partial``
component, off by default (``rl.partial_weight``). On datasets where several answers are valid but
an oracle answer is given, exact correctness is a lower bound.

Worked solutions: for the datasets of ``gym_solutions.SOLVERS`` (basic_arithmetic, chain_sum,
leg_counting, letter_counting, gcd, base_conversion) ``Example.solution`` is a step-by-step
solution written from the entry's metadata, for pretraining's worked style; other datasets have
none.

Curriculum: a dataset with reasoning-gym curriculum support has ``levels()`` > 0 difficulty levels
above the easiest (``set_global_level``: every attribute at that level or its highest);
``level_pool(level)`` is a training pool generated at that level from ``seed`` (deterministic, so
a resumed run draws the same problems), with every twin of a test problem removed. The test split
stays the dataset's default difficulty: a curriculum changes what is trained on, never what is
measured.

Options: ``gym:<dataset>@key=value,key=value`` overrides keys of the dataset's reasoning-gym config
for both splits (``gym:letter_counting@min_words=30,max_words=38``: a harder variant than the
default 5-15 words); values are read as int, float, true/false, else text. A key the config does
not have, or a value its ``validate`` rejects, is a one-line error. Curriculum levels stay the
library's (``set_global_level``), so a variant's target may lie above or below them.

Departures: a pool of ``size`` training and ``test_size`` test entries is generated up front
(reasoning-gym datasets are finite too); datasets without a single oracle answer get ``""`` as
``Example.answer``; a verifier that raises on a malformed answer scores 0 instead of crashing.
"""

from __future__ import annotations

import dataclasses
import difflib
import random
from typing import Any

from r1lab.tasks import gym_solutions
from r1lab.tasks.base import Example, Split, Task, near_duplicate_key

# Far from any seed a user would pass, and small enough for generators that seed numpy (< 2**32).
TEST_SEED = 2**31
LEVEL_POOL = 500
"training problems generated per curriculum level"
LEVEL_SEED_STRIDE = 1_000_003
"curriculum level L's pool is seeded with seed + stride * (L + 1): disjoint from the default pool's seeds"

OPTION_SEP = "@"
"gym:<dataset>@key=value,...: reasoning-gym config overrides"

_LIST_HINT = 'see the names with: python -c "import reasoning_gym.factory as f; print(sorted(f.DATASETS))"'


def _option_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"letter_counting@min_words=30,max_words=38"`` -> ``("letter_counting", {"min_words": 30, "max_words": 38})``."""
    dataset, sep, rest = spec.partition(OPTION_SEP)
    options: dict[str, Any] = {}
    if sep:
        for part in rest.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip() or not value.strip():
                raise ValueError(f"gym:{spec}: option {part!r} is not key=value (e.g. gym:letter_counting@min_words=30,max_words=38)")
            options[key.strip()] = _option_value(value.strip())
    return dataset, options


class GymTask(Task):
    """``gym:<dataset>``: ``size`` training entries from ``seed``, ``test_size`` test entries from
    ``TEST_SEED``; exact correctness, the dataset's own verifier as graded ``partial`` credit."""

    graded = True

    def __init__(self, dataset: str, size: int = 2000, seed: int = 0, test_size: int = 500, options: dict[str, Any] | None = None):
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
        options = dict(options or {})
        fields = {f.name for f in dataclasses.fields(DATASETS[dataset][1])} - {"size", "seed"}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ValueError(f"gym:{dataset}: unknown option {unknown[0]!r}; its reasoning-gym config has {', '.join(sorted(fields))}")
        self.options = options
        self.name = f"gym:{dataset}" + (OPTION_SEP + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")
        self.dataset_name = dataset
        self._seed, self._level_pools = seed, {}
        try:
            self._train_ds = reasoning_gym.create_dataset(dataset, size=size, seed=seed, **options)
            test_ds = reasoning_gym.create_dataset(dataset, size=test_size, seed=TEST_SEED, **options)
        except (AssertionError, TypeError, ValueError) as err:  # the config's own validate()
            raise ValueError(f"{self.name}: reasoning-gym rejects the options: {err}") from None
        # question -> entry, for both splits (disjoint keys); first entry wins on a repeated question.
        self._entries: dict[str, dict[str, Any]] = {}
        self._pools: dict[Split, list[str]] = {"train": [], "test": []}
        test_keys: set[str] = set()
        for split, ds in (("test", test_ds), ("train", self._train_ds)):
            for i in range(len(ds)):
                entry = ds[i]
                if entry["question"] in self._entries:
                    continue
                key = self.key(self._as_example(entry))
                if split == "train" and key in test_keys:
                    continue  # a twin of a test problem: held out of training
                if split == "test":
                    test_keys.add(key)
                self._entries[entry["question"]] = entry
                self._pools[split].append(entry["question"])
        if not self._pools["train"]:
            raise ValueError(f"{self.name}: every training question is also a test question")
        self._test_keys = test_keys
        self._default_questions = frozenset(self._entries)  # both default pools, before any curriculum level

    def _as_example(self, entry: dict[str, Any]) -> Example:
        answer = entry["answer"]
        return Example(question=entry["question"], answer="" if answer is None else str(answer),
                       solution=gym_solutions.solution(self.dataset_name, entry))

    def levels(self) -> int:
        """The highest curriculum level (0: the dataset has no curriculum)."""
        from reasoning_gym.factory import create_curriculum, has_curriculum

        if not has_curriculum(self.dataset_name):
            return 0
        return max(len(a.levels) for a in create_curriculum(self.dataset_name).attributes.values()) - 1

    def level_pool(self, level: int, size: int = LEVEL_POOL) -> list[Example]:
        """``size`` training examples generated at curriculum ``level`` (cached), test twins removed."""
        if level not in self._level_pools:
            import reasoning_gym
            from reasoning_gym.factory import create_curriculum

            curriculum = create_curriculum(self.dataset_name)
            curriculum.set_global_level(level)
            # A seed per level, far from the test seed: the pools of two levels are different draws.
            seed = (self._seed + LEVEL_SEED_STRIDE * (level + 1)) % TEST_SEED  # numpy seeds stay < 2**32
            config = curriculum.generate_configuration({"size": size, "seed": seed})
            ds = reasoning_gym.create_dataset(self.dataset_name, **dataclasses.asdict(config))  # validates it
            # A level's pool depends only on (level, seed, the default pools), never on which
            # levels were generated before it in this process: a resumed run that reaches level L
            # without passing through the levels above draws from the same pool.
            pool, seen = [], set()
            for i in range(len(ds)):
                try:
                    entry = ds[i]
                except Exception:  # noqa: BLE001 - a generator that fails on some seeds at hard levels (basic_arithmetic divides by 0)
                    continue
                ex = self._as_example(entry)
                if self.key(ex) in self._test_keys or ex.question in self._default_questions or ex.question in seen:
                    continue  # a twin of a test problem, a problem of the default pools, a repeat within the level
                seen.add(ex.question)
                self._entries.setdefault(entry["question"], entry)
                pool.append(ex)
            if not pool:
                raise ValueError(f"{self.name}: curriculum level {level} holds no problem outside the test split")
            self._level_pools[level] = pool
        return self._level_pools[level]

    def _example(self, question: str) -> Example:
        return self._as_example(self._entries[question])

    def key(self, example: Example) -> str:
        return near_duplicate_key(example)

    def sample(self, rng: random.Random, split: Split) -> Example:
        return self._example(rng.choice(self._pools[split]))

    def pool(self, split: Split) -> list[Example]:
        """Every distinct example of ``split``, in generation order."""
        return [self._example(q) for q in self._pools[split]]

    def _entry(self, example: Example) -> dict[str, Any]:
        entry = self._entries.get(example.question)
        if entry is None:
            question = example.question[:80]
            raise ValueError(f"{self.name}: this question is not in the task's pool: {question!r}")
        return entry

    def difficulty(self, example: Example) -> str | None:
        """The entry's own values of the dataset's difficulty parameters (``metadata["difficulty"]``
        names them, e.g. ``word_len=9``), or None when the dataset declares none."""
        meta = self._entry(example).get("metadata") or {}
        names = meta.get("difficulty") if isinstance(meta.get("difficulty"), dict) else {}
        label = ", ".join(f"{k}={meta[k]}" for k in names if isinstance(meta.get(k), (int, float, str)) and not isinstance(meta.get(k), bool))
        return label or None

    def _verifier(self, answer: str, entry: dict[str, Any]) -> float:
        try:
            return float(self._train_ds.score_answer(answer, entry))
        except Exception:  # a verifier that chokes on a malformed answer: the answer is wrong
            return 0.0

    def check(self, answer: str, example: Example) -> float:
        entry = self._entry(example)
        gold = entry["answer"]
        if gold is None:  # no oracle answer: the verifier decides, full credit only
            return 1.0 if self._verifier(answer, entry) == 1.0 else 0.0
        gold = " ".join(str(gold).split())
        return 1.0 if gold and " ".join(answer.split()) == gold else 0.0

    def partial(self, answer: str, example: Example) -> float:
        """The dataset verifier's graded credit, clamped to [0, 1]."""
        return min(max(self._verifier(answer, self._entry(example)), 0.0), 1.0)
