"""DeepSeekMoE feed-forward: shared experts plus fine-grained routed experts, top-k, dropless.

Follows DeepSeekMoE (arXiv:2401.06066): many small routed experts (fine-grained segmentation)
and a few always-on shared experts (shared expert isolation), softmax gate, top-k selection, and
the expert-level balance loss (eq. 12). DeepSeek-V3's sigmoid gate with aux-loss-free bias is a
different ``Router``; the MoE layer only needs (weights, indices, scores) from it.

Dispatch follows torchtitan's MoE and DESIGN.md: the router runs in fp32; token-slots are sorted
by expert so each expert multiplies one contiguous slice (``split`` + ``unbind`` of a stacked
weight, no ``W[e]`` in a loop: its backward allocates a full-size zero gradient per expert);
results are weighted and ``index_add_``-ed back. No capacity factor, so no token is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class RouterOutput:
    weights_NK: torch.Tensor  # gate weight of each chosen expert, fp32
    experts_NK: torch.Tensor  # chosen expert ids (int64)
    scores_NE: torch.Tensor  # full fp32 gate distribution (for the balance loss)


class SoftmaxRouter(nn.Module):
    """Softmax over expert affinities, top-k, weights renormalised over the chosen k."""

    def __init__(self, d_model: int, n_experts: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.weight = nn.Parameter(torch.empty(n_experts, d_model))

    def forward(self, x_ND: torch.Tensor) -> RouterOutput:
        # fp32 routing: bf16 logits flip near-tied top-k choices between sampler and trainer.
        logits_NE = F.linear(x_ND.float(), self.weight.float())
        scores_NE = logits_NE.softmax(dim=-1)
        weights_NK, experts_NK = scores_NE.topk(self.top_k, dim=-1)
        weights_NK = weights_NK / weights_NK.sum(dim=-1, keepdim=True)
        return RouterOutput(weights_NK, experts_NK, scores_NE)


class SwiGLU(nn.Module):
    """The FFN of LLaMA/DeepSeek: w2(silu(w1 x) * w3 x)."""

    def __init__(self, d_model: int, d_hidden: int):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_hidden, bias=False)
        self.w3 = nn.Linear(d_model, d_hidden, bias=False)
        self.w2 = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class GroupedExperts(nn.Module):
    """E SwiGLU experts stored as stacked weights, applied to expert-sorted token slices."""

    def __init__(self, n_experts: int, d_model: int, d_hidden: int):
        super().__init__()
        self.w1_EDH = nn.Parameter(torch.empty(n_experts, d_model, d_hidden))
        self.w3_EDH = nn.Parameter(torch.empty(n_experts, d_model, d_hidden))
        self.w2_EHD = nn.Parameter(torch.empty(n_experts, d_hidden, d_model))

    def forward(self, x_SD: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """``x_SD`` holds S token-slots sorted by expert, ``counts[e]`` of them for expert e."""
        outs = []
        for x, w1, w3, w2 in zip(x_SD.split(counts), self.w1_EDH.unbind(0), self.w3_EDH.unbind(0), self.w2_EHD.unbind(0)):
            outs.append((F.silu(x @ w1) * (x @ w3)) @ w2)
        return torch.cat(outs)  # (S, D)


@dataclass
class MoEStats:
    aux_loss: torch.Tensor  # scalar, differentiable (0 when the coefficient is 0)
    load_E: torch.Tensor  # token-slots routed to each expert in this call (detached)


class MoE(nn.Module):
    def __init__(self, d_model: int, n_routed: int, n_shared: int, top_k: int, d_expert: int, aux_loss_coef: float):
        super().__init__()
        self.n_routed, self.top_k, self.aux_loss_coef = n_routed, top_k, aux_loss_coef
        self.router = SoftmaxRouter(d_model, n_routed, top_k)
        self.experts = GroupedExperts(n_routed, d_model, d_expert)
        self.shared = SwiGLU(d_model, d_expert * n_shared) if n_shared > 0 else None

    def forward(self, x_BTD: torch.Tensor, token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, MoEStats]:
        """``token_mask`` (B, T) marks real tokens; padding is routed too (dropless and cheap)
        but left out of the balance loss and load statistics."""
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(-1, D)
        route = self.router(x_ND)
        N, K = route.experts_NK.shape

        flat_expert_S = route.experts_NK.reshape(-1)  # (S = N*K,)
        order_S = flat_expert_S.argsort(stable=True)
        token_S = order_S // K  # which token each sorted slot came from
        counts_E = torch.bincount(flat_expert_S, minlength=self.n_routed)  # (E,)
        out_SD = self.experts(x_ND[token_S], counts_E.tolist())
        gate_S = route.weights_NK.reshape(-1)[order_S].to(out_SD.dtype)
        y_ND = torch.zeros_like(x_ND).index_add_(0, token_S, out_SD * gate_S[:, None])
        if self.shared is not None:
            y_ND = y_ND + self.shared(x_ND)

        real_N = token_mask.reshape(-1).to(torch.float32) if token_mask is not None else torch.ones(N, device=x_ND.device)
        slot_weight_S = real_N.repeat_interleave(K)
        load_E = torch.zeros(self.n_routed, device=x_ND.device).index_add_(0, flat_expert_S, slot_weight_S)
        aux = self._balance_loss(route.scores_NE, load_E, real_N) if self.aux_loss_coef > 0 and self.training else x_ND.new_zeros(())
        return y_ND.view(B, T, D), MoEStats(aux_loss=aux, load_E=load_E.detach())

    def _balance_loss(self, scores_NE: torch.Tensor, load_E: torch.Tensor, real_N: torch.Tensor) -> torch.Tensor:
        # DeepSeekMoE eq. 12: alpha * sum_i f_i P_i, f_i = E/(K N) * load_i, P_i = mean prob of i.
        n_real = real_N.sum().clamp(min=1.0)
        f_E = load_E * (self.n_routed / (self.top_k * n_real))
        p_E = (scores_NE * real_N[:, None]).sum(0) / n_real
        return self.aux_loss_coef * (f_E.detach() * p_E).sum()
