"""Building blocks shared by the attention variants: RMSNorm (Zhang & Sennrich, 2019) and rotary
position embeddings (RoFormer, arXiv:2104.09864), rotating the two halves of a head, with the
linear and Llama 3.1 frequency scalings that imported checkpoints use."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
