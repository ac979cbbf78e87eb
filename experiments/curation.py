"""Data efficiency: uniform prompts vs a difficulty curriculum vs pass-rate curation, equal compute.

    python experiments/curation.py [--out DIR] [--quick] [--datasets chain_sum,basic_arithmetic] [--budget N]

On each dataset one base is pretrained (seeded), then GRPO runs from it three times, choosing its
prompts with ``data.prompts`` = uniform, curriculum, pass_rate. Compute is equal in sampled
completions: every arm gets ``--budget`` completions in all; the curation arm pays for its
pass-rate estimates (data.candidates x data.samples per refresh) out of that budget, so it runs
fewer RL steps. Measured: held-out pass@1 (test split, default difficulty) every
``--eval-every`` steps, and the sampled completions spent when it first reaches the base's pass@1
+ ``--gain``. Writes table.md, summary.json and one curve plot per dataset through r1lab.report.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from r1lab import config as config_lib
from r1lab.recipes import common, context, pretrain
from r1lab.recipes import rl as rl_recipe
from r1lab.recipes.eval import evaluate_model
from r1lab.report import experiment, plots
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer
from r1lab.tracking import read_metrics

ARMS = ["uniform", "curriculum", "pass_rate"]

QUICK = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "d_ff": 64, "n_routed_experts": 4, "top_k": 2, "d_expert": 16},
    "pretrain": {"steps": 3, "batch_size": 4, "warmup_steps": 1},
    "rl": {"prompts_per_step": 2, "group_size": 4, "eval_problems": 3, "sample": {"max_new_tokens": 16}},
    "eval": {"n_problems": 3, "n_samples": 2, "ks": [1], "sample": {"max_new_tokens": 16}},
    "data": {"candidates": 2, "samples": 2, "refresh_every": 2, "window": 1},
    "threads": 1, "tensorboard": False,
}


def steps_for(cfg, arm: str, budget: int) -> int:
    """RL steps an arm can afford out of ``budget`` sampled completions (estimates included)."""
    per_step = cfg.rl.prompts_per_step * cfg.rl.group_size
    if arm != "pass_rate":
        return budget // per_step
    d = cfg.data
    steps = 0
    while True:  # a refresh (candidates x samples) at every refresh_every-th step, from step 0
        cost = (steps + 1) * per_step + (steps // d.refresh_every + 1) * d.candidates * d.samples
        if cost > budget:
            return steps
        steps += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/experiments/curation")
    ap.add_argument("--quick", action="store_true", help="a tiny model and a few RL steps on one dataset: the plumbing in seconds")
    ap.add_argument("--datasets", default="chain_sum,basic_arithmetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--budget", type=int, default=40 * 16 * 8, help="sampled completions per arm (training + estimation)")
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--gain", type=float, default=0.05)
    ap.add_argument("--eval-problems", type=int, default=100, help="held-out problems of each periodic evaluation (2 samples each)")
    ap.add_argument("--candidates", type=int, default=32, help="data.candidates: prompts estimated per refresh (curation arm)")
    ap.add_argument("--samples", type=int, default=8, help="data.samples: samples per estimated prompt")
    ap.add_argument("--refresh-every", type=int, default=10, help="data.refresh_every")
    ap.add_argument("--batch-size", type=int, default=24, help="pretraining rows per step")
    ap.add_argument("--prompts-per-step", type=int, default=16, help="RL prompts per step (group size 8)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("R1LAB_NO_PROGRESS", "1")
    out = Path(args.out)
    datasets = args.datasets.split(",")[:1] if args.quick else args.datasets.split(",")
    layers = QUICK if args.quick else {"pretrain": {"steps": args.pretrain_steps, "batch_size": args.batch_size},
                                       "rl": {"eval_every": args.eval_every, "prompts_per_step": args.prompts_per_step, "eval_problems": args.eval_problems},
                                       "data": {"candidates": args.candidates, "samples": args.samples, "refresh_every": args.refresh_every},
                                       "threads": args.threads, "tensorboard": False}
    budget = 6 * 8 if args.quick else args.budget
    rows, summary_curves = [], {}
    for dataset in datasets:
        base_cfg = config_lib.build(layers, {"task": f"gym:{dataset}", "seed": args.seed})
        task = get_task(base_cfg.task, seed=base_cfg.seed)
        base_cfg.model.max_seq_len, _ = context.size(base_cfg, task, CharTokenizer.build())
        base_dir = out / dataset / "base"
        base_cfg.out = str(base_dir)
        common.prepare_run_dir(base_dir, base_cfg)
        base_ckpt = pretrain.run(base_cfg, base_dir)
        common.seed_everything(base_cfg.seed, base_cfg.threads)
        model, _ = common.load_model(base_ckpt)
        weights = RewardWeights(base_cfg.rl.format_weight, base_cfg.rl.correct_weight, base_cfg.rl.partial_weight)
        rl_eval = config_lib.build({"eval": {"n_problems": base_cfg.rl.eval_problems, "n_samples": 2, "ks": [1], "sample": layers.get("eval", {}).get("sample", {})}}).eval
        base_pass = evaluate_model(model, common.load_tokenizer(base_ckpt), task, rl_eval, weights).metrics["pass@1"]
        curves = {}
        for arm in ARMS:
            cfg = config_lib.build(layers, {"task": f"gym:{dataset}", "seed": args.seed, "data": {"prompts": arm}})
            steps = steps_for(cfg, arm, budget)
            cfg = config_lib.build(layers, {"task": f"gym:{dataset}", "seed": args.seed, "data": {"prompts": arm},
                                            "rl": {"steps": steps, "eval_every": 1 if args.quick else args.eval_every}})
            run_dir = out / dataset / arm
            cfg.out = str(run_dir)
            common.prepare_run_dir(run_dir, cfg)
            rl_recipe.run(cfg, run_dir, base_ckpt)
            metrics = read_metrics(run_dir / "metrics.jsonl")
            per_step = cfg.rl.prompts_per_step * cfg.rl.group_size
            spent = [(m["step"] * per_step + m.get("curation/estimate_samples", 0), m["eval/pass@1"]) for m in metrics if "eval/pass@1" in m]
            curves[arm] = [([0] + [s for s, _ in spent], [base_pass] + [p for _, p in spent])]
            reached = next((s for s, p in spent if p >= base_pass + args.gain), None)
            final = spent[-1][1] if spent else base_pass
            levels = [m["curriculum/level"] for m in metrics if "curriculum/level" in m]
            rows.append({"dataset": dataset, "arm": arm, "rl_steps": steps, "completions": spent[-1][0] if spent else 0,
                         "base_pass@1": base_pass, "final_pass@1": final, "gain": final - base_pass,
                         "completions_to_threshold": reached if reached is not None else "never",
                         "top_level": max(levels) if levels else "-"})
        summary_curves[dataset] = {arm: {"x": c[0][0], "pass@1": c[0][1]} for arm, c in curves.items()}
        plots.curves(out / f"{dataset}_pass_at_1.png", curves, title=f"gym:{dataset}: held-out pass@1 at equal compute",
                     xlabel="sampled completions (training + pass-rate estimates)", ylabel="pass@1")
    parts = []
    for d in datasets:
        finals = {r["arm"]: r["final_pass@1"] for r in rows if r["dataset"] == d}
        top = max(finals.values())
        leaders = [a for a, v in finals.items() if v == top]
        parts.append(f"{d}: no arm ahead (all {top:.3f})" if len(leaders) == len(finals) else f"{d}: highest final held-out pass@1 with {', '.join(leaders)} ({top:.3f})")
    verdict = "; ".join(parts)
    experiment.write(out, "curation", rows, {"quick": args.quick, "seeds": [args.seed], "budget_completions": budget, "gain": args.gain,
                                             "curves": summary_curves, "verdict": verdict},
                     title=f"uniform vs curriculum vs pass-rate curation, {budget} sampled completions per arm")
    print(verdict)


if __name__ == "__main__":
    main()
