"""Supervised next-token losses: masked negative log-likelihood (pretraining, SFT), sequence
packing without attention across documents, and logit distillation.

SFT follows DeepSeek-R1 (arXiv:2501.12948, sec. 2.3.1 and 2.4): cold-start and distillation data
are prompt/completion pairs in the R1 template, trained with the loss on completion tokens only.
Packing puts several documents in one row; unlike GPT-style pretraining packing, a token attends
only to its own document (block-diagonal causal mask, positions restarting per document, as in
``Transformer.forward(doc_ids_BT=...)``), so a packed batch computes exactly what the same
documents padded one per row would (tested), only without the padding.

Token-level distillation (``distill_kl``) is Hinton et al.'s (arXiv:1503.02531) KL to the
teacher's softened distribution at every completion token, forward (mode-covering, as in
MiniLLM's baseline "word-level KD") or reverse (mode-seeking, MiniLLM arXiv:2306.08543). Departure:
with ``top_k`` both distributions are renormalised over the teacher's k most likely tokens, so
that a student equal to its teacher still has zero loss (a student log-softmax over the full
vocabulary against a truncated teacher would not). DeepSeek-R1's own distillation is plain SFT on
teacher samples (``masked_nll`` on ``r1lab rejection-sample`` output)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F


def masked_nll(logits_BTV: torch.Tensor, targets_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits[:, t]`` predicting ``targets[:, t]`` over ``mask`` positions."""
    nll = F.cross_entropy(logits_BTV.flatten(0, 1).float(), targets_BT.flatten(), reduction="none")
    mask = mask_BT.flatten().float()
    return (nll * mask).sum() / mask.sum().clamp(min=1.0)


@dataclass(frozen=True)
class Sequence:
    """One tokenized training document: prompt then completion (ending with eos). Only the
    completion's tokens carry loss."""

    ids: tuple[int, ...]
    n_prompt: int


@dataclass
class Batch:
    """Rows of documents, right-padded. ``loss_mask`` marks completion tokens (aligned with
    ``ids``, not shifted); ``doc_ids`` gives each token its document's index within the row (pad
    -1), or is None when every row holds one document (plain causal attention suffices)."""

    ids_BT: torch.Tensor  # (B, T) token ids
    loss_mask_BT: torch.Tensor  # (B, T) bool, completion tokens
    real_BT: torch.Tensor  # (B, T) bool, not padding
    doc_ids_BT: torch.Tensor | None  # (B, T) document index within the row, -1 on padding

    @property
    def n_loss_tokens(self) -> int:
        return int(self.loss_mask_BT[:, 1:].sum())


def _rows(rows: list[list[Sequence]], pad_id: int, width: int, packed: bool) -> Batch:
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    loss = torch.zeros((len(rows), width), dtype=torch.bool)
    docs = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for d, seq in enumerate(row):
            n = len(seq.ids)
            ids[r, at : at + n] = torch.tensor(seq.ids, dtype=torch.long)
            loss[r, at + seq.n_prompt : at + n] = True
            docs[r, at : at + n] = d
            at += n
    return Batch(ids, loss, docs >= 0, docs if packed else None)


def pad_batch(seqs: list[Sequence], pad_id: int) -> Batch:
    """One document per row, right-padded to the longest (the unpacked reference)."""
    return _rows([[s] for s in seqs], pad_id, max(len(s.ids) for s in seqs), packed=False)


def _first_fit(lengths: list[int], seq_len: int) -> list[list[int]]:
    """Indices of documents per row: each document, in order, goes into the first row with room
    for it (first-fit bin packing), else opens a new row."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i, n in enumerate(lengths):
        if n > seq_len:
            raise ValueError(f"a document of {n} tokens does not fit a row of {seq_len}")
        r = next((r for r, room in enumerate(free) if room >= n), None)
        if r is None:
            rows.append([])
            free.append(seq_len)
            r = len(rows) - 1
        rows[r].append(i)
        free[r] -= n
    return rows


def pack(seqs: list[Sequence], seq_len: int, pad_id: int) -> Batch:
    """Whole documents packed into rows of at most ``seq_len`` tokens (first-fit, in order), right
    padded to the fullest row; every document must fit a row. The loss, a mean over completion
    tokens, does not depend on which row a document lands in."""
    rows = [[seqs[i] for i in row] for row in _first_fit([len(s.ids) for s in seqs], seq_len)]
    width = max(sum(len(s.ids) for s in row) for row in rows)
    return _rows(rows, pad_id, width, packed=True)


def pack_rows(seqs: list[Sequence], seq_len: int) -> int:
    """How many rows ``pack`` fills with ``seqs``."""
    return len(_first_fit([len(s.ids) for s in seqs], seq_len))


def batch_forward(model: torch.nn.Module, b: Batch, logits: bool = True):
    """The model's forward over a batch's inputs (every token but the last): block-diagonal
    attention when packed; MoE statistics over real tokens only."""
    docs = None if b.doc_ids_BT is None else b.doc_ids_BT[:, :-1]
    return model(b.ids_BT[:, :-1], token_mask_BT=b.real_BT[:, :-1], logits=logits, doc_ids_BT=docs)


def sft_loss(model: torch.nn.Module, b: Batch, mtp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean NLL of the batch's completion tokens, the other loss terms: MoE aux loss, and with
    ``mtp`` on a model with an MTP module its weighted NLL and aux loss) in one forward pass."""
    out = batch_forward(model, b)
    extra = out.aux_loss
    if mtp and model.mtp is not None:
        mtp_nll, mtp_aux = sft_mtp_loss(model, b, out.hidden_BTD)
        extra = extra + model.cfg.mtp_loss_weight * mtp_nll + mtp_aux
    return masked_nll(out.logits_BTV, b.ids_BT[:, 1:], b.loss_mask_BT[:, 1:]), extra


def sft_mtp_loss(model: torch.nn.Module, b: Batch, hidden_BTD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean NLL of the MTP module predicting completion token t+2 from the hidden state at t and
    token t+1, its MoE aux loss), as pretraining trains it (DeepSeek-V3 sec. 2.2); ``hidden_BTD``
    is ``batch_forward``'s. Across a packed boundary the target is a prompt token: no loss."""
    docs = None if b.doc_ids_BT is None else b.doc_ids_BT[:, :-2]
    out = model.mtp_forward(hidden_BTD[:, :-1], b.ids_BT[:, 1:-1], token_mask_BT=b.real_BT[:, :-2], doc_ids_BT=docs)
    return masked_nll(out.logits_BTV, b.ids_BT[:, 2:], b.loss_mask_BT[:, 2:]), out.aux_loss


def distill_kl(student_logits_BTV: torch.Tensor, teacher_logits_BTV: torch.Tensor, mask_BT: torch.Tensor,
               direction: Literal["forward", "reverse"] = "forward", temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Mean over ``mask`` positions of KL(teacher || student) (forward) or KL(student || teacher)
    (reverse) between the temperature-softened distributions, times temperature^2 (Hinton's
    scaling, so gradients keep their size across temperatures). ``top_k > 0``: both
    distributions renormalised over the teacher's k most likely tokens at each position. The
    teacher side carries no gradient."""
    s_BTV = student_logits_BTV.float() / temperature
    t_BTV = teacher_logits_BTV.detach().float() / temperature
    if top_k > 0:
        idx_BTK = t_BTV.topk(min(top_k, t_BTV.shape[-1]), dim=-1).indices  # (B, T, K)
        s_BTV, t_BTV = s_BTV.gather(-1, idx_BTK), t_BTV.gather(-1, idx_BTK)
    logp_s = F.log_softmax(s_BTV, dim=-1)
    logp_t = F.log_softmax(t_BTV, dim=-1)
    if direction == "forward":
        kl_BT = (logp_t.exp() * (logp_t - logp_s)).sum(-1)  # (B, T)
    else:
        kl_BT = (logp_s.exp() * (logp_s - logp_t)).sum(-1)  # (B, T)
    mask = mask_BT.float()
    return (kl_BT * mask).sum() / mask.sum().clamp(min=1.0) * temperature**2
