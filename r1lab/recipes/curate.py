"""``r1lab curate --init RUN --task T --out data.jsonl``: a curated prompt set with pass-rate stats.

Estimates the pass rate of ``data.curate_problems`` train problems of the task under the model
at ``--init`` (``data.samples`` samples each, ``rl.sample`` settings: the distribution RL would
sample from), keeps those in [data.band_low, data.band_high] and writes them as JSON lines that
``jsonl:`` reads back in every stage::

    {"question": ..., "answer": ..., "solution": ..., "stats": {"pass_rate": 0.375, "samples": 8, "source": "gym:gcd"}}

Only train problems are considered, so the file never holds a problem of the source task's test
split. Problems without a single reference answer (some reasoning-gym datasets) cannot be scored
by ``jsonl:`` (exact match) and are left out, counted in the summary. A summary (band, counts,
histogram of rates, estimation cost) is printed and written beside the file (``.summary.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from r1lab import curriculum, tracking
from r1lab.config import Config
from r1lab.recipes import common, context
from r1lab.recipes.prompts import ModelJudge
from r1lab.tasks import get_task


def main(cfg: Config) -> Path:
    if not cfg.init:
        raise common.StageError("curate needs --init RUN_OR_CHECKPOINT_FOLDER (the model whose pass rates select the prompts)")
    out = common.jsonl_out(cfg.out, "curate", "FILE.jsonl")
    common.seed_everything(cfg.seed, cfg.threads)
    model, ckpt = common.load_model(cfg.init)
    tok = common.load_tokenizer(cfg.init)
    task = get_task(cfg.task, seed=cfg.seed)
    context.check(model.cfg.max_seq_len, task, tok, cfg.rl.sample.max_new_tokens, "rl.sample.max_new_tokens", "curate",
                  "lower rl.sample.max_new_tokens or curate with a model of a longer context")
    d = cfg.data
    pool = task.pool("train")
    examples = task.examples("train", d.curate_problems if pool is None else min(d.curate_problems, len(pool)), seed=cfg.seed)
    no_answer = [ex for ex in examples if not ex.answer.strip()]
    examples = [ex for ex in examples if ex.answer.strip()]
    judge = ModelJudge(model, tok, task, cfg.rl.sample, torch.Generator().manual_seed(cfg.seed))
    rates = curriculum.pass_rates(judge, examples, d.samples)
    keep = curriculum.in_band(rates, d.band_low, d.band_high)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in keep:
            ex = examples[i]
            row = {"question": ex.question, "answer": ex.answer.strip(), **({"solution": ex.solution} if ex.solution else {}),
                   "stats": {"pass_rate": rates[i], "samples": d.samples, "source": task.name}}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    hist = {f"{j}/{d.samples}": sum(1 for r in rates if round(r * d.samples) == j) for j in range(d.samples + 1)}
    summary = {"source": task.name, "init": str(ckpt.path), "problems": len(examples), "kept": len(keep), "no_reference_answer": len(no_answer),
               "band": [d.band_low, d.band_high], "samples": d.samples, "temperature": cfg.rl.sample.temperature,
               "mean_pass_rate_all": sum(rates) / max(len(rates), 1), "mean_pass_rate_kept": sum(rates[i] for i in keep) / max(len(keep), 1),
               "estimate_samples": judge.samples, "estimate_tokens": judge.tokens, "histogram": hist}
    out.with_name(out.name + ".summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(tracking.format_table([{"correct of n": k, "problems": v} for k, v in hist.items()], title=f"curate: pass rates of {len(examples)} train problems of {task.name} under {ckpt.path}"))
    print(f"curate: kept {len(keep)} of {len(examples)} problems with pass rate in [{d.band_low}, {d.band_high}] "
          f"({judge.samples} samples, {judge.tokens} tokens); wrote {out} (use it as --task jsonl:{out})")
    if not keep:
        print(f"curate: warning: no problem is in the band; the file is empty and jsonl:{out} will refuse it: widen data.band_low/band_high or curate with a stronger model")
    return out
