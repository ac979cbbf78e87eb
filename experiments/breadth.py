"""Outcome RL beyond math and code: `r1lab zero` on reasoning-gym datasets across domains, equal budget.

    python experiments/breadth.py [--out DIR] [--quick] [--datasets a,b,...] [--pretrain-steps N] [--rl-steps N]

For each dataset (default: 12 across arithmetic, algorithmic, logic, cognition, games, graphs)
the same recipe runs with the same budget: pretrain a tiny model from scratch on the dataset's
corpus (worked solutions where ``gym_solutions`` has them), measure the base's held-out pass@1 and
pass@8, run GRPO, measure again. The context is sized from each task (recipes/context.py).
Writes table.md, summary.json and two bar plots (held-out pass@1 gain; completion length
change) through r1lab.report. The verdict names the datasets where RL gained and where not.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from r1lab import config as config_lib
from r1lab.recipes import common, context, pretrain, prompts
from r1lab.recipes import rl as rl_recipe
from r1lab.recipes.eval import evaluate_model
from r1lab.report import experiment, plots
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer

DOMAINS = {
    "basic_arithmetic": "arithmetic", "chain_sum": "arithmetic", "leg_counting": "arithmetic", "gcd": "arithmetic",
    "base_conversion": "algorithmic", "letter_counting": "algorithmic", "spell_backward": "algorithmic",
    "number_sorting": "algorithmic", "propositional_logic": "logic", "syllogism": "logic",
    "color_cube_rotation": "cognition", "tower_of_hanoi": "games", "shortest_path": "graphs",
}

DEFAULT = [d for d in DOMAINS if d != "number_sorting"]
"12 datasets, every domain the issue names (number_sorting is one more algorithmic option)"

QUICK = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "d_ff": 64, "n_routed_experts": 4, "top_k": 2, "d_expert": 16},
    "pretrain": {"steps": 3, "batch_size": 4, "warmup_steps": 1},
    "rl": {"steps": 1, "prompts_per_step": 2, "group_size": 4, "eval_every": 0, "sample": {"max_new_tokens": 16}},
    "eval": {"n_problems": 3, "n_samples": 8, "ks": [1, 8], "sample": {"max_new_tokens": 16}},
    "data": {"signal_problems": 4},
    "threads": 1, "tensorboard": False,
}


def run_one(dataset: str, layers: dict, out: Path, seed: int) -> dict:
    """zero's stages on ``gym:<dataset>``: pretrain, base eval, signal check, GRPO, eval."""
    cfg = config_lib.build(layers, {"task": f"gym:{dataset}", "seed": seed, "out": str(out)})
    task = get_task(cfg.task, seed=cfg.seed)
    cfg.model.max_seq_len, _ = context.size(cfg, task, CharTokenizer.build())
    common.prepare_run_dir(out, cfg)
    t0 = time.time()
    base_ckpt = pretrain.run(cfg, out / "pretrain")
    weights = RewardWeights(cfg.rl.format_weight, cfg.rl.correct_weight, cfg.rl.partial_weight)
    tok = common.load_tokenizer(base_ckpt)

    def measure(path):
        common.seed_everything(cfg.seed, cfg.threads)
        model, _ = common.load_model(path)
        return model, evaluate_model(model, tok, task, cfg.eval, weights).metrics

    base_model, base = measure(base_ckpt)
    signal = prompts.signal_check(cfg, base_model, tok, task, dataset)
    tuned = measure(rl_recipe.run(cfg, out / "rl", base_ckpt))[1]
    return {"dataset": dataset, "domain": DOMAINS.get(dataset, "?"), "max_seq_len": cfg.model.max_seq_len,
            "worked": bool(task.pool("train")[0].solution), "base_pass@1": base["pass@1"], "base_pass@8": base["pass@8"],
            "train_pass@8": signal["pass@8"], "rl_pass@1": tuned["pass@1"], "gain": tuned["pass@1"] - base["pass@1"],
            "base_len": base["mean_len"], "rl_len": tuned["mean_len"], "len_change": tuned["mean_len"] - base["mean_len"], "wall_s": time.time() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/experiments/breadth")
    ap.add_argument("--quick", action="store_true", help="a tiny model, 3 pretraining and 1 RL step on two datasets: the plumbing in seconds")
    ap.add_argument("--datasets", default=",".join(DEFAULT))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--rl-steps", type=int, default=40)
    ap.add_argument("--eval-problems", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=24, help="pretraining rows per step")
    ap.add_argument("--prompts-per-step", type=int, default=16, help="RL prompts per step (group size 8)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("R1LAB_NO_PROGRESS", "1")
    out = Path(args.out)
    datasets = args.datasets.split(",")
    if args.quick:
        datasets, layers = datasets[:2], QUICK
    else:
        layers = {"pretrain": {"steps": args.pretrain_steps, "batch_size": args.batch_size},
                  "rl": {"steps": args.rl_steps, "eval_every": 0, "prompts_per_step": args.prompts_per_step},
                  "eval": {"n_problems": args.eval_problems}, "threads": args.threads, "tensorboard": False}
    rows = [run_one(d, layers, out / d, args.seed) for d in datasets]
    plots.bars(out / "gain.png", {r["dataset"]: [r["gain"]] for r in rows},
               title="held-out pass@1 gain of GRPO over the base", ylabel="pass@1 (RL) - pass@1 (base)")
    plots.bars(out / "len_change.png", {r["dataset"]: [r["len_change"]] for r in rows},
               title="mean completion length change after GRPO", ylabel="tokens")
    helped = [r["dataset"] for r in rows if r["gain"] > 0.02]
    flat = [r["dataset"] for r in rows if r["gain"] <= 0.02]
    no_signal = [r["dataset"] for r in rows if r["train_pass@8"] < layers.get("data", {}).get("signal_threshold", 0.1)]
    verdict = (f"RL gained more than 2 points of held-out pass@1 on {', '.join(helped) or 'no dataset'}; not on {', '.join(flat) or 'none'}. "
               f"Bases with train pass@8 below the signal threshold (nothing to select): {', '.join(no_signal) or 'none'}.")
    experiment.write(out, "breadth", rows, {"quick": args.quick, "seeds": [args.seed], "verdict": verdict,
                                            "budget": {"pretrain": layers["pretrain"], "rl": layers["rl"], "eval": layers["eval"]}},
                     title="r1lab zero on reasoning-gym datasets, equal budget (held-out test split)")
    print(verdict)


if __name__ == "__main__":
    main()
