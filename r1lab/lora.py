"""LoRA: low-rank adapters on r1lab's own linear layers (Hu et al., arXiv:2106.09685).

A target ``nn.Linear`` with frozen weight W becomes ``LoRALinear``: y = x W^T + (alpha / r) x A^T B^T
with A (r, in) random and B (out, r) zero, so training starts exactly at the base model. Only A
and B train. ``disabled(model)`` switches every adapter off, which gives the base model back
without a second copy: with LoRA, GRPO's KL reference is the policy with its adapters disabled.
``merge(model)`` folds B A into W for export and evaluation.

Why not ``peft``: its injected layers rename every wrapped weight (``wq.base_layer.weight``,
``wq.lora_A.default.weight``), so r1lab checkpoints, the Hugging Face name map and strict loading
would all need a second naming scheme; ``LoRALinear`` subclasses ``nn.Linear`` and keeps
``wq.weight`` where it was. Departures from the paper: no LoRA dropout; adapters go on the
attention and dense-FFN projections named in ``targets`` (MoE experts are stacked weights, not
``nn.Linear``, and are not adapted).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` whose frozen weight gets a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate and initialise a second weight
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear and the reference implementation
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.enabled:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale  # (..., r) then (..., out)
        return y

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with W + (alpha / r) B A."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + (self.lora_B @ self.lora_A) * self.scale)
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


def apply(model: nn.Module, rank: int, alpha: float, targets: list[str]) -> list[str]:
    """Freeze every parameter of ``model`` and put adapters on the ``nn.Linear`` modules whose
    attribute name is in ``targets`` (``wq``, ``wk``, ``wv``, ``wo``, ``w1``, ``w2``, ``w3``).
    Returns the adapted module names; raises ValueError when none matches."""
    model.requires_grad_(False)
    adapted = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if name in targets and type(child) is nn.Linear:
                setattr(parent, name, LoRALinear(child, rank, alpha))
                adapted.append(f"{parent_name}.{name}" if parent_name else name)
    if not adapted:
        raise ValueError(f"config key lora.targets: {targets} names no linear layer of the model")
    return adapted


def modules(model: nn.Module) -> Iterator[LoRALinear]:
    return (m for m in model.modules() if isinstance(m, LoRALinear))


def settings(model: nn.Module) -> dict | None:
    """{"rank", "alpha", "targets"} of the adapters in ``model`` (for a checkpoint's state), or None."""
    found = [(n.rsplit(".", 1)[-1], m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not found:
        return None
    return {"rank": found[0][1].rank, "alpha": found[0][1].alpha, "targets": sorted({n for n, _ in found})}


@contextlib.contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """``with disabled(policy): ...`` runs the base model (adapters off); a no-op without LoRA."""
    adapters = list(modules(model))
    for m in adapters:
        m.enabled = False
    try:
        yield model
    finally:
        for m in adapters:
            m.enabled = True


def merge(model: nn.Module) -> nn.Module:
    """Replace every ``LoRALinear`` by its merged ``nn.Linear``, in place; returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
    model.requires_grad_(True)
    return model
