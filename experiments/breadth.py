"""Outcome RL beyond math and code: GRPO on reasoning-gym datasets across domains, equal budget.

    python experiments/breadth.py [--out DIR] [--quick] [--datasets a,b,...] [--base mixed|own]
                                  [--pretrain-steps N] [--rl-steps N] [--workers N]

For each dataset (default: 12 with short prompts across arithmetic, algebra, algorithmic, logic,
cognition, games, graphs) the same RL budget runs from a base: measure the base's held-out pass@1
and pass@8 (and its train pass@8, the signal check), run GRPO, measure again.

The base (``--base``):
- ``mixed`` (default): ONE model pretrained once on the mixed corpus of every dataset's training
  pool (worked solutions where ``gym_solutions`` has them), written as a ``jsonl:`` task; every
  dataset's RL starts from it. Departure from "``r1lab zero`` per dataset": a ``zero`` per dataset
  pays a full pretraining per dataset (about ten minutes each on one core), twelve times the
  pretraining compute of one shared base; the shared base spends the same pretraining tokens once,
  so the RL budget, the thing compared, is what every dataset gets equally. Its context is sized
  for the longest prompt (both splits) and document of any dataset.
- ``own``: ``zero``'s stages per dataset (its own base, context sized from its task).

Datasets run in ``--workers`` processes after the base (one thread each); each run is seeded
on its own, so the figures do not depend on the number of workers. Writes table.md,
summary.json and two bar plots (held-out pass@1 base vs RL; completion length change) through
r1lab.report. The verdict names the datasets where RL gained and where not.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from r1lab import config as config_lib
from r1lab.recipes import common, context, pretrain, prompts
from r1lab.recipes import rl as rl_recipe
from r1lab.recipes.eval import evaluate_model
from r1lab.report import experiment, plots
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer
from r1lab.tracking import read_metrics

DOMAINS = {
    "basic_arithmetic": "arithmetic", "chain_sum": "arithmetic", "gcd": "arithmetic", "lcm": "arithmetic",
    "simple_equations": "algebra", "spell_backward": "algorithmic", "letter_counting": "algorithmic",
    "count_primes": "algorithmic", "syllogism": "logic", "number_sequence": "cognition", "maze": "games",
    "family_relationships": "graphs",
    # longer prompts (a larger context for every dataset of a mixed base): options for --datasets
    "leg_counting": "arithmetic", "base_conversion": "algorithmic", "number_sorting": "algorithmic",
    "propositional_logic": "logic", "color_cube_rotation": "cognition", "tower_of_hanoi": "games", "shortest_path": "graphs",
}

DEFAULT = list(DOMAINS)[:12]
"12 datasets with prompts of at most ~330 characters, every domain the issue names (plus algebra)"

QUICK = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "d_ff": 64, "n_routed_experts": 4, "top_k": 2, "d_expert": 16},
    "pretrain": {"steps": 3, "batch_size": 4, "warmup_steps": 1},
    "rl": {"steps": 1, "prompts_per_step": 2, "group_size": 4, "eval_every": 0, "sample": {"max_new_tokens": 16}},
    "eval": {"n_problems": 3, "n_samples": 8, "ks": [1, 8], "sample": {"max_new_tokens": 16}},
    "data": {"signal_problems": 4},
    "threads": 1, "tensorboard": False,
}


def _task_config(layers: dict, task: str, seed: int, out: Path):
    cfg = config_lib.build(layers, {"task": task, "seed": seed, "out": str(out)})
    cfg.resume = True  # a rerun of the experiment continues its runs (a finished run is not retrained)
    return cfg


def mixed_base(datasets: list[str], layers: dict, out: Path, seed: int) -> Path:
    """Pretrain one model on the training pools of all ``datasets`` (``jsonl:`` corpus at
    ``out/corpus.jsonl``); its context fits the longest prompt + budget and document of any of
    them (both splits). Returns the final checkpoint."""
    tok = CharTokenizer.build()
    corpus, need = out / "corpus.jsonl", 0
    rows = []
    for d in datasets:
        cfg = _task_config(layers, f"gym:{d}", seed, out)
        task = get_task(cfg.task, seed=seed)
        need = max(need, context.size(cfg, task, tok)[0])
        rows += [{"question": ex.question, "answer": ex.answer, **({"solution": ex.solution} if ex.solution else {})}
                 for ex in task.pool("train") if ex.answer.strip()]
    random.Random(seed).shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    if not corpus.exists():
        corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = _task_config(layers, f"jsonl:{corpus}", seed, out / "base")
    cfg.model.max_seq_len = max(need, context.size(cfg, get_task(cfg.task), tok)[0])
    common.prepare_run_dir(out / "base", cfg)
    print(f"breadth: mixed base on {len(rows)} training problems of {len(datasets)} datasets, model.max_seq_len {cfg.model.max_seq_len}", flush=True)
    return pretrain.run(cfg, out / "base")


def run_one(dataset: str, layers: dict, out: Path, seed: int, base_ckpt: str | None = None) -> dict:
    """One dataset: pretrain its own base (``base_ckpt`` None: zero's stages) or start from
    ``base_ckpt``; base eval, signal check, GRPO, eval."""
    cfg = _task_config(layers, f"gym:{dataset}", seed, out)
    task = get_task(cfg.task, seed=cfg.seed)
    t0 = time.time()
    if base_ckpt is None:
        cfg.model.max_seq_len, _ = context.size(cfg, task, CharTokenizer.build())
        common.prepare_run_dir(out, cfg)
        base_ckpt = pretrain.run(cfg, out / "pretrain")
    else:
        cfg.init = str(base_ckpt)
        common.prepare_run_dir(out, cfg)
    weights = RewardWeights(cfg.rl.format_weight, cfg.rl.correct_weight, cfg.rl.partial_weight)
    tok = common.load_tokenizer(base_ckpt)

    def measure(path):
        common.seed_everything(cfg.seed, cfg.threads)
        model, _ = common.load_model(path)
        return model, evaluate_model(model, tok, task, cfg.eval, weights).metrics

    base_model, base = measure(base_ckpt)
    signal = prompts.signal_check(cfg, base_model, tok, task, dataset)
    rl_dir = out / "rl"
    cfg.out = str(rl_dir)
    common.prepare_run_dir(rl_dir, cfg)
    tuned = measure(rl_recipe.run(cfg, rl_dir, base_ckpt))[1]
    train = [m.get("rollout/correct_rate") for m in read_metrics(rl_dir / "metrics.jsonl")]
    train = [t for t in train if t is not None]
    row = {"dataset": dataset, "domain": DOMAINS.get(dataset, "?"), "max_seq_len": common.load_model(base_ckpt)[0].cfg.max_seq_len,
           "worked": bool(task.pool("train")[0].solution), "base_pass@1": base["pass@1"], "base_pass@8": base["pass@8"],
           "train_pass@8": signal["pass@8"], "rl_pass@1": tuned["pass@1"], "gain": tuned["pass@1"] - base["pass@1"],
           "train_correct_first": train[0] if train else None, "train_correct_last": train[-1] if train else None,
           "base_len": base["mean_len"], "rl_len": tuned["mean_len"], "len_change": tuned["mean_len"] - base["mean_len"], "wall_s": time.time() - t0}
    (out / "row.json").write_text(json.dumps(row, indent=1), encoding="utf-8")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/experiments/breadth")
    ap.add_argument("--quick", action="store_true", help="a tiny model, 3 pretraining and 1 RL step on two datasets: the plumbing in seconds")
    ap.add_argument("--datasets", default=",".join(DEFAULT))
    ap.add_argument("--base", choices=["mixed", "own"], default="mixed", help="one base pretrained on all datasets' corpus, or zero's own base per dataset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=24, help="pretraining rows per step")
    ap.add_argument("--rl-steps", type=int, default=40)
    ap.add_argument("--prompts-per-step", type=int, default=16, help="RL prompts per step (group size 8)")
    ap.add_argument("--eval-problems", type=int, default=100, help="held-out problems, 8 samples each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--workers", type=int, default=1, help="datasets run in this many processes at once")
    args = ap.parse_args()
    os.environ.setdefault("R1LAB_NO_PROGRESS", "1")
    out = Path(args.out)
    datasets = args.datasets.split(",")
    unknown = [d for d in datasets if d not in DOMAINS]
    if unknown:
        ap.error(f"--datasets: {unknown[0]!r} has no domain here; choose from {', '.join(DOMAINS)}")
    if args.quick:
        datasets, layers = datasets[:2], QUICK
    else:
        layers = {"pretrain": {"steps": args.pretrain_steps, "batch_size": args.batch_size},
                  "rl": {"steps": args.rl_steps, "eval_every": 0, "prompts_per_step": args.prompts_per_step},
                  "eval": {"n_problems": args.eval_problems}, "threads": args.threads, "tensorboard": False}
    base_ckpt = str(mixed_base(datasets, layers, out, args.seed)) if args.base == "mixed" else None
    jobs = [(d, layers, out / d, args.seed, base_ckpt) for d in datasets]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(run_one, *zip(*jobs)))
    else:
        rows = [run_one(*job) for job in jobs]
    plots.grouped_bars(out / "pass_at_1.png", {f'{r["dataset"]} ({r["domain"]})': [r["base_pass@1"], r["base_pass@8"], r["rl_pass@1"]] for r in rows},
                       series=["base pass@1", "base pass@8", "GRPO pass@1"], title="held-out pass@1 and pass@8 of the base, pass@1 after GRPO (equal RL budget)",
                       ylabel="held-out pass@k")
    plots.bars(out / "len_change.png", {r["dataset"]: [r["len_change"]] for r in rows},
               title="mean completion length change after GRPO", ylabel="tokens")
    helped = [r["dataset"] for r in rows if r["gain"] > 0.02]
    flat = [r["dataset"] for r in rows if r["gain"] <= 0.02]
    no_signal = [r["dataset"] for r in rows if r["train_pass@8"] < layers.get("data", {}).get("signal_threshold", 0.1)]
    verdict = (f"RL gained more than 2 points of held-out pass@1 on {', '.join(helped) or 'no dataset'}; not on {', '.join(flat) or 'none'}. "
               f"Bases with train pass@8 below the signal threshold (nothing to select): {', '.join(no_signal) or 'none'}.")
    experiment.write(out, "breadth", rows, {"quick": args.quick, "seeds": [args.seed], "verdict": verdict, "base": args.base,
                                            "budget": {"pretrain": layers["pretrain"], "rl": layers["rl"], "eval": layers["eval"]}},
                     title=f"GRPO on reasoning-gym datasets, equal RL budget, {args.base} base (held-out test split)")
    print(verdict)

if __name__ == "__main__":
    main()
