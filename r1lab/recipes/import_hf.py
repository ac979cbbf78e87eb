"""``r1lab import HF_DIR OUT_DIR``: convert a local Hugging Face folder into an r1lab run folder
once (config.yaml, tokenizer.json, checkpoints/step_0/), so later stages start with ``--init
OUT_DIR``. ``--init hf:HF_DIR`` does the same conversion in memory on every start.

Everything is read and checked before anything is written; the folder is assembled under a
temporary name and renamed into place, so a bad input leaves ``OUT_DIR`` untouched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from r1lab import checkpoint
from r1lab import config as config_lib
from r1lab.config import Config
from r1lab.recipes import common


def main(cfg: Config) -> Path:
    if not cfg.init or not cfg.out:
        raise common.StageError("usage: r1lab import HF_DIR OUT_DIR")
    source = cfg.init.removeprefix(common.HF_PREFIX)
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise common.StageError(f"{out}: already exists and is not an empty folder; choose another OUT_DIR")
    common.seed_everything(cfg.seed, cfg.threads)
    init = common.HF_PREFIX + source
    model, _ = common.load_model(init)
    tok = common.load_tokenizer(init)

    with checkpoint.atomic_folder(out) as tmp:
        config_lib.save(dataclasses.replace(cfg, model=model.cfg, init=init, out=str(out)), tmp / "config.yaml")
        tok.save_folder(tmp)
        state = {**common.model_state(model), "imported_from": str(Path(source).resolve())}
        checkpoint.save(tmp, 0, model, state=state)
    print(f"import: {source} -> {out} ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}, vocabulary {model.vocab_size}, "
          f"tokenizer {type(tok).__name__}); start a stage from it with --init {out}")
    return out
