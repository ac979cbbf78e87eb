"""Verifiable outcome rewards in the DeepSeek-R1 template.

DeepSeek-R1 (arXiv:2501.12948, sec. 2.2.2) trains R1-Zero with two rule-based rewards only: an
*accuracy* reward (is the final answer right?) and a *format* reward (is the reasoning inside
``<think>..</think>`` and the answer inside ``<answer>..</answer>``?). No neural reward model, so
nothing to hack but the rules themselves. Here both are plain functions of the completion text;
a task supplies only its correctness check, and the two are combined with configurable weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

# The whole completion must be one think block followed by one answer block; white space around
# the blocks is tolerated, anything else (text after </answer>, a second block) is not.
_FORMAT_RE = re.compile(
    r"\A\s*<think>(?:(?!<think>|</think>|<answer>|</answer>).)*</think>\s*"
    r"<answer>(?:(?!<think>|</think>|<answer>|</answer>).)*</answer>\s*\Z",
    re.DOTALL,
)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class Score:
    """The reward of one completion and its parts (each part in [0, 1])."""

    reward: float
    format: float
    correct: float


@dataclass(frozen=True)
class RewardWeights:
    """How the parts combine: reward = format * format_part + correct * correct_part."""

    format: float = 0.1
    correct: float = 1.0


def format_reward(completion: str) -> float:
    """1.0 when the completion is exactly ``<think>...</think><answer>...</answer>``, else 0.0."""
    return 1.0 if _FORMAT_RE.match(completion) else 0.0


def extract_answer(completion: str) -> str | None:
    """The stripped text of the last ``<answer>..</answer>`` block, or None if there is none."""
    found = _ANSWER_RE.findall(completion)
    return found[-1].strip() if found else None


def score(completion: str, check: Callable[[str], float], weights: RewardWeights) -> Score:
    """Score a completion: ``check`` maps an extracted answer to correctness in [0, 1]."""
    fmt = format_reward(completion)
    answer = extract_answer(completion)
    correct = float(check(answer)) if answer is not None else 0.0
    return Score(reward=weights.format * fmt + weights.correct * correct, format=fmt, correct=correct)
