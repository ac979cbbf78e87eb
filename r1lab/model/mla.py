"""Multi-head latent attention (DeepSeek-V2, arXiv:2405.04434, sec. 2.1; DeepSeek-V3 sec. 2.1.1).

Keys and values come from one compressed latent c_t = RMSNorm(W_DKV h_t) of width
``kv_lora_rank``; each head's key is [W_UK c_t ; k_rope_t] and its value W_UV c_t, where the
rotary part k_rope_t = RoPE(W_KR h_t) has ``qk_rope_head_dim`` dims shared by all heads
(decoupled RoPE: rotary positions cannot pass through the absorbed up-projection). Queries are
[q_nope ; RoPE(q_rope)] per head, optionally from their own compressed latent (``q_lora_rank``).
The cache holds only c_t and k_rope_t: (kv_lora_rank + qk_rope_head_dim) numbers per token and
layer, against 2 * n_kv_heads * head_dim for GQA.

Two equal computations (tested): without a cache (training, the log-prob pass) keys and values
are expanded per head, as in the paper's equations. With a cache (sampling) the up-projections
are absorbed: q_nope W_UK is scored directly against the cached latents and the attention output
in latent space is multiplied by W_UV, so nothing of size (heads x cached length) is ever
expanded. We chose absorption for every cached call because decoding then costs O(S * r) per
head instead of re-expanding all S cached latents to keys and values at each step
(benchmarks/decode.py measures it). Departure: rotary positions rotate halves (as in
transformer.py), not DeepSeek's interleaved pairs; an equivalent layout, since permuting the
rotary rows turns one into the other (``r1lab.model.hf`` does so to read and write DeepseekV3).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from r1lab.config import ModelConfig
from r1lab.model.layers import RMSNorm, apply_rope, take_rows
from r1lab.model.tree import PrefixTree


class LatentCache:
    """Pre-allocated MLA cache of every layer: normalised KV latents and shared rotary keys."""

    def __init__(self, n_layers: int, batch: int, max_len: int, kv_lora_rank: int, rope_dim: int, dtype: torch.dtype, device: torch.device | str = "cpu"):
        self.latent = torch.zeros((n_layers, batch, max_len, kv_lora_rank), dtype=dtype, device=device)
        self.k_rope = torch.zeros((n_layers, batch, max_len, rope_dim), dtype=dtype, device=device)
        self.length = 0

    def update(self, layer: int, c_BTr: torch.Tensor, kr_BTd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + c_BTr.shape[1]
        self.latent[layer, :, start:end] = c_BTr
        self.k_rope[layer, :, start:end] = kr_BTd
        return self.latent[layer, :, :end], self.k_rope[layer, :, :end]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only batch rows ``rows`` (in that order, repeats allowed), as ``KVCache.keep_rows``."""
        self.latent, self.k_rope = (take_rows(x, rows, self.length, slot_dim=2) for x in (self.latent, self.k_rope))

    def bytes_per_token(self) -> int:
        """Cache bytes per token over all layers."""
        L, _, _, r = self.latent.shape
        return L * (r + self.k_rope.shape[-1]) * self.latent.element_size()


class MLAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.H, self.r = cfg.n_heads, cfg.kv_lora_rank
        self.dn, self.dr, self.dv = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        D, H = cfg.d_model, cfg.n_heads
        self.q_lora = cfg.q_lora_rank > 0
        if self.q_lora:
            self.wq_a = nn.Linear(D, cfg.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(cfg.q_lora_rank)
            self.wq_b = nn.Linear(cfg.q_lora_rank, H * (self.dn + self.dr), bias=False)
        else:
            self.wq = nn.Linear(D, H * (self.dn + self.dr), bias=False)
        self.wkv_a = nn.Linear(D, self.r + self.dr, bias=False)
        self.kv_norm = RMSNorm(self.r)
        self.wkv_b = nn.Linear(self.r, H * (self.dn + self.dv), bias=False)
        self.wo = nn.Linear(H * self.dv, D, bias=False)
        self.scale = 1.0 / math.sqrt(self.dn + self.dr)
        self.absorb = True  # cached calls: absorbed up-projections (False: expand the latents, for benchmarks/decode.py)

    def forward(self, x_BTD, cos, sin, mask_B1TS, cache, layer: int) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        H, dn, dr, dv, r = self.H, self.dn, self.dr, self.dv, self.r
        q = self.wq_b(self.q_norm(self.wq_a(x_BTD))) if self.q_lora else self.wq(x_BTD)
        q = q.view(B, T, H, dn + dr).transpose(1, 2)  # (B, H, T, dn + dr)
        q_nope, q_rope = q.split([dn, dr], dim=-1)
        q_rope = apply_rope(q_rope, cos, sin)
        c, k_rope = self.wkv_a(x_BTD).split([r, dr], dim=-1)
        c = self.kv_norm(c)  # (B, T, r)
        k_rope = apply_rope(k_rope[:, None], cos, sin)[:, 0]  # (B, T, dr), shared by the heads
        w_kv = self.wkv_b.weight.view(H, dn + dv, r)
        w_uk, w_uv = w_kv[:, :dn], w_kv[:, dn:]  # (H, dn, r), (H, dv, r)
        causal = mask_B1TS is None
        if cache is not None:
            if causal:
                raise ValueError("MLA decoding with a cache needs the key mask")
            c, k_rope = cache.update(layer, c, k_rope)  # the whole cached sequence: (B, S, r), (B, S, dr)
        if cache is None or not self.absorb:
            S = c.shape[1]
            kv = (c @ self.wkv_b.weight.t()).view(B, S, H, dn + dv).transpose(1, 2)  # (B, H, S, dn + dv)
            k_nope, v = kv.split([dn, dv], dim=-1)
            k = torch.cat([k_nope, k_rope[:, None].expand(B, H, S, dr)], dim=-1)  # (B, H, S, dn + dr)
            qf = torch.cat([q_nope, q_rope], dim=-1)
            if isinstance(mask_B1TS, PrefixTree):  # flat prompts and completions (a trainer pass)
                y = mask_B1TS.attend(qf, k, v, scale=self.scale)
            else:
                y = F.scaled_dot_product_attention(qf, k, v, attn_mask=None if causal else mask_B1TS, is_causal=causal, scale=self.scale)
        else:
            c_all, kr_all = c, k_rope
            q_lat = torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)  # absorbed W_UK, (B, H, T, r)
            qf = torch.cat([q_lat, q_rope], dim=-1)  # (B, H, T, r + dr)
            kf = torch.cat([c_all, kr_all], dim=-1)[:, None]  # (B, 1, S, r + dr), one "head" shared
            S = kf.shape[2]
            y_lat = F.scaled_dot_product_attention(qf, kf.expand(B, H, S, r + dr), c_all[:, None].expand(B, H, S, r), attn_mask=mask_B1TS, scale=self.scale)
            y = torch.einsum("bhtr,hvr->bhtv", y_lat, w_uv)  # absorbed W_UV, (B, H, T, dv)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * dv))
