"""Verifiable outcome rewards in the DeepSeek-R1 template.

DeepSeek-R1 (arXiv:2501.12948, sec. 2.2.2) trains R1-Zero with two rule-based rewards only: an
*accuracy* reward (is the final answer, given in the specified format, right?) and a *format*
reward (is the reasoning inside ``<think>..</think>`` and the answer inside
``<answer>..</answer>``?). No neural reward model, so nothing to hack but the rules themselves.
Here both are plain functions of the completion text; a task supplies only its correctness check.

The semantics, chosen deliberately (each shape has a test in tests/test_rewards.py):

- **Well-formed** means the whole completion is exactly one ``<think>`` block followed by one
  ``<answer>`` block whose text is not empty after ``strip()``; white space around the blocks is
  allowed, nothing else: no text before, between or after the blocks, no second block, no tag
  inside a block, no unclosed tag. Tags are case-sensitive.
- **format** is 1 for a well-formed completion, else 0. An empty answer
  (``<think></think><answer></answer>``) is not well-formed: the format reward pays for an answer
  in the template, not for the tags alone.
- **The answer** is the stripped text of the answer block of a well-formed completion, and
  nothing otherwise (``extract_answer`` returns None): an answer hidden in ``<think>``, one of
  several ``<answer>`` blocks, an unclosed block or a bare ``<answer>21</answer>`` gives no
  answer. So *accuracy needs the format*: a malformed completion can never be correct, and
  majority votes (maj@k) only count answers the reward could have paid.
- **correct** is the task's exact check of that answer: 1 or 0, never in between (a check that
  returns anything else is a bug and raises). A reference that cannot be parsed is the task's to
  refuse: every built-in check returns 0 then, never 1 (open-r1's "unparseable gold is a pass").
  pass@k, maj@k and ``correct_rate`` count ``correct`` only.
- **partial** is a task's graded credit in [0, 1] (reasoning-gym's ``score_answer`` gives 0.92 for
  the gold with a trailing 0); other tasks set it equal to ``correct``. It is a separate reward
  component with weight 0 by default (``rl.partial_weight``) and is never called accuracy.

reward = format_weight * format + correct_weight * correct + partial_weight * partial.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

# One think block, then one answer block, white space around them; no tag inside either block.
_NO_TAG = r"(?:(?!<think>|</think>|<answer>|</answer>).)*"
_FORMAT_RE = re.compile(rf"\A\s*<think>({_NO_TAG})</think>\s*<answer>({_NO_TAG})</answer>\s*\Z", re.DOTALL)


@dataclass(frozen=True)
class Score:
    """The reward of one completion and its parts (each part in [0, 1]; ``correct`` is 0 or 1)."""

    reward: float
    format: float
    correct: float
    partial: float = 0.0
    "graded credit from the task (reasoning-gym's score_answer); equals ``correct`` elsewhere"


@dataclass(frozen=True)
class RewardWeights:
    """How the parts combine: reward = format * format_part + correct * correct_part + partial * partial_part."""

    format: float = 0.1
    correct: float = 1.0
    partial: float = 0.0


def parse(completion: str) -> tuple[str, str] | None:
    """(think text, stripped answer) of a well-formed completion, or None (see the module doc)."""
    match = _FORMAT_RE.match(completion)
    if match is None or not match.group(2).strip():
        return None
    return match.group(1), match.group(2).strip()


def format_reward(completion: str) -> float:
    """1.0 when the completion is exactly ``<think>...</think><answer>X</answer>`` with a
    non-empty X (white space around the blocks allowed), else 0.0."""
    return 0.0 if parse(completion) is None else 1.0


def extract_answer(completion: str) -> str | None:
    """The stripped answer of a well-formed completion; None for any other completion."""
    parsed = parse(completion)
    return None if parsed is None else parsed[1]


def score(
    completion: str,
    check: Callable[[str], float],
    weights: RewardWeights,
    partial: Callable[[str], float] | None = None,
) -> Score:
    """Score a completion. ``check`` maps an extracted answer to exact correctness (0.0 or 1.0);
    ``partial`` (optional) to graded credit in [0, 1], which defaults to the correctness. Neither is
    called when the completion is not well-formed."""
    answer = extract_answer(completion)
    if answer is None:
        return Score(reward=0.0, format=0.0, correct=0.0, partial=0.0)
    correct = check(answer)
    if correct not in (0.0, 1.0):
        raise ValueError(f"a task's check must return 0 or 1 (exact correctness), got {correct!r}; graded credit belongs in partial")
    correct = float(correct)
    part = correct if partial is None else min(max(float(partial(answer)), 0.0), 1.0)
    reward = weights.format * 1.0 + weights.correct * correct + weights.partial * part
    return Score(reward=reward, format=1.0, correct=correct, partial=part)
