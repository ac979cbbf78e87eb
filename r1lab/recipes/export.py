"""``r1lab export RUN_OR_CHECKPOINT OUT_DIR``: write a trained model as a Hugging Face folder.

Dense models become LLaMA (or Qwen2 when they have q/k/v biases), DeepSeek-V3-style MoE models
(MLA, sigmoid router) DeepseekV3, with their tokenizer, so that
``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` and ``AutoTokenizer.from_pretrained(OUT_DIR)``
load them. The mapping lives in ``r1lab.model.hf``; this file only wires it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from r1lab.config import Config
from r1lab.model import hf
from r1lab.recipes import common

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main(cfg: Config) -> Path:
    if not cfg.init or not cfg.out:
        raise common.StageError("usage: r1lab export RUN_OR_CHECKPOINT OUT_DIR")
    common.seed_everything(cfg.seed, cfg.threads)
    model, ckpt = common.load_model(cfg.init)
    tok = common.load_tokenizer(cfg.init)
    family = hf.export(model, tok, cfg.out, dtype=DTYPES[cfg.export.dtype], mtp=cfg.export.mtp)
    print(f"export: {ckpt.path} (step {ckpt.step}) -> {cfg.out} as {family.architecture} in {cfg.export.dtype}, vocabulary {model.vocab_size}, tokenizer {type(tok).__name__}")
    if model.mtp is not None and cfg.export.mtp:
        print(f"export: MTP module kept as layer model.layers.{model.cfg.n_layers}, as in DeepSeek's checkpoints (transformers does not load it; r1lab import does)")
    elif model.mtp is not None:
        print("export: MTP module dropped (transformers runs the main model only); --export.mtp true keeps it")
    return Path(cfg.out)
