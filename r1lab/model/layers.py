"""Building blocks shared by the attention variants: RMSNorm (Zhang & Sennrich, 2019) and rotary
position embeddings (RoFormer, arXiv:2104.09864), rotating the two halves of a head, with the
linear and Llama 3.1 frequency scalings that imported checkpoints use."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32 and not torch.is_grad_enabled():
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # sampling: one fused op, the same floats (tested)
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def scale_inv_freq(inv_freq: torch.Tensor, kind: str, factor: float, low_freq_factor: float = 1.0, high_freq_factor: float = 4.0,
                   original_max_len: int = 8192) -> torch.Tensor:
    """RoPE frequency scaling. ``linear``: position interpolation (Chen et al., arXiv:2306.15595),
    every frequency divided by ``factor``. ``llama3`` (Llama 3.1): wavelengths shorter than
    original_max_len / high_freq_factor are kept, longer than original_max_len / low_freq_factor
    divided by ``factor``, and those between blended linearly in original_max_len / wavelength."""
    if kind == "none":
        return inv_freq
    if kind == "linear":
        return inv_freq / factor
    if kind != "llama3":
        raise ValueError(f"unknown RoPE scaling {kind!r}")
    wavelen = 2 * math.pi / inv_freq
    smooth = ((original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)).clamp(0.0, 1.0)
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


def rope_tables(head_dim: int, max_len: int, theta: float, scaling: str = "none", factor: float = 1.0, low_freq_factor: float = 1.0,
                high_freq_factor: float = 4.0, original_max_len: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    inv_freq = scale_inv_freq(inv_freq, scaling, factor, low_freq_factor, high_freq_factor, original_max_len)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # (L, hd/2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x_BHTd: torch.Tensor, cos_BTd: torch.Tensor, sin_BTd: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) by position-dependent angles (RoFormer)."""
    x1, x2 = x_BHTd.chunk(2, dim=-1)
    cos, sin = cos_BTd[:, None], sin_BTd[:, None]  # broadcast over heads
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def take_rows(buf: torch.Tensor, rows: torch.Tensor, length: int, slot_dim: int) -> torch.Tensor:
    """Rows ``rows`` of a cache buffer (layers, batch, ...) whose first ``length`` slots along
    ``slot_dim`` are filled. Shrinking reuses the buffer (a view of its first rows); growing
    allocates without zeroing. Either way only the filled slots are copied."""
    filled = [slice(None)] * buf.dim()
    filled[slot_dim] = slice(0, length)
    n = len(rows)
    src = buf[tuple(filled)][:, rows]  # (layers, n, ...) the filled slots, gathered before any write
    out = buf[:, :n] if n <= buf.shape[1] else buf.new_empty((buf.shape[0], n, *buf.shape[2:]))
    out[tuple(filled)] = src
    return out


def cached_attention(q_BHTd: torch.Tensor, k_BKSd: torch.Tensor, v_BKSd: torch.Tensor, mask_B1TS: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Softmax attention of a few new queries (decoding, speculative verification) over cached
    keys and values, as batched matmuls on the cache's own strided views: no copy of the cache,
    and each of the K key heads serves its G = H / K query heads as one (G T, S) matrix (GQA
    without repeating keys). ``F.scaled_dot_product_attention``'s CPU kernel takes several times
    longer on 1-token queries (measured in docs/rl.md, speed). ``mask_B1TS``: True where a query
    sees a key; every query must see at least one. Returns (B, H, T, dv)."""
    B, H, T, d = q_BHTd.shape
    K, S = k_BKSd.shape[1], k_BKSd.shape[2]
    G = H // K
    scale = d ** -0.5 if scale is None else scale
    q = q_BHTd.reshape(B * K, G * T, d)  # query heads h = j G + g use key head j
    s = torch.bmm(q, k_BKSd.flatten(0, 1).transpose(1, 2)).view(B, K, G, T, S)
    s = s.float().mul_(scale).masked_fill_(~mask_B1TS[:, :, None], float("-inf"))
    p = s.softmax(-1).to(v_BKSd.dtype).view(B * K, G * T, S)
    return torch.bmm(p, v_BKSd.flatten(0, 1)).view(B, H, T, -1)
