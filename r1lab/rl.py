"""GRPO as pure tensor functions: group-normalised advantages and the clipped policy loss.

Follows DeepSeekMath (arXiv:2402.03300, sec. 4.1) as used for DeepSeek-R1-Zero: G completions per
prompt, advantage = (r - mean_group) / std_group, PPO's clipped surrogate, and an optional KL to a
frozen reference policy with the unbiased k3 estimator exp(ref - logp) - (ref - logp) - 1.

Departures: the loss is aggregated over all completion tokens of the batch (token level, as DAPO
arXiv:2503.14476 recommends) rather than per sequence then per group, so long completions are
not down-weighted; ``scale=False`` drops the std division (Dr. GRPO, arXiv:2503.20783).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(rewards_N: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """``rewards_N`` holds B groups of G consecutive completions; returns advantages (N,).

    A group whose rewards are all equal gets advantage 0 (no signal), whatever ``scale``."""
    r_BG = rewards_N.float().view(-1, group_size)
    adv_BG = r_BG - r_BG.mean(dim=1, keepdim=True)
    if scale:
        adv_BG = adv_BG / (r_BG.std(dim=1, keepdim=True) + eps)  # unbiased std, as in DeepSeekMath
    return adv_BG.reshape(-1)


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor  # scalar to minimise
    clip_frac: float  # fraction of tokens whose ratio was clipped
    kl: float  # mean k3 KL to the reference over completion tokens (0 without reference)
    ratio_mean: float


def policy_loss(
    logp_NT: torch.Tensor,
    old_logp_NT: torch.Tensor,
    adv_N: torch.Tensor,
    mask_NT: torch.Tensor,
    clip_eps: float,
    ref_logp_NT: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> PolicyLossOutput:
    """Clipped surrogate (+ k3 KL), mean over all masked tokens of the batch."""
    mask = mask_NT.float()
    n_tokens = mask.sum().clamp(min=1.0)
    ratio = torch.exp(logp_NT - old_logp_NT)  # (N, T)
    adv = adv_N[:, None]
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    per_token = -torch.minimum(unclipped, clipped)  # (N, T)
    kl_value = 0.0
    if ref_logp_NT is not None and kl_coef > 0:
        delta = ref_logp_NT - logp_NT
        kl_NT = torch.exp(delta) - delta - 1.0
        per_token = per_token + kl_coef * kl_NT
        kl_value = float((kl_NT.detach() * mask).sum() / n_tokens)
    loss = (per_token * mask).sum() / n_tokens
    with torch.no_grad():
        was_clipped = clipped < unclipped  # the clipped term is the one that counts
        clip_frac = float((was_clipped.float() * mask).sum() / n_tokens)
        ratio_mean = float((ratio * mask).sum() / n_tokens)
    return PolicyLossOutput(loss, clip_frac, kl_value, ratio_mean)
