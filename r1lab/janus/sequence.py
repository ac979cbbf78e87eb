"""Mixed sequences of text, image features and image codes: assembly into input vectors with
next-token targets for training, and the two KV-cache samplers (text answers, image codes).

A row is a list of segments: ``Text(ids, loss)`` (token ids; ``loss`` marks ids the model is
trained to predict), ``Image(pixels)`` (understanding: 16 encoder vectors, never predicted) and
``Codes(ids)`` (generation: 64 VQ codes, always predicted, by the image head). Rows are right-padded
for training (plain causal attention, as pretraining) and left-padded for sampling (positions and
a key mask, as ``r1lab.rollout``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from r1lab.janus.model import N_CODES, N_PATCHES, JanusModel, cfg_logits


@dataclass
class Text:
    ids: list[int]
    loss: bool = False


@dataclass
class Image:
    pixels: np.ndarray  # (3, 32, 32) in [0, 1]


@dataclass
class Codes:
    ids: list[int]
    loss: bool = True  # False: codes read as an image to understand (a shared VQ encoding), not predicted


Row = list  # list[Text | Image | Codes]


@dataclass
class Batch:
    embeds_BTD: torch.Tensor
    mask_BT: torch.Tensor  # real (non-padding) positions
    text_tgt_BT: torch.Tensor  # next text token to predict at each position, -1: none
    code_tgt_BT: torch.Tensor  # next image code to predict at each position, -1: none


def _pieces(model: JanusModel, rows: list[Row]) -> list[list[tuple[torch.Tensor, list[int], list[int]]]]:
    """Per row, per segment: (vectors (n, D), text labels (n,), code labels (n,)); -1 = no target.
    Images and codes of all rows go through their encoders in one batch each."""
    images = [s.pixels for r in rows for s in r if isinstance(s, Image)]
    codes = [s.ids for r in rows for s in r if isinstance(s, Codes)]
    feats = model.image_features(torch.as_tensor(np.stack(images))) if images else None  # (n, n_patches, D)
    cembs = model.code_embeds(torch.tensor(codes)) if codes else None  # (n, 64, D)
    out, i_img, i_code = [], 0, 0
    for r in rows:
        row = []
        for s in r:
            if isinstance(s, Text):
                n = len(s.ids)
                row.append((model.text_embeds(torch.tensor(s.ids)), list(s.ids) if s.loss else [-1] * n, [-1] * n))
            elif isinstance(s, Image):
                v = feats[i_img]
                i_img += 1
                row.append((v, [-1] * v.shape[0], [-1] * v.shape[0]))
            else:
                v = cembs[i_code]
                i_code += 1
                row.append((v, [-1] * len(s.ids), list(s.ids) if s.loss else [-1] * len(s.ids)))
        out.append(row)
    return out


def assemble(model: JanusModel, rows: list[Row], pad_id: int) -> Batch:
    """Right-padded training batch; targets are shifted so position t predicts position t+1."""
    per_row = _pieces(model, rows)
    T = max(sum(p[0].shape[0] for p in row) for row in per_row)
    pad_vec = model.text_embeds(torch.tensor([pad_id]))[0]
    embeds, mask, text_tgt, code_tgt = [], [], [], []
    for row in per_row:
        vecs = torch.cat([p[0] for p in row])  # (n, D)
        n = vecs.shape[0]
        tl = sum((p[1] for p in row), [])[1:] + [-1]
        cl = sum((p[2] for p in row), [])[1:] + [-1]
        embeds.append(torch.cat([vecs, pad_vec.expand(T - n, -1)]))
        mask.append([True] * n + [False] * (T - n))
        text_tgt.append(tl + [-1] * (T - n))
        code_tgt.append(cl + [-1] * (T - n))
    return Batch(torch.stack(embeds), torch.tensor(mask), torch.tensor(text_tgt), torch.tensor(code_tgt))


@dataclass
class Losses:
    total: torch.Tensor
    text: torch.Tensor  # mean NLL of the text targets (0 when there are none)
    code: torch.Tensor  # mean NLL of the image-code targets
    aux: torch.Tensor  # MoE balance loss
    load_LE: torch.Tensor | None


def row_length(row: Row, image_len: int = N_PATCHES) -> int:
    """Positions of ``row``; an image is ``image_len`` feature vectors (the model's ``n_patches``)."""
    return sum(image_len if isinstance(s, Image) else len(s.ids) for s in row)


def length_buckets(rows: list[Row], image_len: int = N_PATCHES) -> list[list[int]]:
    """Row indices in at most two buckets by length (short rows, long rows), split where the two
    padded batches hold the fewest positions: a batch of questions (~70 positions) and drawings
    (~170) costs ~40% less than one padded batch. Same losses, up to float summation order."""
    order = sorted(range(len(rows)), key=lambda i: row_length(rows[i], image_len))
    lens = [row_length(rows[i], image_len) for i in order]
    n = len(order)
    cost = [k * lens[k - 1] + (n - k) * lens[-1] if k else n * lens[-1] for k in range(n)]
    k = min(range(n), key=lambda i: (cost[i], i))
    return [order[:k], order[k:]] if k else [order]


def losses(model: JanusModel, batches: Batch | list[Batch]) -> Losses:
    """Mean next-token NLL of the text and of the image-code targets over all ``batches`` (one
    forward pass each: length buckets of one step), plus the MoE balance loss weighted by tokens."""
    batches = [batches] if isinstance(batches, Batch) else batches
    total_tokens = float(sum(b.mask_BT.sum() for b in batches))
    th, ty, ch, cy, aux, loads = [], [], [], [], 0.0, []
    for b in batches:
        out = model.hidden(b.embeds_BTD, token_mask_BT=b.mask_BT)
        h_BTD = out.normed_BTD
        t_sel, c_sel = b.text_tgt_BT >= 0, b.code_tgt_BT >= 0
        th.append(h_BTD[t_sel]), ty.append(b.text_tgt_BT[t_sel]), ch.append(h_BTD[c_sel]), cy.append(b.code_tgt_BT[c_sel])
        aux = aux + out.aux_loss * (float(b.mask_BT.sum()) / total_tokens)
        if out.load_LE is not None:
            loads.append(out.load_LE)
    h_text, y_text, h_code, y_code = torch.cat(th), torch.cat(ty), torch.cat(ch), torch.cat(cy)
    zero = h_text.new_zeros(())
    text = F.cross_entropy(model.text_logits(h_text), y_text) if len(y_text) else zero
    code = F.cross_entropy(model.code_logits(h_code), y_code) if len(y_code) else zero
    aux = aux if isinstance(aux, torch.Tensor) else zero
    return Losses(text + code + aux, text, code, aux, torch.stack(loads).sum(0) if loads else None)


# ---------------------------------------------------------------------------------------------
# Sampling (KV cache, left padding)


def _prefill(model: JanusModel, rows: list[Row], pad_id: int, extra: int):
    """Left-pad the rows' vectors, run them through the LM into a fresh cache with room for
    ``extra`` more tokens; returns (last normed hidden (B, D), cache, key mask, next positions)."""
    per_row = _pieces(model, rows)
    vecs = [torch.cat([p[0] for p in row]) for row in per_row]
    T = max(v.shape[0] for v in vecs)
    pad_vec = model.text_embeds(torch.tensor([pad_id]))[0]
    embeds = torch.stack([torch.cat([pad_vec.expand(T - v.shape[0], -1), v]) for v in vecs])  # (B, T, D)
    mask = torch.tensor([[False] * (T - v.shape[0]) + [True] * v.shape[0] for v in vecs])  # (B, T)
    pos = (mask.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
    cache = model.lm.new_cache(len(rows), T + extra)
    out = model.hidden(embeds, positions_BT=pos, key_mask_BS=mask, cache=cache)
    return out.normed_BTD[:, -1], cache, mask, pos[:, -1:] + 1


def _sample(logits_BV: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    if temperature == 0:
        return logits_BV.argmax(-1)
    probs = torch.softmax(logits_BV.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=gen)[:, 0]


@torch.no_grad()
def generate_text(model: JanusModel, rows: list[Row], pad_id: int, eos_id: int, max_new: int, temperature: float,
                  gen: torch.Generator) -> list[list[int]]:
    """Sampled continuations (token ids, up to and without eos) of each row."""
    h_BD, cache, mask, pos = _prefill(model, rows, pad_id, max_new)
    B = len(rows)
    out = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool)
    for _ in range(max_new):
        tok = _sample(model.text_logits(h_BD), temperature, gen)  # (B,)
        for b in range(B):
            if not done[b]:
                if int(tok[b]) == eos_id:
                    done[b] = True
                else:
                    out[b].append(int(tok[b]))
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.bool)], dim=1)
        h_BD = model.hidden(model.text_embeds(tok[:, None]), positions_BT=pos, key_mask_BS=mask, cache=cache).normed_BTD[:, -1]
        pos = pos + 1
    return out


@torch.no_grad()
def generate_codes(model: JanusModel, prompts: list[list[int]], pad_id: int, temperature: float, gen: torch.Generator,
                   scale: float = 1.0, uncond: list[list[int]] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """64 image codes per prompt (B, 64), and the logits each was sampled from. With ``uncond``
    (the prompts with their text replaced by pad, same lengths) the cond and uncond rows run as one
    batch and the logits are ``cfg_logits(cond, uncond, scale)``."""
    B = len(prompts)
    rows = [[Text(p)] for p in prompts] + ([[Text(p)] for p in uncond] if uncond is not None else [])
    h_BD, cache, mask, pos = _prefill(model, rows, pad_id, N_CODES)
    codes, logits_seen = [], []
    for i in range(N_CODES):
        logits = model.code_logits(h_BD)  # (B or 2B, K)
        if uncond is not None:
            logits = cfg_logits(logits[:B], logits[B:], scale)
        code = _sample(logits, temperature, gen)  # (B,)
        codes.append(code)
        logits_seen.append(logits)
        if i == N_CODES - 1:
            break
        feed = code if uncond is None else torch.cat([code, code])
        mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=torch.bool)], dim=1)
        h_BD = model.hidden(model.code_embeds(feed[:, None], start=i), positions_BT=pos, key_mask_BS=mask, cache=cache).normed_BTD[:, -1]
        pos = pos + 1
    return torch.stack(codes, dim=1), logits_seen


def target_logprobs(model: JanusModel, batch: Batch, text_temperature: float = 1.0, code_temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each position's next target under the model's sampling distribution
    (text head at ``text_temperature``, image head at ``code_temperature``): (logp (B, T), mask
    (B, T) of positions that have a target). What GRPO's policy loss reads for mixed sequences."""
    h_BTD = model.hidden(batch.embeds_BTD, token_mask_BT=batch.mask_BT).normed_BTD
    t_sel, c_sel = batch.text_tgt_BT >= 0, batch.code_tgt_BT >= 0
    logp_BT = h_BTD.new_zeros(batch.text_tgt_BT.shape)
    if t_sel.any():
        lp = F.log_softmax(model.text_logits(h_BTD[t_sel]).float() / text_temperature, dim=-1)  # (n, V)
        logp_BT = logp_BT.index_put((t_sel,), lp.gather(-1, batch.text_tgt_BT[t_sel][:, None])[:, 0])
    if c_sel.any():
        lp = F.log_softmax(model.code_logits(h_BTD[c_sel]).float() / code_temperature, dim=-1)  # (n, K)
        logp_BT = logp_BT.index_put((c_sel,), lp.gather(-1, batch.code_tgt_BT[c_sel][:, None])[:, 0])
    return logp_BT, t_sel | c_sel
