"""Batched sampling with a KV cache, and the log-probs of the same tokens under a training pass.

Prompts are left-padded so that every row's next token is sampled at the same step; positions
and the key-validity mask travel with the batch, so ``policy_logprobs`` (one full forward, with
gradients) recomputes exactly what the sampler saw. Log-probs are of the temperature-scaled
distribution without top-p truncation, as TRL and verl compute them for the policy ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from r1lab.config import SampleConfig
from r1lab.logprobs import token_logprobs
from r1lab.model.transformer import Transformer


@dataclass
class Rollout:
    """N sampled sequences: left-padded prompt, then completion, then right padding."""

    tokens: torch.Tensor  # (N, P + C) token ids
    attention_mask: torch.Tensor  # (N, P + C) bool, real tokens (prompt and completion up to eos)
    completion_mask: torch.Tensor  # (N, P + C) bool, sampled tokens that count in the loss
    logprobs: torch.Tensor  # (N, P + C) sampler log-prob of each completion token, 0 elsewhere
    prompt_len: int  # P, the padded prompt width
    finished: torch.Tensor  # (N,) bool, ended with eos within the token budget

    @property
    def completion_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)  # (N,)

    def completion_ids(self, i: int) -> list[int]:
        return self.tokens[i, self.prompt_len:][self.completion_mask[i, self.prompt_len:]].tolist()


def positions_from_mask(mask_BT: torch.Tensor) -> torch.Tensor:
    """Position of each token counting real tokens only (left padding does not shift positions)."""
    return (mask_BT.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, P - len(p):] = True
    return ids, mask  # (N, P), (N, P)


def _sample_token(logits_NV: torch.Tensor, cfg: SampleConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg.temperature == 0:  # greedy (as transformers' generate without sampling); log-prob at temperature 1
        logp_NV = F.log_softmax(logits_NV.float(), dim=-1)
        token_N = logp_NV.argmax(dim=-1)
        return token_N, logp_NV.gather(-1, token_N[:, None]).squeeze(-1)
    logp_NV = F.log_softmax(logits_NV.float() / cfg.temperature, dim=-1)
    probs = logp_NV.exp()
    if cfg.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p > cfg.top_p  # keep the smallest prefix reaching top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    token_N = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    return token_N, logp_NV.gather(-1, token_N[:, None]).squeeze(-1)


@torch.no_grad()
def sample(model: Transformer, prompts: list[list[int]], cfg: SampleConfig, eos_id: int, pad_id: int, gen: torch.Generator) -> Rollout:
    """Sample one completion per prompt (repeat a prompt G times for a GRPO group)."""
    was_training = model.training
    model.eval()
    ids, mask = left_pad(prompts, pad_id)
    N, P = ids.shape
    budget = min(cfg.max_new_tokens, model.cfg.max_seq_len - P)
    if budget < 1:
        raise ValueError(f"prompt of {P} tokens leaves no room under model.max_seq_len={model.cfg.max_seq_len}")
    cache = model.new_cache(N, P + budget)
    logits = model(ids, positions_from_mask(mask), mask, cache).logits_BTV[:, -1]  # (N, V)
    next_pos = mask.sum(-1)  # (N,) position of the next token
    alive = torch.ones(N, dtype=torch.bool)
    toks, logps, valid = [], [], []
    for _ in range(budget):
        token, logp = _sample_token(logits, cfg, gen)
        token = torch.where(alive, token, torch.full_like(token, pad_id))
        toks.append(token)
        logps.append(torch.where(alive, logp, 0.0))
        valid.append(alive.clone())  # the eos token itself counts; what follows it does not
        mask = torch.cat([mask, alive[:, None]], dim=1)
        alive = alive & (token != eos_id)
        if not alive.any() or len(toks) == budget:
            break
        logits = model(token[:, None], next_pos[:, None], mask, cache).logits_BTV[:, -1]
        next_pos = next_pos + 1
    model.train(was_training)
    comp_valid = torch.stack(valid, 1)  # (N, C)
    tokens = torch.cat([ids, torch.stack(toks, 1)], dim=1)
    completion_mask = torch.cat([torch.zeros_like(ids, dtype=torch.bool), comp_valid], dim=1)
    logprobs = torch.cat([torch.zeros(N, P), torch.stack(logps, 1)], dim=1)
    return Rollout(tokens, mask, completion_mask, logprobs, P, finished=~alive)


def policy_logprobs(model: Transformer, tokens: torch.Tensor, attention_mask: torch.Tensor, temperature: float, chunk: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of every token given its prefix (N, T) with 0 at t=0, MoE aux loss) in one
    forward pass that takes gradients: the training side of the sampler. ``chunk > 0`` computes
    them ``chunk`` tokens at a time (``r1lab.logprobs``): O(chunk x V) memory, not O(N x T x V)."""
    if chunk > 0:
        out = model(tokens, positions_from_mask(attention_mask), attention_mask, logits=False)
        logp = token_logprobs(out.normed_BTD[:, :-1], model.head_weight(), tokens[:, 1:], temperature, chunk)  # (N, T-1)
        return F.pad(logp, (1, 0)), out.aux_loss
    out = model(tokens, positions_from_mask(attention_mask), attention_mask)
    logp_all = F.log_softmax(out.logits_BTV[:, :-1].float() / temperature, dim=-1)  # (N, T-1, V)
    logp = logp_all.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (N, T-1)
    return F.pad(logp, (1, 0)), out.aux_loss
