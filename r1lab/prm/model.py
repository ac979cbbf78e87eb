"""The process (and outcome) reward model: an r1lab Transformer with a scalar head read at step ends.

Math-Shepherd (arXiv:2312.08935, sec. 3.2) trains a PRM as a language model whose output at each
step tag is a binary "good/bad" prediction, with cross entropy against the step's label; here the
body is r1lab's own Transformer (``forward(..., logits=False)``, its final normed hidden states)
and the head one linear map to a logit, trained with binary cross entropy on soft (a fraction) or
hard (0/1) labels at the token that ends each step. The outcome reward model (ORM, Cobbe et al.
2021 verifiers; Lightman et al. 2023's baseline) is the same network trained with one label only:
final correctness, at the completion's last token.

Scored positions: the last token of each step (``r1lab.prm.steps.step_spans``), and the last
token of the whole completion (after ``</answer>``), the "answer step" whose label is the
verifier's outcome for both models. Departure: the completion is tokenized piece by piece, cut at
step ends, so that a step end is always a token boundary; for the character tokenizer that is the
ordinary tokenization, for a BPE tokenizer a merge across a step end is given up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1lab import checkpoint
from r1lab import tokenizer as tokenizer_lib
from r1lab.config import ModelConfig
from r1lab.model.transformer import Transformer
from r1lab.prm.steps import step_spans
from r1lab.rollout import left_pad, positions_from_mask
from r1lab.tokenizer import BaseTokenizer


class RewardModel(nn.Module):
    """``body`` (an r1lab Transformer, its LM output unused) and ``head``, a linear map from the
    final normed hidden state to one logit per position. ``cfg``/``vocab_size`` are the body's,
    so a checkpoint records how to rebuild it."""

    def __init__(self, body: Transformer):
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.cfg.d_model, 1)
        nn.init.normal_(self.head.weight, std=body.cfg.init_std)
        nn.init.zeros_(self.head.bias)  # every score starts at sigmoid(0) = 0.5

    @property
    def cfg(self) -> ModelConfig:
        return self.body.cfg

    @property
    def vocab_size(self) -> int:
        return self.body.vocab_size

    def forward(self, ids_BT: torch.Tensor, mask_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit of every position (B, T), MoE aux loss) of a left-padded batch."""
        out = self.body(ids_BT, positions_from_mask(mask_BT), mask_BT, logits=False)
        return self.head(out.normed_BTD).squeeze(-1), out.aux_loss  # (B, T)


@dataclass(frozen=True)
class Encoded:
    """One (question, completion) as the reward model reads it."""

    ids: list[int]  # prompt + completion tokens
    step_ends: list[int]  # index in ``ids`` of the last token of each step
    final: int  # index of the completion's last token (the answer step)


def encode(tok: BaseTokenizer, question: str, completion: str, marker: str | None = None) -> Encoded:
    """Prompt ids in the R1 template, then the completion tokenized piece by piece, cut at step ends."""
    ids = tok.prompt_ids(question)
    ends, pos = [], 0
    for _, end in step_spans(completion, marker):
        ids = ids + tok.encode(completion[pos:end])
        ends.append(len(ids) - 1)
        pos = end
    ids = ids + tok.encode(completion[pos:])
    return Encoded(ids, ends, len(ids) - 1)


def bce_at(logits_BT: torch.Tensor, targets_BT: torch.Tensor, weight_BT: torch.Tensor) -> torch.Tensor:
    """Binary cross entropy of the logits against soft or hard targets in [0, 1], averaged over
    the labelled positions (``weight_BT`` 1 there, 0 elsewhere); 0 when nothing is labelled."""
    per = F.binary_cross_entropy_with_logits(logits_BT, targets_BT, reduction="none")  # (B, T)
    return (per * weight_BT).sum() / weight_BT.sum().clamp(min=1.0)


def auc(scores: list[float], labels: list[bool]) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random
    negative, ties counted half (Mann-Whitney U / (n_pos n_neg), by ranks); NaN without both
    classes."""
    if len(scores) != len(labels):
        raise ValueError(f"auc: {len(scores)} scores against {len(labels)} labels")
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks (1-based) over runs of equal scores
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def grouped_auc(scores: list[float], labels: list[bool], groups: list[object]) -> float:
    """AUC over the (positive, negative) pairs that share a group only (the completions of one
    problem): whether a scorer tells a right completion from a wrong one *of the same problem*,
    which is what best-of-N needs and what a global AUC can hide (a scorer that only knows which
    problems are hard has a global AUC above 0.5 and a grouped one of 0.5). NaN without such pairs."""
    if not len(scores) == len(labels) == len(groups):
        raise ValueError(f"grouped_auc: {len(scores)} scores, {len(labels)} labels, {len(groups)} groups")
    by: dict[object, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    weighted, pairs = 0.0, 0
    for idx in by.values():
        ys = [labels[i] for i in idx]
        n = sum(ys) * (len(ys) - sum(ys))
        if n:
            weighted += n * auc([scores[i] for i in idx], ys)
            pairs += n
    return weighted / pairs if pairs else math.nan


def aggregate(step_scores: list[float], final: float, how: str) -> float:
    """One score of a whole completion for best-of-N: the ``min`` over its steps and answer step
    (Math-Shepherd), their ``product`` (Lightman et al. 2023), or the ``last`` (the answer step;
    what an ORM gives)."""
    scores = [*step_scores, final]
    if how == "min":
        return min(scores)
    if how == "product":
        return math.prod(scores)
    if how == "last":
        return final
    raise ValueError(f"unknown aggregate {how!r}; choose min, product or last")


class StepScorer:
    """Scores completions with a trained reward model: ``scorer(question, completion)`` is one
    float in (0, 1) per step of ``split_steps(completion, scorer.marker)``; ``score_batch`` also
    gives the answer step's score, for many completions at once."""

    def __init__(self, model: RewardModel, tok: BaseTokenizer, marker: str | None = None, kind: str = "prm", batch_size: int = 64):
        self.model, self.tok, self.marker, self.kind, self.batch_size = model.eval(), tok, marker or None, kind, batch_size

    def __call__(self, question: str, completion: str) -> list[float]:
        return self.score_batch([(question, completion)])[0][0]

    @torch.no_grad()
    def score_batch(self, pairs: list[tuple[str, str]]) -> list[tuple[list[float], float]]:
        """(step scores, answer-step score) of each (question, completion)."""
        out: list[tuple[list[float], float]] = []
        max_len = self.model.cfg.max_seq_len
        for start in range(0, len(pairs), self.batch_size):
            enc = [encode(self.tok, q, c, self.marker) for q, c in pairs[start : start + self.batch_size]]
            for e in enc:
                if len(e.ids) > max_len:
                    raise ValueError(f"a completion of {len(e.ids)} tokens (prompt included) exceeds the reward model's max_seq_len={max_len}")
            ids_BT, mask_BT = left_pad([e.ids for e in enc], self.tok.pad_id)
            probs_BT = torch.sigmoid(self.model(ids_BT, mask_BT)[0])  # (B, T)
            T = ids_BT.shape[1]
            for b, e in enumerate(enc):
                shift = T - len(e.ids)  # left padding
                row = probs_BT[b].tolist()
                out.append(([row[shift + i] for i in e.step_ends], row[shift + e.final]))
        return out


def load_scorer(path: str | Path, batch_size: int = 64) -> StepScorer:
    """The scorer of a ``r1lab prm train`` run folder (its newest good checkpoint) or checkpoint
    folder. Raises ValueError naming the folder when it holds no reward model."""
    path = Path(path)
    if (path / checkpoint.MODEL_FILE).is_file():
        ckpt = checkpoint.load(path)
        run = path.parent.parent
    else:
        ckpt = checkpoint.load_latest(path) if path.is_dir() else None
        run = path
    if ckpt is None:
        raise ValueError(f"reward model {path}: no checkpoint there (train one with `r1lab prm train --out {path}`)")
    info = ckpt.state.get("prm")
    if not isinstance(info, dict) or "model_config" not in ckpt.state:
        raise ValueError(f"{ckpt.path}: not a reward model checkpoint (no \"prm\" entry in {checkpoint.STATE_FILE}); train one with `r1lab prm train`")
    try:
        tok = tokenizer_lib.load(run)
    except (OSError, ValueError) as err:
        raise ValueError(f"reward model {run}: cannot read its {tokenizer_lib.TOKENIZER_FILE} ({err})") from None
    model = RewardModel(Transformer(ModelConfig(**ckpt.state["model_config"]), int(ckpt.state["vocab_size"])))
    checkpoint.apply(model, ckpt)
    return StepScorer(model, tok, info.get("marker") or None, info.get("kind", "prm"), batch_size)
