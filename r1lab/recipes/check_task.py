"""``r1lab check-task TASK``: a leak check anyone can run, so that "held-out" can be verified.

It draws the task's test problems (``check.test_samples`` draws plus the evaluation's own
``eval.n_problems`` problems) and, as what a run trains on:

- **train split**: ``check.train_samples`` draws of the train split;
- **pretraining corpus**: the very documents that ``r1lab pretrain`` / ``zero`` would pack with
  this config (``pretrain.steps`` x ``pretrain.batch_size`` rows, or ``check.corpus_steps`` steps),
  produced by ``recipes.pretrain.batch`` itself with the run's data seed, through a recorder that
  keeps every example the corpus code asks the task for;
- **RL prompts**: the ``rl.steps`` x ``rl.prompts_per_step`` prompts of ``recipes/rl.py``, drawn in
  its order from its data seed;

and counts the test problems that have a twin in each, under two keys: the task's canonical
``key`` (what the task says "the same problem" means, and what its split hashes) and the
task-independent ``near_duplicate_key`` (exact answer + the question's words, lower-cased and
sorted). One table, a few example twins, and exit code 1 if any test problem has a twin anywhere
(0 otherwise). A task without a train split (``humaneval``) reports the refusal and passes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

from r1lab import tracking
from r1lab.config import Config
from r1lab.recipes import pretrain
from r1lab.recipes.common import RunStopped
from r1lab.tasks import Example, Split, Task, get_task
from r1lab.tasks.base import near_duplicate_key
from r1lab.tokenizer import CharTokenizer

LEAK_EXIT = 1
"exit code when a test problem has a twin in training"


class LeakFound(RunStopped):
    """Test problems have twins in training: the CLI prints the one-line message, exit code 1."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=LEAK_EXIT)


class Recorder(Task):
    """A task that hands out another task's examples and keeps a copy of each, so that the check
    sees exactly what the corpus code drew, without re-implementing it."""

    def __init__(self, task: Task):
        self.task, self.name, self.seen = task, task.name, []

    def sample(self, rng: random.Random, split: Split) -> Example:
        ex = self.task.sample(rng, split)
        self.seen.append(ex)
        return ex

    def check(self, answer: str, example: Example) -> float:
        return self.task.check(answer, example)


@dataclass
class Overlap:
    """How many distinct test problems have a twin in one source, under each key."""

    source: str
    drawn: int  # examples drawn from the source
    distinct: int  # distinct canonical keys among them
    twins: int  # test problems whose canonical key occurs in the source
    near_twins: int  # test problems whose near-duplicate key occurs in the source
    examples: list[str]  # a few "test question ~ source question" pairs
    refused: str = ""  # why the source has nothing (a task without a train split)


def compare(source: str, drawn: list[Example], test: list[Example], key: Callable[[Example], str]) -> Overlap:
    """The overlap of the distinct ``test`` problems with ``drawn`` under ``key`` and the
    near-duplicate key."""
    by_key = {key(ex): ex for ex in drawn}
    near = {near_duplicate_key(ex): ex for ex in drawn}
    twins, near_twins, pairs = 0, 0, []
    for ex in test:
        twin = by_key.get(key(ex))
        near_twin = near.get(near_duplicate_key(ex))
        twins += twin is not None
        near_twins += near_twin is not None
        if (twin or near_twin) is not None and len(pairs) < 3:
            pairs.append(f"test {ex.question!r} (answer {ex.answer!r}) ~ {source} {(twin or near_twin).question!r} (answer {(twin or near_twin).answer!r})")
    return Overlap(source, len(drawn), len(by_key), twins, near_twins, pairs)


def test_problems(task: Task, cfg: Config) -> list[Example]:
    """The evaluation's own test problems, then ``check.test_samples`` draws; one per question."""
    found: dict[str, Example] = {}
    try:
        for ex in task.examples("test", cfg.eval.n_problems, cfg.eval.seed):
            found.setdefault(ex.question, ex)
    except ValueError:  # a test split smaller than eval.n_problems: the draws below cover it
        pass
    rng = random.Random(cfg.eval.seed + 1)
    for _ in range(cfg.check.test_samples):
        ex = task.sample(rng, "test")
        found.setdefault(ex.question, ex)
    return list(found.values())


def train_draws(task: Task, cfg: Config) -> list[Example]:
    rng = random.Random(cfg.seed + 1)
    return [task.sample(rng, "train") for _ in range(cfg.check.train_samples)]


def corpus_examples(task: Task, cfg: Config) -> list[Example]:
    """The examples of the pretraining corpus of this config, in order, from the corpus code."""
    recorder, tok = Recorder(task), CharTokenizer.build()
    data_rng = random.Random(cfg.seed)  # as recipes/pretrain.py's data_rng
    for _ in range(cfg.check.corpus_steps or cfg.pretrain.steps):
        pretrain.batch(tok, recorder, data_rng, cfg.pretrain.batch_size, cfg.pretrain.worked_fraction, cfg.model.max_seq_len)
    return recorder.seen


def rl_prompts(task: Task, cfg: Config) -> list[Example]:
    """The prompts of ``r1lab rl`` with this config, in recipes/rl.py's order and seed."""
    data_rng = random.Random(cfg.seed)
    return [task.sample(data_rng, "train") for _ in range(cfg.rl.steps * cfg.rl.prompts_per_step)]


def run(cfg: Config) -> tuple[list[Example], list[Overlap]]:
    """The test problems and their overlap with each training source."""
    task = get_task(cfg.task, seed=cfg.seed)
    test = test_problems(task, cfg)
    results = []
    for name, draw in (("train split", train_draws), ("pretraining corpus", corpus_examples), ("RL prompts", rl_prompts)):
        try:
            drawn = draw(task, cfg)
        except ValueError as err:  # a task without a train split refuses to hand one out
            results.append(Overlap(name, 0, 0, 0, 0, [], refused=str(err).splitlines()[0]))
            continue
        results.append(compare(name, drawn, test, task.key))
    return test, results


def main(cfg: Config) -> list[Overlap]:
    t0 = time.time()
    task = get_task(cfg.task, seed=cfg.seed)
    test, results = run(cfg)
    keys = {task.key(ex) for ex in test}
    print(f"check-task {task.name}: {len(test)} distinct test problems ({len(keys)} distinct canonical keys), seed {cfg.seed}")
    rows = []
    for r in results:
        if r.refused:
            rows.append({"source": r.source, "drawn": 0, "distinct keys": 0, "test twins (key)": "refused", "test twins (near-dup)": "refused"})
            continue
        rows.append({"source": r.source, "drawn": r.drawn, "distinct keys": r.distinct,
                     "test twins (key)": r.twins, "key %": 100 * r.twins / len(test),
                     "test twins (near-dup)": r.near_twins, "near-dup %": 100 * r.near_twins / len(test)})
    print(tracking.format_table(rows, title="test problems with a twin in training: canonical key / near-duplicate key (exact answer + sorted lower-cased words)"))
    refused = [r for r in results if r.refused]
    if refused:
        print(f"  {', '.join(r.source for r in refused)}: none: {refused[0].refused}")
    for r in results:
        for pair in r.examples:
            print(f"  twin: {pair}")
    leaks = [r for r in results if r.twins or r.near_twins]
    print(f"check-task: {time.time() - t0:.0f} s")
    if leaks:
        what = ", ".join(f"{r.source} {max(r.twins, r.near_twins)}" for r in leaks)
        raise LeakFound(f"check-task {task.name}: LEAK: test problems with a twin in training ({what}) out of {len(test)}")
    print(f"check-task {task.name}: no test problem has a twin in the train split, the pretraining corpus or the RL prompts")
    return results
