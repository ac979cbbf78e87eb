"""Automatic step labels by rollouts (Math-Shepherd, Wang et al. 2023, arXiv:2312.08935, sec. 3.3).

The quality of a step is its potential to reach the right answer: from the completion cut just
after step i, a "completer" policy finishes the solution ``n`` times; the step's *soft* label is
the fraction of finishes whose final answer is correct, its *hard* label whether any is. No human
and no step checker is involved, so the labels can be wrong both ways: a wrong step the policy
recovers from looks good, a right step the policy cannot finish looks bad. On procedural tasks
``Task.step_checks`` knows the truth, and ``label_quality`` measures how far the automatic labels
are from it (precision and recall of each class).

Departures: the policy that finishes is the one that wrote the traces (Math-Shepherd uses a
separate completer, equally a checkpoint of the policy family); prefixes are cut at the step's
last character, so the policy itself writes the newline or ``</think>`` that follows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from r1lab import rollout
from r1lab.config import SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.prm.steps import step_spans
from r1lab.rewards import RewardWeights
from r1lab.tasks.base import Example, Task
from r1lab.tokenizer import BaseTokenizer

Rollouts = Callable[[list[str]], list[list[bool]]]
"completion prefixes -> for each prefix, whether each of its n finished rollouts answers correctly"


@dataclass(frozen=True)
class StepLabels:
    """Math-Shepherd's two estimates for each step of one completion."""

    soft: list[float]  # fraction of the n rollouts from the step that reach a correct answer
    hard: list[bool]  # whether any of them does


def estimate(outcomes: list[list[bool]]) -> StepLabels:
    """Soft and hard labels from the rollout outcomes of each step (one list of n per step)."""
    if any(not o for o in outcomes):
        raise ValueError("estimate: every step needs at least one rollout")
    return StepLabels([sum(o) / len(o) for o in outcomes], [any(o) for o in outcomes])


def step_prefixes(completion: str, marker: str | None = None) -> list[str]:
    """The completion cut just after each step (its last character), the policy's starting points."""
    return [completion[:end] for _, end in step_spans(completion, marker)]


def auto_labels(completion: str, rollouts: Rollouts, marker: str | None = None) -> StepLabels:
    """Math-Shepherd labels of every step of ``completion``, finishing each prefix with ``rollouts``."""
    prefixes = step_prefixes(completion, marker)
    return estimate(rollouts(prefixes)) if prefixes else StepLabels([], [])


def policy_rollouts(model: Transformer, tok: BaseTokenizer, task: Task, example: Example, n: int, sample: SampleConfig,
                    gen: torch.Generator) -> Rollouts:
    """``Rollouts`` by sampling ``n`` continuations of each prefix from ``model`` (all prefixes in
    one batched call) and checking the finished text's answer exactly. A prefix that fills the
    model's context has no room to continue: its own text is scored, n times."""
    weights = RewardWeights()

    def correct(text: str) -> bool:
        return task.score(text, example, weights).correct == 1.0

    def run(prefixes: list[str]) -> list[list[bool]]:
        prompt = tok.prompt_ids(example.question)
        ids = [prompt + tok.encode(p) for p in prefixes]
        room = [i for i, x in enumerate(ids) if len(x) < model.cfg.max_seq_len]
        out = [[correct(p)] * n for p in prefixes]
        if room:
            ro = rollout.sample(model, [ids[i] for i in room], sample, tok.eos_id, tok.pad_id, gen, repeats=n)
            for r, i in enumerate(room):
                out[i] = [correct(prefixes[i] + tok.decode_completion(ro.completion_ids(r * n + j))) for j in range(n)]
        return out

    return run


def label_quality(predicted: list[bool], gold: list[bool | None]) -> dict[str, float]:
    """Agreement of predicted step labels with exact ones over the steps the exact check judges:
    accuracy, and precision/recall of both classes (``good``: a right step, ``bad``: a wrong one;
    NaN where a denominator is 0), plus the counts."""
    if len(predicted) != len(gold):
        raise ValueError(f"label_quality: {len(predicted)} predicted labels against {len(gold)} exact ones")
    pairs = [(p, g) for p, g in zip(predicted, gold) if g is not None]
    div = lambda a, b: a / b if b else math.nan  # noqa: E731
    out: dict[str, float] = {"steps": len(pairs), "exact_good": sum(g for _, g in pairs)}
    out["accuracy"] = div(sum(p == g for p, g in pairs), len(pairs))
    for name, cls in (("good", True), ("bad", False)):
        hit = sum(p == cls and g == cls for p, g in pairs)
        out[f"precision_{name}"] = div(hit, sum(p == cls for p, _ in pairs))
        out[f"recall_{name}"] = div(hit, sum(g == cls for _, g in pairs))
    return out
