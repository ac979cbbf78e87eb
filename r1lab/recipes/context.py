"""The model's context, sized from the task and checked before any work.

A fresh model's ``model.max_seq_len`` must hold the task's longest prompt plus the completion
budget (``rl.sample.max_new_tokens``, ``eval.sample.max_new_tokens``), and every pretraining
document whole. reasoning-gym prompts run from ~40 to several hundred characters (median question
114 chars for letter_counting, 203 for word_ladder), so the tiny recipe's 128 tokens is too short
for most of them; before this module a run found out after ten minutes of pretraining.

``size`` measures the task: the longest prompt over both splits (the whole pool of a finite task,
``SAMPLE`` seeded draws per split of a generator) plus the budget, and the longest corpus document;
the context is the larger of the default (128) and that figure rounded up to a multiple of
``ROUND``. So every task that fitted before keeps its 128 and its numbers (``r1lab zero`` on chain
needs 25 + 64 tokens). The CLI applies it to stages that build a fresh model, unless the user set
``model.max_seq_len`` (a flag or a YAML key).

``check`` is the early validation every stage runs before training or sampling: one line naming
the numbers and the key to change (``StageError``, exit 2).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from r1lab.config import Config, ModelConfig
from r1lab.recipes.common import StageError
from r1lab.tasks import Example, Task
from r1lab.tokenizer import BaseTokenizer

SAMPLE = 256
"draws per split measured on a task that generates problems (finite pools are measured whole)"
ROUND = 64
"a sized context is rounded up to a multiple of this many tokens"
DEFAULT = ModelConfig().max_seq_len
"the context of the tiny recipe; sizing never goes below it, so tasks that fit keep their numbers"


@dataclass(frozen=True)
class Measure:
    """Token counts of a task under a tokenizer: the longest prompt (R1 template, bos included)
    and the longest pretraining document (prompt + worked completion + eos)."""

    prompt: int
    document: int
    examples: int


def _examples(task: Task, seed: int = 0) -> list[Example]:
    out: list[Example] = []
    for split in ("train", "test"):
        try:
            pool = task.pool(split)
            if pool is None:
                rng = random.Random(seed)  # private: the run's RNGs are untouched
                pool = [task.sample(rng, split) for _ in range(SAMPLE)]
        except ValueError:  # a task without this split (humaneval has no train split): the stage says so itself
            continue
        out += pool
    return out


def measure(task: Task, tok: BaseTokenizer) -> Measure:
    """The longest prompt and document over a sample of both splits of ``task``."""
    examples = _examples(task)
    prompt = document = 0
    for ex in examples:
        p = len(tok.prompt_ids(ex.question))
        prompt = max(prompt, p)
        if ex.solution:  # a direct document is always shorter than the prompt plus any budget
            document = max(document, p + len(tok.encode(tok.completion_text(ex.solution, ex.answer))) + 1)
    return Measure(prompt, document, len(examples))


def budget(cfg: Config) -> tuple[int, str]:
    """The largest completion budget the run will sample with, and its key."""
    return max((cfg.rl.sample.max_new_tokens, "rl.sample.max_new_tokens"), (cfg.eval.sample.max_new_tokens, "eval.sample.max_new_tokens"))


def size(cfg: Config, task: Task, tok: BaseTokenizer) -> tuple[int, Measure]:
    """The context a fresh model needs for ``task``: max(DEFAULT, longest prompt + budget,
    longest document), rounded up to a multiple of ``ROUND``."""
    m = measure(task, tok)
    need = max(m.prompt + budget(cfg)[0], m.document)
    return max(DEFAULT, ROUND * math.ceil(need / ROUND)), m


def check(max_seq_len: int, task: Task, tok: BaseTokenizer, new_tokens: int, budget_key: str, where: str, fix: str) -> Measure:
    """Raise ``StageError`` (one line: the numbers and what to change) when the longest prompt of
    ``task`` plus ``new_tokens`` does not fit ``max_seq_len``."""
    m = measure(task, tok)
    if m.prompt + new_tokens > max_seq_len:
        raise StageError(f"{where}: the longest prompt of {task.name} ({m.prompt} tokens, over {m.examples} problems of both splits) "
                         f"plus the completion budget {budget_key}={new_tokens} needs {m.prompt + new_tokens} tokens, "
                         f"but model.max_seq_len is {max_seq_len}; {fix}")
    return m


def check_fresh(cfg: Config, task: Task, tok: BaseTokenizer, where: str) -> Measure:
    """``check`` for a stage that builds a fresh model from ``cfg.model``."""
    new_tokens, key = budget(cfg)
    need, _ = size(cfg, task, tok)
    return check(cfg.model.max_seq_len, task, tok, new_tokens, key, where,
                 f"set --model.max_seq_len {need} (or leave it unset: the CLI sizes it from the task) or lower {key}")


def check_loaded(max_seq_len: int, cfg: Config, task: Task, tok: BaseTokenizer, stage: str) -> Measure:
    """``check`` for a stage that samples from a loaded model (its own context): ``rl`` samples
    with ``rl.sample`` and evaluates with ``eval.sample`` when ``rl.eval_every`` is set; ``eval``
    with ``eval.sample``."""
    keys = [("eval.sample.max_new_tokens", cfg.eval.sample.max_new_tokens)]
    if stage == "rl":
        keys = [("rl.sample.max_new_tokens", cfg.rl.sample.max_new_tokens)] + (keys if cfg.rl.eval_every else [])
    key, new_tokens = max(keys, key=lambda kv: kv[1])
    return check(max_seq_len, task, tok, new_tokens, key, stage,
                 f"lower {key}, or start from a model with a longer context (pretrain with --model.max_seq_len unset sizes it from the task)")
