"""Building blocks shared by the attention variants: RMSNorm (Zhang & Sennrich, 2019) and rotary
position embeddings (RoFormer, arXiv:2104.09864), rotating the two halves of a head."""

from __future__ import annotations

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


def rope_tables(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # (L, hd/2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x_BHTd: torch.Tensor, cos_BTd: torch.Tensor, sin_BTd: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) by position-dependent angles (RoFormer)."""
    x1, x2 = x_BHTd.chunk(2, dim=-1)
    cos, sin = cos_BTd[:, None], sin_BTd[:, None]  # broadcast over heads
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
