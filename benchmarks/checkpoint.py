"""What do durable checkpoints cost? Times ``checkpoint.save`` (safetensors + optimizer.pt +
state.json, every file fsynced, sha256 checksums, atomic rename) and ``checkpoint.load`` (size
and sha256 verified before parsing) for the default ``r1lab zero`` model with its AdamW state
after one step, against a plain ``torch.save``/``torch.load`` of the same state, in one process.

    python benchmarks/checkpoint.py [--repeats 7] [--dir /tmp]

``--dir`` should be on the disk runs are written to: fsync cost depends on it. The last line is
one JSON object, ratios first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import torch

from r1lab import checkpoint
from r1lab.config import Config
from r1lab.recipes import common, pretrain
from r1lab.sft import masked_nll
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer
from timing import median_s


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dir", default=None, help="where to write (default: the system temp folder)")
    args = ap.parse_args()

    cfg = Config()
    common.seed_everything(0, 1)
    tok, task = CharTokenizer.build(), get_task(cfg.task)
    model = common.new_model(cfg.model, tok.vocab_size)
    opt = common.make_optimizer(model, cfg.pretrain.lr, cfg.pretrain.weight_decay)
    ids, mask = pretrain.batch(tok, task, random.Random(0), 4, 0.3, cfg.model.max_seq_len)
    out = model(ids[:, :-1])
    (masked_nll(out.logits_BTV, ids[:, 1:], mask[:, 1:]) + out.aux_loss).backward()
    opt.step()  # AdamW moments exist: the optimizer file is full size
    state = common.model_state(model)
    gens = {"data": random.Random(0)}

    root = Path(tempfile.mkdtemp(prefix="r1lab-ckpt-bench-", dir=args.dir))
    try:
        step = iter(range(1, 10**6))
        save_s = median_s(lambda: checkpoint.save(root, next(step), model, opt, state=state, generators=gens, keep=1), args.repeats)
        latest = checkpoint.load_latest(root).path
        load_s = median_s(lambda: checkpoint.load(latest), args.repeats)
        size = folder_bytes(latest)

        plain = root / "plain.pt"

        def plain_save():
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state}, plain)

        plain_save_s = median_s(plain_save, args.repeats)
        plain_load_s = median_s(lambda: torch.load(plain, map_location="cpu", weights_only=True), args.repeats)
        plain_size = plain.stat().st_size
    finally:
        shutil.rmtree(root, ignore_errors=True)

    n_params = sum(p.numel() for p in model.parameters())
    print(f"default zero model ({cfg.model.ffn}), {n_params / 1e6:.2f}M parameters, AdamW state after one step; "
          f"median of {args.repeats}; torch threads {torch.get_num_threads()}; cores {os.cpu_count()}; folder {root.parent}")
    print(f"{'':<28}{'save (ms)':>10}{'load (ms)':>11}{'size (MB)':>11}")
    print(f"{'checkpoint.save / load':<28}{save_s * 1e3:>10.1f}{load_s * 1e3:>11.1f}{size / 1e6:>11.2f}")
    print(f"{'plain torch.save / load':<28}{plain_save_s * 1e3:>10.1f}{plain_load_s * 1e3:>11.1f}{plain_size / 1e6:>11.2f}")
    print(json.dumps({
        "save_ratio_checkpoint_over_plain": round(save_s / plain_save_s, 3),
        "load_ratio_checkpoint_over_plain": round(load_s / plain_load_s, 3),
        "save_ms": round(save_s * 1e3, 2),
        "load_ms": round(load_s * 1e3, 2),
        "size_mb": round(size / 1e6, 3),
        "plain_save_ms": round(plain_save_s * 1e3, 2),
        "plain_load_ms": round(plain_load_s * 1e3, 2),
        "plain_size_mb": round(plain_size / 1e6, 3),
        "parameters": n_params,
        "repeats": args.repeats,
    }))


if __name__ == "__main__":
    main()
