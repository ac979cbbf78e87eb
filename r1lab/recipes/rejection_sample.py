"""Rejection sampling: turn a checkpoint's own verified samples into an SFT dataset, as
DeepSeek-R1 does after its reasoning-oriented RL stage (arXiv:2501.12948, sec. 2.3.3): sample
several responses per prompt, keep only correct ones in a readable format, deduplicate.

For each of ``rejection.n_prompts`` distinct train-split prompts, draw ``samples_per_prompt``
completions (``rollout.sample`` with repeats), keep those that the task's verifier scores correct
AND that follow the R1 format (the format reward is 1), drop exact duplicates, keep at most
``max_per_prompt`` per prompt (first drawn first), and write

* ``OUT`` (JSON lines ``{"prompt", "completion", "answer"}``, readable by ``r1lab sft --sft.data jsonl:OUT``),
* ``OUT.stats.json``: acceptance rate overall, per prompt, and per difficulty label where the task
  has one (``Task.difficulty``).

Departures: R1 also filters mixed languages, long paragraphs and code blocks, and uses a generative
judge (DeepSeek-V3) for data without rule-based rewards; here only rule-verifiable tasks are used.
Both files are written atomically; Ctrl-C or SIGTERM stop after the current batch of prompts and
write what was sampled so far (``"complete": false`` in the stats), exit 130/143.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from r1lab import rollout, tracking
from r1lab.config import Config
from r1lab.recipes import common
from r1lab.rewards import RewardWeights
from r1lab.tasks import Task, get_task
from r1lab.tasks.base import Example

STATS_SUFFIX = ".stats.json"


def accept(texts: list[str], example: Example, task: Task, cap: int) -> tuple[list[str], int]:
    """(the distinct completions of ``texts`` that the task verifies as correct and that follow
    the R1 format, in drawing order, at most ``cap`` of them (0: all); how many were accepted
    before deduplication and the cap)."""
    weights = RewardWeights(format=1.0, correct=1.0)
    ok = [t for t in texts if (sc := task.score(t, example, weights)).correct == 1.0 and sc.format == 1.0]
    distinct = list(dict.fromkeys(ok))
    return (distinct[:cap] if cap > 0 else distinct), len(ok)


def stats_path(out: Path) -> Path:
    return Path(out).with_suffix(STATS_SUFFIX)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def summarize(rows: list[dict], task: Task, examples: list[Example], n: int, complete: bool, extra: dict) -> dict:
    """The statistics JSON from the per-prompt rows."""
    samples = n * len(rows)
    accepted = sum(r["accepted"] for r in rows)
    stats = {
        **extra,
        "complete": complete,
        "prompts": len(rows),
        "samples_per_prompt": n,
        "samples": samples,
        "accepted": accepted,
        "kept": sum(r["kept"] for r in rows),
        "acceptance_rate": accepted / samples if samples else 0.0,
        "prompts_with_an_accepted_sample": sum(r["accepted"] > 0 for r in rows),
    }
    labels = [task.difficulty(ex) for ex in examples[: len(rows)]]
    if any(label is not None for label in labels):
        per: dict[str, dict] = {}
        for label, r in zip(labels, rows):
            d = per.setdefault(str(label), {"prompts": 0, "samples": 0, "accepted": 0, "kept": 0})
            d["prompts"] += 1
            d["samples"] += n
            d["accepted"] += r["accepted"]
            d["kept"] += r["kept"]
        for d in per.values():
            d["acceptance_rate"] = d["accepted"] / d["samples"]
        stats["per_difficulty"] = dict(sorted(per.items()))
    stats["per_prompt"] = rows
    return stats


def write_outputs(out: Path, records: list[dict], stats: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    _write_atomic(stats_path(out), json.dumps(stats, indent=1, ensure_ascii=False) + "\n")


SAMPLING_KEYS = "rejection.prompts_per_batch x rejection.samples_per_prompt (or rejection.sample.max_new_tokens)"
"what a sampled batch too large for memory names"


def run(cfg: Config, out: Path, init: str | Path) -> dict:
    """Sample from ``init``, write the accepted samples to ``out`` (JSONL) and the statistics to
    ``out.with_suffix('.stats.json')``; return the statistics."""
    rc = cfg.rejection
    out = Path(out)
    common.seed_everything(cfg.seed, cfg.threads)
    tok = common.load_tokenizer(init)
    model, ckpt = common.load_model(init)
    task = get_task(cfg.task, seed=cfg.seed)
    try:
        examples = task.examples("train", rc.n_prompts, cfg.seed)
    except ValueError as e:
        raise common.StageError(f"rejection.n_prompts: {e}") from None
    # the model is known now: count its cache and logits too (main's check before loading cannot)
    common.check_sampling(min(rc.prompts_per_batch, len(examples)) * rc.samples_per_prompt, rc.sample.max_new_tokens, SAMPLING_KEYS, model=model)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = rc.samples_per_prompt
    extra = {"init": str(ckpt.path), "task": task.name, "max_per_prompt": rc.max_per_prompt, "temperature": rc.sample.temperature,
             "top_p": rc.sample.top_p, "max_new_tokens": rc.sample.max_new_tokens, "seed": cfg.seed}
    print(f"rejection-sample: {len(examples)} {task.name} train prompts x {n} samples from {ckpt.path}")
    records: list[dict] = []
    rows: list[dict] = []
    model.eval()
    batches = range(0, len(examples), rc.prompts_per_batch)
    with common.StopFlag() as stop:
        for start in tracking.progress(batches, desc="rejection-sample", total=len(batches)):
            batch = examples[start : start + rc.prompts_per_batch]
            ro = rollout.sample(model, [tok.prompt_ids(ex.question) for ex in batch], rc.sample, tok.eos_id, tok.pad_id, gen, repeats=n)
            for i, ex in enumerate(batch):
                texts = [tok.decode_completion(ro.completion_ids(i * n + j)) for j in range(n)]
                kept, n_ok = accept(texts, ex, task, rc.max_per_prompt)
                records += [{"prompt": ex.question, "completion": t, "answer": ex.answer} for t in kept]
                rows.append({"prompt": ex.question, "accepted": n_ok, "acceptance_rate": n_ok / n,
                             "distinct": len(set(texts)), "kept": len(kept)})
            if stop.requested and len(rows) < len(examples):
                write_outputs(out, records, summarize(rows, task, examples, n, False, extra))
                stop.check_done(f"{len(rows)} of {len(examples)} prompts; partial dataset {out} ({len(records)} records)")
    stats = summarize(rows, task, examples, n, True, extra)
    write_outputs(out, records, stats)
    return stats


def main(cfg: Config) -> Path:
    if not cfg.init:
        raise common.StageError("rejection-sample needs --init: the run or checkpoint to sample from")
    rc = cfg.rejection
    common.check_sampling(min(rc.prompts_per_batch, rc.n_prompts) * rc.samples_per_prompt, rc.sample.max_new_tokens, SAMPLING_KEYS)
    out = Path(cfg.out) if cfg.out else Path("runs") / f"rejection-{Path(cfg.init).name}.jsonl"
    if out.is_dir():
        raise common.StageError(f"--out {out} is a folder; rejection-sample writes a JSONL file (e.g. {out / 'traces.jsonl'})")
    stats = run(cfg, out, cfg.init)
    table = [{"prompts": stats["prompts"], "samples": stats["samples"], "accepted": stats["accepted"],
              "acceptance_rate": round(stats["acceptance_rate"], 4), "kept (distinct, capped)": stats["kept"]}]
    print(tracking.format_table(table, title=f"rejection-sample: {out}"))
    for label, d in stats.get("per_difficulty", {}).items():
        print(f"  {label}: acceptance {d['acceptance_rate']:.3f} over {d['prompts']} prompts")
    print(f"rejection-sample: wrote {out} and {stats_path(out)}; train on it with r1lab sft --sft.data jsonl:{out}")
    return out
