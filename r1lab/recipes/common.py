"""What every stage does the same way: run folders, seeding, threads, building or loading the
model, the optimizer and the learning-rate schedule. Loops stay in the recipes."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from r1lab import checkpoint
from r1lab import config as config_lib
from r1lab.config import Config, ConfigError, ModelConfig
from r1lab.model.transformer import Transformer
from r1lab.tokenizer import CharTokenizer


class StageError(RuntimeError):
    """A problem with the user's input that the CLI reports in one line (exit 2)."""


def run_dir_for(cfg: Config, stage: str) -> Path:
    return Path(cfg.out) if cfg.out else Path("runs") / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(run_dir: Path, cfg: Config) -> None:
    """Create the run folder and write the resolved config; refuse to overwrite a run's checkpoints
    unless resuming."""
    if not cfg.resume and checkpoint.latest_step(run_dir) is not None:
        raise StageError(f"run folder {run_dir} already holds checkpoints: pass --resume to continue it, or another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_lib.save(cfg, run_dir / "config.yaml")
    CharTokenizer.build().save(run_dir / "tokenizer.json")


def seed_everything(seed: int, threads: int) -> None:
    # Set on purpose, never left to torch's default: on an idle 2-core machine 2 threads halve a
    # step (benchmarks/threads.py), but with another busy process tiny matmuls on 2 threads were
    # up to 50x slower than on 1 (DESIGN.md). A fixed count also keeps runs bit-reproducible.
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def new_model(model_cfg: ModelConfig, vocab_size: int) -> Transformer:
    return Transformer(model_cfg, vocab_size)


def model_state(model: Transformer) -> dict:
    """What a checkpoint must hold to rebuild the model without the run's config."""
    return {"model_config": dataclasses.asdict(model.cfg), "vocab_size": model.vocab_size}


def resolve_checkpoint(path: str | Path) -> checkpoint.Checkpoint:
    """A checkpoint folder, a run folder (its newest good checkpoint), or a `zero` run folder
    (its RL stage if it has one, else its pretraining stage)."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"init path {path} does not exist")
    if (path / checkpoint.MODEL_FILE).is_file():
        return checkpoint.load(path)
    for candidate in (path, path / "rl", path / "pretrain"):
        if checkpoint.latest_step(candidate) is not None:
            ckpt = checkpoint.load_latest(candidate)
            if ckpt is not None:
                return ckpt
    raise StageError(f"init path {path} holds no checkpoint (looked for {checkpoint.MODEL_FILE} and checkpoints/step_N/)")


def load_model(path: str | Path) -> tuple[Transformer, checkpoint.Checkpoint]:
    ckpt = resolve_checkpoint(path)
    try:
        model_cfg = ModelConfig(**ckpt.state["model_config"])
        vocab_size = int(ckpt.state["vocab_size"])
    except (KeyError, TypeError) as err:
        raise StageError(f"checkpoint {ckpt.path} has no usable model_config in state.json ({err})") from None
    if vocab_size != CharTokenizer.build().vocab_size:
        raise StageError(f"checkpoint {ckpt.path} has vocabulary size {vocab_size}, the tokenizer has {CharTokenizer.build().vocab_size}")
    model = Transformer(model_cfg, vocab_size)
    checkpoint.apply(model, ckpt)
    return model, ckpt


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; matrices decay, norms and vectors do not (as in nanoGPT and LLaMA)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio * peak`` at ``total`` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def moe_metrics(load_LE: torch.Tensor | None) -> dict[str, float]:
    """Balance of the routed experts: max load over mean load, averaged over layers (1 = even)."""
    if load_LE is None:
        return {}
    ratio = load_LE.max(dim=1).values / load_LE.mean(dim=1).clamp(min=1e-9)
    return {"moe/load_max_over_mean": float(ratio.mean())}


__all__ = ["ConfigError", "StageError"]
