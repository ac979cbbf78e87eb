"""The GRPO family as pure tensor functions: advantages, per-token policy losses, aggregation,
KL estimators, overlong shaping. The RL recipe only wires these together.

Papers, and where each function follows or departs from them:

- GRPO, DeepSeekMath (arXiv:2402.03300, sec. 4.1), as used for DeepSeek-R1-Zero: G completions
  per prompt, advantage (r - mean_group) / std_group (unbiased std), PPO's clipped surrogate
  (arXiv:1707.06347), KL to a frozen reference with the k3 estimator.
- Process supervision in GRPO (DeepSeekMath, sec. 4.1.3): step rewards normalised across the
  group, a token's advantage the sum of the normalised rewards of the steps from its own on; the
  hybrid (a weighted sum with the outcome advantage) is r1lab's, not the paper's.
- Dr. GRPO (arXiv:2503.20783): no std division and a constant length normaliser
  (``seq_mean_token_sum_norm``: each sequence's token sum over ``max_new_tokens``).
- RLOO (arXiv:2402.14740): leave-one-out baseline, the mean of the other G-1 rewards.
- REINFORCE++ (arXiv:2501.03262): no group baseline; rewards whitened over the batch.
- DAPO (arXiv:2503.14476): asymmetric clip (clip-higher, eps_low 0.2, eps_high 0.28), token-level
  aggregation, soft overlong penalty (eq. 13); dynamic sampling lives in the recipe.
- Dual clip (arXiv:1912.09729): for A < 0 the loss is capped at -c A so a huge ratio cannot blow up.
- GSPO (arXiv:2507.18071): sequence-level ratio exp(mean_t log r_t), clipped per sequence; the
  token form (GSPO-token) with the ratio's value shared by the sequence's tokens.
- CISPO (MiniMax-M1, arXiv:2506.13585): -sg(clip(r, 1-eps_low, 1+eps_high)) A log pi; every token
  keeps a gradient, the importance weight is clipped and detached.
- SAPO (arXiv:2511.20347): a soft sigmoid gate f(r) = 4/tau sigmoid(tau (r - 1)) in place of the
  hard clip, tau_pos for A > 0 and tau_neg for A < 0 (TRL's definition).
- KL estimators k1, k2, k3 (J. Schulman, "Approximating KL divergence", 2020).
- Truncated importance sampling (Yao et al. 2025, "Your efficient RL framework secretly brings
  you off-policy RL training"): per-token weight min(pi_old / pi_sampler, C).

Aggregation is written for gradient accumulation: ``aggregate`` returns one micro-batch's share
of the mini-batch loss given the mini-batch's totals (tokens, sequences), so the shares of
4 micro-batches of 8 sum to the loss of one batch of 32 exactly, for every mode (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Estimator = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp"]
Scale = Literal["group", "batch", "none"]
LossType = Literal["ppo", "gspo", "cispo", "sapo"]
Aggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]
KLEstimator = Literal["k1", "k2", "k3"]


# ---------------------------------------------------------------------------------------------
# Advantages


def advantages(rewards_N: torch.Tensor, group_size: int, estimator: Estimator = "grpo", scale: Scale = "group", eps: float = 1e-4) -> torch.Tensor:
    """One advantage per completion (N,) from B groups of G consecutive completions' rewards.

    The baseline is the estimator's: ``grpo``/``dr_grpo`` the group mean, ``rloo`` the mean of the
    other G-1 rewards of the group, ``reinforce_pp`` the batch mean. ``scale`` then divides by the
    (unbiased) reward std of the group, of the whole batch, or by nothing. Dr. GRPO is GRPO's
    baseline without the std (the recipe insists on ``scale: none`` for it)."""
    r_BG = rewards_N.float().view(-1, group_size)  # (B, G)
    G = group_size
    if estimator in ("grpo", "dr_grpo"):
        adv_BG = r_BG - r_BG.mean(dim=1, keepdim=True)
    elif estimator == "rloo":
        adv_BG = r_BG - (r_BG.sum(dim=1, keepdim=True) - r_BG) / (G - 1)  # = G/(G-1) (r - mean)
    elif estimator == "reinforce_pp":
        adv_BG = r_BG - r_BG.mean()
    else:
        raise ValueError(f"unknown advantage estimator {estimator!r}")
    if scale == "group":
        adv_BG = adv_BG / (r_BG.std(dim=1, keepdim=True) + eps)  # unbiased std, as in DeepSeekMath
    elif scale == "batch":
        adv_BG = adv_BG / (r_BG.std() + eps)
    elif scale != "none":
        raise ValueError(f"unknown advantage scale {scale!r}")
    return adv_BG.reshape(-1)


def group_advantages(rewards_N: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantages (``scale=False``: Dr. GRPO's); kept for callers of the first API."""
    return advantages(rewards_N, group_size, "grpo", "group" if scale else "none", eps)


def process_advantages(step_rewards: list[list[float]], step_ends: list[list[int]], group_size: int, T: int, eps: float = 1e-4) -> torch.Tensor:
    """Token advantages (N, T) from step rewards: DeepSeekMath's process supervision (sec. 4.1.3).

    ``step_rewards[i][j]`` is the reward of the j-th step of completion i and ``step_ends[i][j]``
    the column (in the rollout's (N, T) layout) of that step's last token. Within each group of
    G consecutive completions every step reward is normalised by the mean and (unbiased) std of
    all the group's step rewards, r~ = (r - mean) / (std + eps) (a group with one step reward has
    std 0); the advantage of a token is the sum of the normalised rewards of the steps that end at
    or after it. Tokens after a completion's last step get 0; prompt columns carry the sum of all
    its steps and must be masked, as they always are."""
    N = len(step_rewards)
    placed_NT = torch.zeros(N, T)
    for g in range(0, N, group_size):
        rewards = torch.tensor([r for i in range(g, g + group_size) for r in step_rewards[i]], dtype=torch.float32)
        if rewards.numel() == 0:
            continue
        mean = rewards.mean()
        std = rewards.std() if rewards.numel() > 1 else torch.zeros(())
        for i in range(g, g + group_size):
            if step_rewards[i]:
                norm = (torch.tensor(step_rewards[i], dtype=torch.float32) - mean) / (std + eps)  # (steps,)
                placed_NT[i].index_add_(0, torch.tensor(step_ends[i], dtype=torch.long), norm)
    return placed_NT.flip(-1).cumsum(-1).flip(-1)  # (N, T) sum over steps ending at or after each column


def hybrid_advantages(process_NT: torch.Tensor, outcome_N: torch.Tensor, process_weight: float) -> torch.Tensor:
    """(N, T) w * process advantage + (1 - w) * the completion's outcome advantage at every token."""
    return process_weight * process_NT + (1.0 - process_weight) * outcome_N[:, None].float()


def zero_variance_groups(rewards_N: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) True for groups whose rewards are all equal: no learning signal (DAPO filters them)."""
    r_BG = rewards_N.view(-1, group_size)
    return (r_BG == r_BG[:, :1]).all(dim=1)


# ---------------------------------------------------------------------------------------------
# KL, entropy, overlong


def kl_estimate(logp_NT: torch.Tensor, ref_logp_NT: torch.Tensor, kind: KLEstimator = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from samples of pi (N, T).

    k1 = log pi - log ref (unbiased, high variance, can be negative); k2 = (log pi - log ref)^2 / 2
    (biased, low variance; its gradient is that of the KL); k3 = exp(-d) + d - 1 with
    d = log pi - log ref (unbiased, non-negative; GRPO's choice)."""
    d = logp_NT - ref_logp_NT
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return torch.exp(-d) + d - 1.0
    raise ValueError(f"unknown KL estimator {kind!r}")


def entropy_from_logits(logits_NTV: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's softmax (N, T), in nats."""
    logp = torch.log_softmax(logits_NTV.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def soft_overlong_penalty(lengths_N: torch.Tensor, max_len: int, cache_len: int) -> torch.Tensor:
    """DAPO's soft overlong punishment (eq. 13), (N,): 0 up to ``max_len - cache_len`` tokens, then
    falling linearly to -1 at ``max_len``, and -1 beyond."""
    start = max_len - cache_len
    pen = (start - lengths_N.float()) / max(cache_len, 1)
    return pen.clamp(min=-1.0, max=0.0)


# ---------------------------------------------------------------------------------------------
# Per-token policy losses


@dataclass
class LossSettings:
    """What shapes the per-token loss; the recipe builds it from RLConfig."""

    loss_type: LossType = "ppo"
    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float = 0.0  # c > 1 enables the dual clip for A < 0; 0 disables it
    sapo_tau_pos: float = 1.0
    sapo_tau_neg: float = 1.05
    aggregation: Aggregation = "token_mean"
    norm_len: int = 1  # Dr. GRPO's constant: the completion budget (max_new_tokens)


@dataclass
class TokenLoss:
    per_token_NT: torch.Tensor  # loss of each token (before aggregation and masking)
    ratio_NT: torch.Tensor  # importance ratio that entered the loss (sequence-level for GSPO), detached
    clipped_low_NT: torch.Tensor  # bool: A < 0 and the ratio sits below 1 - eps_low (no gradient for PPO/GSPO)
    clipped_high_NT: torch.Tensor  # bool: A > 0 and the ratio sits above 1 + eps_high


def token_losses(logp_NT: torch.Tensor, old_logp_NT: torch.Tensor, adv_N: torch.Tensor, mask_NT: torch.Tensor, s: LossSettings) -> TokenLoss:
    """Per-token loss of the chosen surrogate; masked positions carry garbage and must be masked.
    ``adv_N`` is one advantage per sequence (N,), or one per token (N, T) (process supervision)."""
    adv = adv_N[:, None].float() if adv_N.dim() == 1 else adv_N.float()  # (N, 1) or (N, T)
    mask = mask_NT.float()
    log_ratio = logp_NT - old_logp_NT  # (N, T)
    if s.loss_type == "gspo":
        # Sequence ratio exp(mean_t log r_t); GSPO-token: its value for every token, and the
        # gradient of each token's own log-prob (sg[s] * pi / sg[pi]).
        n = mask.sum(-1, keepdim=True).clamp(min=1.0)  # (N, 1)
        seq_log_ratio = (log_ratio * mask).sum(-1, keepdim=True) / n  # (N, 1)
        log_ratio = seq_log_ratio.detach() + logp_NT - logp_NT.detach()  # (N, T)
    ratio = torch.exp(log_ratio)  # (N, T)
    low, high = 1.0 - s.eps_low, 1.0 + s.eps_high
    clipped_low = (adv < 0) & (ratio.detach() < low)
    clipped_high = (adv > 0) & (ratio.detach() > high)
    if s.loss_type in ("ppo", "gspo"):
        unclipped = ratio * adv
        clipped = ratio.clamp(low, high) * adv
        per_token = -torch.minimum(unclipped, clipped)  # (N, T)
        if s.dual_clip > 0:
            # Dual clip: with A < 0 the surrogate -r A grows without bound in r; cap it at -c A.
            capped = torch.minimum(per_token, -s.dual_clip * adv)
            per_token = torch.where(adv < 0, capped, per_token)
    elif s.loss_type == "cispo":
        weight = ratio.clamp(low, high).detach()
        per_token = -weight * adv * logp_NT
    elif s.loss_type == "sapo":
        tau = torch.where(adv > 0, torch.full_like(adv, s.sapo_tau_pos), torch.full_like(adv, s.sapo_tau_neg))
        gate = torch.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau  # slope 1 at r = 1, like the plain ratio
        per_token = -gate * adv
        clipped_low = clipped_high = torch.zeros_like(clipped_low)  # nothing is hard-clipped
    else:
        raise ValueError(f"unknown loss type {s.loss_type!r}")
    return TokenLoss(per_token, ratio.detach(), clipped_low, clipped_high)


def aggregate(per_token_NT: torch.Tensor, mask_NT: torch.Tensor, mode: Aggregation, total_tokens: float, total_seqs: float, norm_len: int = 1) -> torch.Tensor:
    """This micro-batch's share of the mini-batch loss.

    ``total_tokens`` and ``total_seqs`` are the counts over the whole mini-batch (all its micro-
    batches): ``token_mean`` = sum of token losses / all tokens (DAPO); ``seq_mean_token_mean`` =
    mean over sequences of each sequence's token mean (GRPO's original); ``seq_mean_token_sum_norm``
    = mean over sequences of each sequence's token sum / ``norm_len`` (Dr. GRPO)."""
    mask = mask_NT.float()
    if mode == "token_mean":
        return (per_token_NT * mask).sum() / max(total_tokens, 1.0)
    seq_sum_N = (per_token_NT * mask).sum(-1)  # (N,)
    if mode == "seq_mean_token_mean":
        return (seq_sum_N / mask.sum(-1).clamp(min=1.0)).sum() / max(total_seqs, 1.0)
    if mode == "seq_mean_token_sum_norm":
        return (seq_sum_N / norm_len).sum() / max(total_seqs, 1.0)
    raise ValueError(f"unknown aggregation {mode!r}")


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor  # scalar to minimise (this micro-batch's share)
    clip_frac: float  # fraction of tokens whose ratio was clipped (low + high)
    kl: float  # mean KL estimate to the reference over completion tokens (0 without reference)
    ratio_mean: float
    clip_low_frac: float = 0.0
    clip_high_frac: float = 0.0
    entropy: float = 0.0  # mean token entropy when given


def policy_loss(
    logp_NT: torch.Tensor,
    old_logp_NT: torch.Tensor,
    adv_N: torch.Tensor,
    mask_NT: torch.Tensor,
    clip_eps: float,
    ref_logp_NT: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    settings: LossSettings | None = None,
    kl_estimator: KLEstimator = "k3",
    is_weight_NT: torch.Tensor | None = None,
    entropy_NT: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    totals: tuple[float, float] | None = None,
) -> PolicyLossOutput:
    """Surrogate (+ KL penalty, - entropy bonus), aggregated; the whole loss of one micro-batch.

    Without ``settings`` it is GRPO's PPO clip with ``clip_eps`` on both sides and token-mean
    aggregation. ``is_weight_NT`` (truncated importance weights, detached) multiplies the
    surrogate per token. ``totals`` = (tokens, sequences) of the whole mini-batch when this is one
    micro-batch of several; by default this batch's own counts."""
    s = settings if settings is not None else LossSettings(eps_low=clip_eps, eps_high=clip_eps)
    mask = mask_NT.float()
    n_tokens = float(mask.sum())
    total_tokens, total_seqs = totals if totals is not None else (n_tokens, float(mask_NT.shape[0]))
    tl = token_losses(logp_NT, old_logp_NT, adv_N, mask_NT, s)
    per_token = tl.per_token_NT
    if is_weight_NT is not None:
        per_token = per_token * is_weight_NT
    kl_value = 0.0
    if ref_logp_NT is not None and kl_coef > 0:
        kl_NT = kl_estimate(logp_NT, ref_logp_NT, kl_estimator)
        per_token = per_token + kl_coef * kl_NT
        kl_value = float((kl_NT.detach() * mask).sum() / max(n_tokens, 1.0))
    ent_value = 0.0
    if entropy_NT is not None:
        if entropy_coef > 0:
            per_token = per_token - entropy_coef * entropy_NT
        ent_value = float((entropy_NT.detach() * mask).sum() / max(n_tokens, 1.0))
    loss = aggregate(per_token, mask_NT, s.aggregation, total_tokens, total_seqs, s.norm_len)
    with torch.no_grad():
        denom = max(n_tokens, 1.0)
        low = float((tl.clipped_low_NT.float() * mask).sum() / denom)
        high = float((tl.clipped_high_NT.float() * mask).sum() / denom)
        ratio_mean = float((tl.ratio_NT * mask).sum() / denom)
    return PolicyLossOutput(loss, low + high, kl_value, ratio_mean, low, high, ent_value)
