"""GRPO, Dr. GRPO, DAPO, GSPO, RLOO and REINFORCE++ on one procedural task, the same budget.

    python experiments/algorithms.py [--out DIR] [--quick] [--seeds 3] [--steps 40] [--task chain] [--pretrain-steps N]

One base model is pretrained once (seeded), then each algorithm's preset (r1lab/configs/<algo>.yaml,
the paper's setting) runs RL from it for the same number of steps, prompts and samples, on each
seed. Measured: held-out pass@1 every ``--eval-every`` steps (the curve and the steps to reach
the base model's pass@1 + ``--gain``), mean completion length (Dr. GRPO's claim: GRPO's length
normalisation lets wrong answers grow longer), and wall time. Writes table.md, summary.json and
plots (pass@1 and length curves with seed bands, wall-time bars) through r1lab.report.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from r1lab import config as config_lib
from r1lab.recipes import common, pretrain
from r1lab.recipes import rl as rl_recipe
from r1lab.recipes.eval import evaluate_model
from r1lab.report import experiment, plots
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer
from r1lab.tracking import read_metrics

ARMS = ["grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp"]

QUICK = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "d_ff": 64, "n_routed_experts": 4, "top_k": 2, "d_expert": 16},
    "pretrain": {"steps": 8, "batch_size": 8, "warmup_steps": 2},
    "rl": {"prompts_per_step": 2, "group_size": 4, "eval_problems": 4, "sample": {"max_new_tokens": 24}},
    "eval": {"sample": {"max_new_tokens": 24}},
    "threads": 1,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/experiments/algorithms")
    ap.add_argument("--quick", action="store_true", help="a tiny model and 2 RL steps: checks the plumbing in seconds")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="RL steps per run (the same budget for every algorithm)")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--gain", type=float, default=0.10, help="threshold = base pass@1 + gain")
    ap.add_argument("--task", default="chain")
    ap.add_argument("--pretrain-steps", type=int, default=0, help="pretraining steps of the base model; 0 keeps the config default")
    ap.add_argument("--eval-problems", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (use 1 on a busy machine)")
    ap.add_argument("--arms", default=",".join(ARMS))
    args = ap.parse_args()
    os.environ.setdefault("R1LAB_NO_PROGRESS", "1")
    out = Path(args.out)
    arms = args.arms.split(",")
    seeds = 1 if args.quick else args.seeds
    steps, eval_every = (2, 1) if args.quick else (args.steps, args.eval_every)
    shared = QUICK if args.quick else {"rl": {"prompts_per_step": 8, "group_size": 8, "eval_problems": args.eval_problems}}
    if args.pretrain_steps and not args.quick:
        shared = {**shared, "pretrain": {"steps": args.pretrain_steps}}
    shared = {"threads": args.threads, **shared, "task": args.task, "tensorboard": False, "save_every": 10_000}

    # One base model for every arm and seed: the comparison is between RL algorithms only.
    base_cfg = config_lib.build(shared, {"out": str(out / "base")})
    base_dir = out / "base"
    base_ckpt = pretrain.run(base_cfg, base_dir) if not (base_dir / "checkpoints").is_dir() else common.resolve_checkpoint(base_dir).path
    model, _ = common.load_model(base_ckpt)
    eval_cfg = config_lib.EvalConfig(n_problems=base_cfg.rl.eval_problems, n_samples=2, ks=[1], seed=base_cfg.eval.seed, sample=base_cfg.eval.sample)
    common.seed_everything(0, base_cfg.threads)
    base_pass = evaluate_model(model, CharTokenizer.build(), get_task(args.task), eval_cfg, RewardWeights(), desc="eval base").metrics["pass@1"]
    threshold = base_pass + args.gain

    pass_curves, len_curves, walls, rows = {}, {}, {}, []
    for arm in arms:
        pass_curves[arm], len_curves[arm], walls[arm] = [], [], []
        finals, lens, reached = [], [], []
        for seed in range(seeds):
            run_dir = out / arm / f"seed{seed}"
            cfg = config_lib.build(config_lib.load_yaml(arm), shared,
                                   {"seed": seed, "out": str(run_dir), "resume": True, "rl": {"steps": steps, "eval_every": eval_every}})
            t = time.perf_counter()
            rl_recipe.run(cfg, run_dir, base_ckpt)
            metrics = read_metrics(run_dir / "metrics.jsonl")
            walls[arm].append(time.perf_counter() - t)  # a resumed run counts only its remaining steps
            evals = [(0, base_pass)] + [(m["step"], m["eval/pass@1"]) for m in metrics if "eval/pass@1" in m]
            pass_curves[arm].append(([s for s, _ in evals], [v for _, v in evals]))
            len_curves[arm].append(([m["step"] for m in metrics], [m["rollout/mean_len"] for m in metrics]))
            finals.append(evals[-1][1])
            lens.append(metrics[-1]["rollout/mean_len"])
            hit = [s for s, v in evals if v >= threshold]
            reached.append(hit[0] if hit else None)
        got = [s for s in reached if s is not None]
        rows.append({"algorithm": arm, "pass@1 final": statistics.mean(finals), "pass@1 min": min(finals), "pass@1 max": max(finals),
                     f"steps to {threshold:.2f}": statistics.mean(got) if got else None, "reached": f"{len(got)}/{seeds}",
                     "mean len final": statistics.mean(lens), "wall s": statistics.mean(walls[arm])})

    plots.curves(out / "pass_at_1.png", pass_curves, title=f"held-out pass@1 on {args.task}", xlabel="RL step", ylabel="pass@1")
    plots.curves(out / "mean_len.png", len_curves, title="mean completion length (rollouts)", xlabel="RL step", ylabel="tokens")
    plots.bars(out / "wall.png", walls, title="wall time per run", ylabel="seconds")
    best = max(rows, key=lambda r: r["pass@1 final"])
    by = {r["algorithm"]: r for r in rows}
    verdict = f"highest final held-out pass@1: {best['algorithm']} ({best['pass@1 final']:.3f}; base {base_pass:.3f})"
    if "grpo" in by and "dr_grpo" in by:
        verdict += (f"; Dr. GRPO's length claim: final mean length {by['dr_grpo']['mean len final']:.1f} vs GRPO's "
                    f"{by['grpo']['mean len final']:.1f} ({'shorter, as claimed' if by['dr_grpo']['mean len final'] < by['grpo']['mean len final'] else 'not shorter'})")
    experiment.write(out, "algorithms", rows, {"quick": args.quick, "seeds": seeds, "steps": steps, "task": args.task,
                                               "base_pass@1": base_pass, "threshold": threshold, "verdict": verdict},
                     title=f"RL algorithms on {args.task}: {steps} steps, {seeds} seed(s) each")
    print(verdict)


if __name__ == "__main__":
    main()
