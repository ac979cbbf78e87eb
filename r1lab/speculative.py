"""Self-speculative decoding with DeepSeek-V3's MTP module (arXiv:2412.19437, sec. 2.2 and 5.4.3).

Each round, for every row, the main model scores two tokens in one cached forward pass: the last
committed token and a draft of the next one that the MTP module proposed from the main model's
hidden state. The draft is accepted with probability min(1, p(d) / q(d)) (speculative sampling,
Leviathan et al. 2023, arXiv:2211.17192), p the main model's and q the MTP module's distribution
after temperature and top-p; on rejection the token is drawn from norm(max(0, p - q)), so every
emitted token follows the main model's distribution exactly. With ``greedy`` the draft is
accepted iff it is the main model's argmax, so the output equals plain greedy decoding (tested).
An accepted draft also yields a second token from the same pass: up to two tokens per round.

Rows accept different numbers of tokens; nothing is rolled back: a rejected draft's cache slot is
marked invalid in the key mask (like left padding) and positions travel per row, so one cache
serves the whole batch. Log-probs are those of the temperature-scaled main distribution without
top-p, as ``rollout.sample`` records them, so a ``Rollout`` from here trains like one from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from r1lab.config import SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.rollout import Rollout, left_pad, positions_from_mask


@dataclass
class SpecStats:
    drafts: int  # drafts proposed to live rows
    accepted: int  # drafts the main model accepted
    forward_passes: int  # main-model decode passes (one per round)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / max(1, self.drafts)


def _probs(logits_NV: torch.Tensor, cfg: SampleConfig, greedy: bool) -> torch.Tensor:
    """The distribution tokens are drawn from: one-hot argmax, or temperature then top-p."""
    if greedy:
        return F.one_hot(logits_NV.argmax(-1), logits_NV.shape[-1]).float()
    probs = F.softmax(logits_NV.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p > cfg.top_p
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p.masked_fill(outside, 0.0))
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def _draw(probs_NV: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.multinomial(probs_NV, 1, generator=gen).squeeze(-1)


@torch.no_grad()
def sample(model: Transformer, prompts: list[list[int]], cfg: SampleConfig, eos_id: int, pad_id: int, gen: torch.Generator,
           greedy: bool = False) -> tuple[Rollout, SpecStats]:
    """Like ``rollout.sample`` (one completion per prompt), drafting with the MTP module."""
    if model.mtp is None:
        raise ValueError("speculative decoding needs a model with an MTP module (model.mtp_depth 1)")
    was_training = model.training
    model.eval()
    ids, mask = left_pad(prompts, pad_id)
    prompt_mask = mask
    N, P = ids.shape
    budget = min(cfg.max_new_tokens, model.cfg.max_seq_len - P)
    if budget < 1:
        raise ValueError(f"prompt of {P} tokens leaves no room under model.max_seq_len={model.cfg.max_seq_len}")
    slots = P + 2 * budget
    cache, mtp_cache = model.new_cache(N, slots), model.new_cache(N, slots, mtp=True)
    pos = positions_from_mask(mask)
    out = model(ids, pos, mask, cache)
    logp_first = F.log_softmax(out.logits_BTV[:, -1].float() / cfg.temperature, dim=-1)
    cur = _draw(_probs(out.logits_BTV[:, -1], cfg, greedy), gen)  # (N,) first completion token
    emitted = [[int(t)] for t in cur]
    logps = [[float(logp_first[i, t])] for i, t in enumerate(cur)]
    alive = (cur != eos_id) & (budget > 1)
    draft_logits = model.mtp_forward(out.hidden_BTD, torch.cat([ids[:, 1:], cur[:, None]], 1), pos, mask, mtp_cache).logits_BTV[:, -1]
    next_pos = mask.sum(-1)  # (N,) position of ``cur``
    stats = SpecStats(0, 0, 0)
    while alive.any():
        q = _probs(draft_logits, cfg, greedy)
        draft = _draw(q, gen)  # (N,)
        mask = torch.cat([mask, alive[:, None], alive[:, None]], dim=1)
        pos2 = torch.stack([next_pos, next_pos + 1], 1).clamp(max=model.cfg.max_seq_len - 1)  # (N, 2)
        out = model(torch.stack([cur, draft], 1), pos2, mask, cache)
        stats.forward_passes += 1
        p1, p2 = _probs(out.logits_BTV[:, 0], cfg, greedy), _probs(out.logits_BTV[:, 1], cfg, greedy)
        lp = F.log_softmax(out.logits_BTV.float() / cfg.temperature, dim=-1)  # (N, 2, V)
        u = torch.rand(N, generator=gen)
        p_d, q_d = p1.gather(1, draft[:, None])[:, 0], q.gather(1, draft[:, None])[:, 0]
        accept = (u * q_d < p_d) if not greedy else (p_d > 0)  # u < p/q without dividing by zero
        residual = (p1 - q).clamp(min=0)
        residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p1)  # p == q: any draw from p
        fixed = _draw(residual / residual.sum(-1, keepdim=True), gen)
        bonus = _draw(p2, gen)
        accept = accept & alive
        stats.drafts += int(alive.sum())
        stats.accepted += int(accept.sum())
        second = torch.where(accept, draft, fixed)  # the token after ``cur``
        for i in alive.nonzero()[:, 0].tolist():
            new = [(int(second[i]), float(lp[i, 0, second[i]]))]
            if accept[i]:
                new.append((int(bonus[i]), float(lp[i, 1, bonus[i]])))
            for tok, lpv in new:
                if len(emitted[i]) >= budget or emitted[i][-1] == eos_id:
                    break
                emitted[i].append(tok)
                logps[i].append(lpv)
        mask[:, -1] &= accept  # a rejected draft's slot is no key for anyone
        # MTP inputs for the new slots: (h at cur, token after cur) and, if accepted, (h at draft, bonus).
        mtp_next = torch.stack([second, bonus], 1)
        mtp_out = model.mtp_forward(out.hidden_BTD, mtp_next, pos2, mask, mtp_cache).logits_BTV  # (N, 2, V)
        draft_logits = torch.where(accept[:, None], mtp_out[:, 1], mtp_out[:, 0])
        cur = torch.where(accept, bonus, second)
        next_pos = next_pos + 1 + accept.long()
        alive = alive & torch.tensor([len(e) < budget and e[-1] != eos_id for e in emitted])
    model.train(was_training)
    C = max(len(e) for e in emitted)
    comp = torch.full((N, C), pad_id, dtype=torch.long)
    comp_valid = torch.zeros((N, C), dtype=torch.bool)
    comp_logp = torch.zeros((N, C))
    for i, (e, lps) in enumerate(zip(emitted, logps)):
        comp[i, :len(e)], comp_valid[i, :len(e)], comp_logp[i, :len(e)] = torch.tensor(e), True, torch.tensor(lps)
    tokens = torch.cat([ids, comp], 1)
    finished = torch.tensor([e[-1] == eos_id for e in emitted])
    ro = Rollout(tokens, torch.cat([prompt_mask, comp_valid], 1), torch.cat([torch.zeros_like(ids, dtype=torch.bool), comp_valid], 1),
                 torch.cat([torch.zeros(N, P), comp_logp], 1), P, finished)
    return ro, stats
