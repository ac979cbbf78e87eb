"""Supervised next-token losses: masked negative log-likelihood (pretraining, SFT).

Logit distillation (DeepSeek-R1's distillation is plain SFT on teacher samples, which this
covers; a KL-to-teacher loss comes with the distillation stage)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_nll(logits_BTV: torch.Tensor, targets_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits[:, t]`` predicting ``targets[:, t]`` over ``mask`` positions."""
    nll = F.cross_entropy(logits_BTV.flatten(0, 1).float(), targets_BT.flatten(), reduction="none")
    mask = mask_BT.flatten().float()
    return (nll * mask).sum() / mask.sum().clamp(min=1.0)
