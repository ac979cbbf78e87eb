"""DeepSeekMoE / DeepSeek-V3 feed-forward: shared experts plus fine-grained routed experts, dropless.

Follows DeepSeekMoE (arXiv:2401.06066): many small routed experts (fine-grained segmentation), a
few always-on shared experts (shared expert isolation), top-k selection and the expert-level
balance loss (eq. 12). DeepSeek-V3 (arXiv:2412.19437, sec. 2.1.2) adds, each selectable here:

- a sigmoid router whose chosen affinities are normalised and scaled by ``routed_scaling_factor``;
- group-limited routing: experts fall in ``n_group`` groups, each group is scored by the sum of
  its two highest affinities, and only the best ``topk_group`` groups stay eligible;
- auxiliary-loss-free balancing: a per-expert fp32 bias added to the affinities only to *choose*
  the top-k, never to weight them, moved by gamma * sign(mean load - load) once per optimizer
  step from the load of that step's training passes (``after_optimizer_step``);
- the complementary sequence-wise balance loss (eq. 17-20).

Departures: (1) with the softmax router the chosen top-k weights are renormalised to sum to one
(``norm_topk_prob``, default True, as in DeepSeek-V2/V3 and HF's DeepseekV3); DeepSeekMoE's
eq. 5 keeps the raw softmax probabilities. Set ``model.norm_topk_prob false`` for the paper's
form. (2) group scores use the top-2 sum for both routers (DeepSeek-V2's softmax took the max).
(3) The bias is mean-centred after each update (the report leaves its offset free; centring
keeps it from drifting, and the selection only depends on differences).

Dispatch follows torchtitan's MoE and DESIGN.md: the router runs in fp32; token-slots are sorted
by expert so each expert multiplies one contiguous slice, with ``torch.nn.functional.grouped_mm``
where it runs forward and backward for the device and dtype (probed once when the layer is
built), else ``split`` + ``unbind`` of a stacked weight (no ``W[e]`` in a loop: its backward
allocates a full-size zero gradient per expert); results are weighted and ``index_add_``-ed back.
On CPU ``grouped_mm`` is torch's fallback, a loop of the very ``mm`` calls that split + unbind
makes (bit-identical at the presets' widths, tested); it is still the choice there: up to 2.8x
faster at a few token-slots per expert (decoding), level within this machine's noise at hundreds
(measured, docs/architecture.md).
The gate weights each slot's hidden activations when the experts' hidden width is below the
model width (fewer columns to multiply), else its output (``MoE.gate_before_down``, set at build).
No capacity factor, so no token is dropped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
# Routing: pure functions


@dataclass
class RouterOutput:
    weights_NK: torch.Tensor  # gate weight of each chosen expert, fp32
    experts_NK: torch.Tensor  # chosen expert ids (int64)
    probs_NE: torch.Tensor  # affinities normalised over all experts, fp32 (for the balance losses)


def route(logits_NE: torch.Tensor, top_k: int, score_func: Literal["softmax", "sigmoid"] = "softmax",
          bias_E: torch.Tensor | None = None, n_group: int = 1, topk_group: int = 1,
          norm_topk_prob: bool = True, routed_scaling_factor: float = 1.0) -> RouterOutput:
    """Choose ``top_k`` experts per token from fp32 router logits (DeepSeek-V3 eq. 12-16).

    ``bias_E`` shifts the scores used for choosing (groups and experts) but not the weights."""
    logits_NE = logits_NE.float()
    scores_NE = logits_NE.softmax(dim=-1) if score_func == "softmax" else logits_NE.sigmoid()
    choice_NE = scores_NE if bias_E is None else scores_NE + bias_E
    if n_group > 1:
        N, E = choice_NE.shape
        per_group = choice_NE.view(N, n_group, E // n_group)  # (N, G, E/G)
        group_score_NG = per_group.topk(min(2, E // n_group), dim=-1).values.sum(-1)
        keep_NG = torch.zeros_like(group_score_NG, dtype=torch.bool)
        keep_NG.scatter_(1, group_score_NG.topk(topk_group, dim=-1).indices, True)
        choice_NE = choice_NE.masked_fill(~keep_NG.repeat_interleave(E // n_group, dim=1), float("-inf"))
    experts_NK = choice_NE.topk(top_k, dim=-1).indices  # (N, K)
    weights_NK = scores_NE.gather(1, experts_NK)  # (N, K) unbiased affinities
    if norm_topk_prob:
        weights_NK = weights_NK / weights_NK.sum(dim=-1, keepdim=True)
    if routed_scaling_factor != 1.0:
        weights_NK = weights_NK * routed_scaling_factor
    probs_NE = scores_NE if score_func == "softmax" else scores_NE / scores_NE.sum(-1, keepdim=True)
    return RouterOutput(weights_NK, experts_NK, probs_NE)


def expert_balance_loss(probs_NE: torch.Tensor, experts_NK: torch.Tensor, real_N: torch.Tensor) -> torch.Tensor:
    """DeepSeekMoE eq. 12 without alpha: sum_i f_i P_i over the batch's real tokens, with
    f_i = E/(K N) * (slots routed to i) and P_i the mean affinity of i. Minimum 1 when even."""
    N, E = probs_NE.shape
    K = experts_NK.shape[1]
    n_real = real_N.sum().clamp(min=1.0)
    load_E = torch.zeros(E, device=probs_NE.device).index_add_(0, experts_NK.reshape(-1), real_N.repeat_interleave(K))
    f_E = load_E * (E / (K * n_real))
    p_E = (probs_NE * real_N[:, None]).sum(0) / n_real
    return (f_E.detach() * p_E).sum()


def sequence_balance_loss(probs_BTE: torch.Tensor, experts_BTK: torch.Tensor, real_BT: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V3 eq. 17-20 without alpha: the expert-level loss computed within each sequence
    (its real tokens only), averaged over sequences that have any."""
    B, T, E = probs_BTE.shape
    K = experts_BTK.shape[-1]
    real = real_BT.float()
    n_B = real.sum(1)  # (B,)
    hits_BE = torch.zeros(B, E, device=probs_BTE.device).scatter_add_(1, experts_BTK.reshape(B, T * K), real.repeat_interleave(K, dim=1))
    f_BE = hits_BE * (E / K) / n_B.clamp(min=1.0)[:, None]
    p_BE = (probs_BTE * real[..., None]).sum(1) / n_B.clamp(min=1.0)[:, None]
    per_seq_B = (f_BE.detach() * p_BE).sum(1)
    has = (n_B > 0).float()
    return (per_seq_B * has).sum() / has.sum().clamp(min=1.0)


def bias_update(bias_E: torch.Tensor, load_E: torch.Tensor, gamma: float) -> torch.Tensor:
    """DeepSeek-V3's aux-free step: raise the bias of under-loaded experts and lower that of
    over-loaded ones by ``gamma``, then mean-centre. ``load_E`` sums every training pass of one
    optimizer step."""
    load_E = load_E.float()
    new_E = bias_E + gamma * torch.sign(load_E.mean() - load_E)
    return new_E - new_E.mean()


# ---------------------------------------------------------------------------------------------
# Modules


class Router(nn.Module):
    """Linear affinities in fp32 (bf16 logits flip near-tied top-k choices between sampler and
    trainer), then ``route``. The sigmoid router owns the aux-free bias buffer (saved in
    checkpoints, as HF's ``e_score_correction_bias``)."""

    def __init__(self, d_model: int, n_experts: int, top_k: int, score_func: str = "softmax", n_group: int = 1,
                 topk_group: int = 1, norm_topk_prob: bool = True, routed_scaling_factor: float = 1.0):
        super().__init__()
        self.top_k, self.score_func, self.n_group, self.topk_group = top_k, score_func, n_group, topk_group
        self.norm_topk_prob, self.routed_scaling_factor = norm_topk_prob, routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(n_experts, d_model))
        self.bias_E: torch.Tensor | None
        if score_func == "sigmoid":
            self.register_buffer("bias_E", torch.zeros(n_experts, dtype=torch.float32))
        else:
            self.bias_E = None

    def forward(self, x_ND: torch.Tensor) -> RouterOutput:
        with torch.autocast(x_ND.device.type, enabled=False):  # bf16 autocast on a GPU must not reach the router
            logits_NE = F.linear(x_ND.float(), self.weight.float())
        return route(logits_NE, self.top_k, self.score_func, self.bias_E, self.n_group, self.topk_group,
                     self.norm_topk_prob, self.routed_scaling_factor)


class SwiGLU(nn.Module):
    """The FFN of LLaMA/DeepSeek: w2(silu(w1 x) * w3 x)."""

    def __init__(self, d_model: int, d_hidden: int):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_hidden, bias=False)
        self.w3 = nn.Linear(d_model, d_hidden, bias=False)
        self.w2 = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


@functools.cache
def grouped_mm_works(device_type: str, dtype: torch.dtype) -> bool:
    """Whether ``F.grouped_mm`` runs forward *and* backward for this device and dtype (torch
    2.13 has CPU kernels; older versions and some GPUs do not), checked once on a tiny problem."""
    try:
        x = torch.ones(4, 8, device=device_type, dtype=dtype, requires_grad=True)  # no RNG draw: builds stay seeded
        w = torch.ones(2, 8, 16, device=device_type, dtype=dtype, requires_grad=True)
        y = F.grouped_mm(x, w, offs=torch.tensor([1, 4], device=device_type, dtype=torch.int32))
        y.backward(torch.ones_like(y))  # a real gradient: an expanded one (stride 0) is refused
        return True
    except (RuntimeError, NotImplementedError):
        return False


def use_grouped_mm(grouped_mm_runs: bool, dispatch: str = "auto") -> bool:
    """The dispatch rule: ``grouped_mm`` wherever it runs forward and backward for the device and
    dtype, CPU included, else split + unbind. Measured on CPU (one thread, the two paths timed in
    turns): grouped_mm takes 0.36-0.87x split's time at 1-64 tokens (fewer Python calls per
    expert) and 0.94-1.11x at 384-768 token-slots per expert, where split's apparent wins did not
    repeat (docs/architecture.md). ``dispatch`` "grouped_mm" or "split" forces a path for
    benchmarks and tests (forcing grouped_mm where it does not run gives split)."""
    return dispatch != "split" and grouped_mm_runs


class GroupedExperts(nn.Module):
    """E SwiGLU experts stored as stacked weights, applied to expert-sorted token slices.
    ``use_grouped_mm`` says whether ``F.grouped_mm`` runs for the weights' device and dtype;
    ``dispatch`` ("auto", "grouped_mm", "split") forces a path, for benchmarks and tests."""

    def __init__(self, n_experts: int, d_model: int, d_hidden: int):
        super().__init__()
        self.w1_EDH = nn.Parameter(torch.empty(n_experts, d_model, d_hidden))
        self.w3_EDH = nn.Parameter(torch.empty(n_experts, d_model, d_hidden))
        self.w2_EHD = nn.Parameter(torch.empty(n_experts, d_hidden, d_model))
        self.use_grouped_mm = grouped_mm_works("cpu", torch.float32)
        self.dispatch = "auto"

    def _apply(self, fn, recurse=True):  # .to(device/dtype): choose the kernel again, once
        out = super()._apply(fn, recurse)
        self.use_grouped_mm = grouped_mm_works(self.w1_EDH.device.type, self.w1_EDH.dtype)
        return out

    def forward(self, x_SD: torch.Tensor, counts_E: torch.Tensor, gate_S: torch.Tensor | None = None) -> torch.Tensor:
        """``x_SD`` holds S token-slots sorted by expert, ``counts_E[e]`` of them for expert e.
        ``gate_S`` (optional) weights each slot's hidden activations before the down-projection,
        which equals weighting its output (w2 is linear) on H instead of D columns.

        Under autocast (bf16 on a GPU) the experts compute in the autocast dtype, with the
        grouped GEMM when it runs for that dtype: autocast does not cover ``grouped_mm``."""
        w1_EDH, w3_EDH, w2_EHD, grouped_runs, out_dtype = self.w1_EDH, self.w3_EDH, self.w2_EHD, self.use_grouped_mm, x_SD.dtype
        if torch.is_autocast_enabled(x_SD.device.type):
            dt = torch.get_autocast_dtype(x_SD.device.type)
            x_SD, w1_EDH, w3_EDH, w2_EHD = (t.to(dt) for t in (x_SD, w1_EDH, w3_EDH, w2_EHD))
            gate_S = gate_S.to(dt) if gate_S is not None else None
            grouped_runs = grouped_mm_works(x_SD.device.type, dt)
        if use_grouped_mm(grouped_runs, self.dispatch):
            offs_E = counts_E.cumsum(0).to(torch.int32)
            up_SH = F.grouped_mm(x_SD, w3_EDH, offs=offs_E)
            h_SH = F.silu(F.grouped_mm(x_SD, w1_EDH, offs=offs_E)) * (up_SH if gate_S is None else up_SH * gate_S[:, None])
            return F.grouped_mm(h_SH, w2_EHD, offs=offs_E).to(out_dtype)  # (S, D)
        outs = []
        gates = [None] * len(counts_E) if gate_S is None else gate_S.split(counts_E.tolist())
        for x, g, w1, w3, w2 in zip(x_SD.split(counts_E.tolist()), gates, w1_EDH.unbind(0), w3_EDH.unbind(0), w2_EHD.unbind(0)):
            up = x @ w3
            outs.append((F.silu(x @ w1) * (up if g is None else up * g[:, None])) @ w2)
        return torch.cat(outs).to(out_dtype)  # (S, D)


@dataclass
class MoEStats:
    aux_loss: torch.Tensor  # scalar, differentiable: the weighted balance losses (0 when off or in eval)
    load_E: torch.Tensor  # real token-slots routed to each expert in this call (detached)


class MoE(nn.Module):
    """Shared experts + routed experts. Training passes (train mode with gradients enabled) add
    their real-token load to ``load_acc_E``, which ``after_optimizer_step`` consumes."""

    def __init__(self, d_model: int, n_routed: int, n_shared: int, top_k: int, d_expert: int, aux_loss_coef: float,
                 router: str = "softmax", n_group: int = 1, topk_group: int = 1, norm_topk_prob: bool = True,
                 routed_scaling_factor: float = 1.0, seq_aux_loss_coef: float = 0.0,
                 bias_update_speed: float = 0.0, bias_update_stop: int = 0):
        super().__init__()
        self.n_routed, self.top_k, self.aux_loss_coef, self.seq_aux_loss_coef = n_routed, top_k, aux_loss_coef, seq_aux_loss_coef
        self.bias_update_speed, self.bias_update_stop = bias_update_speed, bias_update_stop
        self.router = Router(d_model, n_routed, top_k, router, n_group, topk_group, norm_topk_prob, routed_scaling_factor)
        self.experts = GroupedExperts(n_routed, d_model, d_expert)
        self.shared = SwiGLU(d_model, d_expert * n_shared) if n_shared > 0 else None
        # Not saved: checkpoints are written after the optimizer step that empties it.
        self.register_buffer("load_acc_E", torch.zeros(n_routed, dtype=torch.float32), persistent=False)
        # Where the gate multiplies, chosen once here: on the experts' hidden activations (H
        # columns) when they are narrower than their outputs (D columns), else on the outputs.
        # The same function (w2 is linear), other float rounding; ~1.1x faster at D=256, H=128 and
        # D=512, H=256 (benchmarks/moe_layer.py, docs/architecture.md). At H == D (`r1lab zero`'s
        # default) it stays on the outputs, so the default figures are unchanged bit for bit.
        self.gate_before_down = d_expert < d_model

    def forward(self, x_BTD: torch.Tensor, token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, MoEStats]:
        """``token_mask`` (B, T) marks real tokens; padding is routed too (dropless and cheap)
        but left out of the balance losses and load statistics."""
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(-1, D)
        route_ = self.router(x_ND)
        N, K = route_.experts_NK.shape

        flat_expert_S = route_.experts_NK.reshape(-1)  # (S = N*K,)
        order_S = flat_expert_S.argsort(stable=True)
        token_S = order_S // K  # which token each sorted slot came from
        counts_E = torch.bincount(flat_expert_S, minlength=self.n_routed)  # (E,)
        gate_S = route_.weights_NK.reshape(-1)[order_S].to(x_ND.dtype)
        # index_select, not x_ND[token_S]: indexing's backward (index_put_ with accumulate) summed a
        # token's K slot gradients in an order that varied between runs on CPU with two threads
        # (seen at 4096 tokens, top-6, D = 256); index_select's (index_add_) is the same on every
        # run and, with one thread, bit-identical to indexing's (checked at zero's and v3-tiny's widths).
        x_SD = x_ND.index_select(0, token_S)
        if self.gate_before_down:
            y_ND = torch.zeros_like(x_ND).index_add_(0, token_S, self.experts(x_SD, counts_E, gate_S))
        else:
            y_ND = torch.zeros_like(x_ND).index_add_(0, token_S, self.experts(x_SD, counts_E) * gate_S[:, None])
        if self.shared is not None:
            y_ND = y_ND + self.shared(x_ND)

        real_N = token_mask.reshape(-1).to(torch.float32) if token_mask is not None else torch.ones(N, device=x_ND.device)
        load_E = torch.zeros(self.n_routed, device=x_ND.device).index_add_(0, flat_expert_S, real_N.repeat_interleave(K))
        aux = x_ND.new_zeros((), dtype=torch.float32)
        if self.training:
            if self.aux_loss_coef > 0:
                aux = aux + self.aux_loss_coef * expert_balance_loss(route_.probs_NE, route_.experts_NK, real_N)
            if self.seq_aux_loss_coef > 0:
                aux = aux + self.seq_aux_loss_coef * sequence_balance_loss(
                    route_.probs_NE.view(B, T, -1), route_.experts_NK.view(B, T, K), real_N.view(B, T))
            if torch.is_grad_enabled():  # a training pass: sampling and evaluation never move the bias
                self.load_acc_E += load_E.detach()
        return y_ND.view(B, T, D), MoEStats(aux_loss=aux, load_E=load_E.detach())


def moe_layers(model: nn.Module) -> list[MoE]:
    return [m for m in model.modules() if isinstance(m, MoE)]


def after_optimizer_step(model: nn.Module, step: int, stepped: bool = True) -> torch.Tensor | None:
    """Call once per optimizer step (``step`` counts from 1). Returns the step's load (MoE layers,
    experts), summed over its training passes, and empties the accumulators; when ``stepped`` and
    the layer balances without a loss, moves its bias by ``bias_update`` (gamma falls to 0 after
    ``bias_update_stop`` steps when that is positive). ``stepped=False`` (a skipped non-finite
    step) discards the load without moving the bias. None for a dense model.

    Under torchrun every rank calls it at the same step: the loads are summed over ranks first
    (DESIGN.md: "from load summed over micro-batches and ranks"), so every rank moves its bias
    by the same amount and the biases stay equal."""
    layers = moe_layers(model)
    if not layers:
        return None
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        acc_LE = torch.stack([m.load_acc_E for m in layers])  # (L, E)
        torch.distributed.all_reduce(acc_LE)
        for m, load_E in zip(layers, acc_LE):
            m.load_acc_E.copy_(load_E)
    loads = []
    for m in layers:
        load_E = m.load_acc_E.clone()
        gamma = m.bias_update_speed if m.bias_update_stop <= 0 or step <= m.bias_update_stop else 0.0
        if stepped and gamma > 0 and m.router.bias_E is not None and load_E.sum() > 0:
            m.router.bias_E.copy_(bias_update(m.router.bias_E, load_E, gamma))
        m.load_acc_E.zero_()
        loads.append(load_E)
    return torch.stack(loads)  # (L, E)


def balance_metrics(model: nn.Module, load_LE: torch.Tensor | None) -> dict[str, float]:
    """Per MoE layer L (counted from 0 over MoE layers only): max/mean load, dead experts (no
    token-slot this step), bias norm; plus their means/sums over layers. Exact names, for
    metrics.jsonl: ``moe/load_max_over_mean``, ``moe/layer{L}/load_max_over_mean``, ..."""
    if load_LE is None:
        return {}
    ratio_L = load_LE.max(dim=1).values / load_LE.mean(dim=1).clamp(min=1e-9)
    dead_L = (load_LE == 0).sum(dim=1)
    out = {"moe/load_max_over_mean": float(ratio_L.mean()), "moe/dead_experts": int(dead_L.sum())}
    for L, m in enumerate(moe_layers(model)):
        out[f"moe/layer{L}/load_max_over_mean"] = float(ratio_L[L])
        out[f"moe/layer{L}/dead_experts"] = int(dead_L[L])
        if m.router.bias_E is not None:
            out[f"moe/layer{L}/bias_norm"] = float(m.router.bias_E.norm())
    return out
