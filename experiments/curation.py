"""Data efficiency: uniform prompts vs a difficulty curriculum vs pass-rate curation, equal compute.

    python experiments/curation.py [--out DIR] [--quick] [--datasets letter_counting@min_words=30,max_words=38] [--budget N]
    (a dataset may carry reasoning-gym options: --datasets family_relationships,letter_counting@min_words=30,max_words=38)
                                   [--init CKPT] [--seeds 0,1,2] [--workers N]

The defaults are the setting of docs/gym.md's headline figures (the 3-seed replication on
letter_counting at 30-38 words, where uniform GRPO stalls: uniform +0.009, curriculum +0.047,
pass-rate curation +0.046 held-out pass@1). That run started every arm from experiments/breadth.py's
shared base (``--init runs/experiments/breadth/base/checkpoints/step_360``); without ``--init`` a
base is pretrained on the dataset itself, so its figures differ.

On each dataset one base is pretrained (seeded; or ``--init`` gives one, e.g. the mixed base of
experiments/breadth.py), then GRPO runs from it once per arm and seed, choosing its prompts with
``data.prompts`` = uniform, curriculum, pass_rate. Compute is equal in sampled
completions: every arm gets ``--budget`` completions in all; the curation arm pays for its
pass-rate estimates (data.candidates x data.samples per refresh) out of that budget, so it runs
fewer RL steps. Measured: held-out pass@1 (test split, default difficulty) every
``--eval-every`` steps, and the sampled completions spent when it first reaches the base's pass@1
+ ``--gain`` (and the RL step), per seed. Runs go to ``--workers`` processes; each is seeded on its
own, so the figures do not depend on the number of workers. Writes table.md, summary.json and one curve plot per dataset through r1lab.report.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
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


def slug(dataset: str) -> str:
    """A file name for a dataset spec: ``letter_counting@min_words=30,max_words=38`` -> ``letter_counting_min_words30_max_words38``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.replace("=", "")).strip("_")


def split_datasets(text: str) -> list[str]:
    """``--datasets``: comma- (or semicolon-) separated; a part holding ``=`` but no ``@`` is one
    more option of the dataset before it (``gcd,letter_counting@min_words=30,max_words=38``)."""
    out: list[str] = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if part and "=" in part and "@" not in part and out:
            out[-1] += "," + part
        elif part:
            out.append(part)
    return out


def charged(cfg, arm: str, step: int) -> int:
    """Completions an arm is charged after ``step`` RL steps (the plan ``steps_for`` budgets):
    the pass-rate arm's refreshes at full size, though candidates drawn twice are estimated once."""
    per_step = cfg.rl.prompts_per_step * cfg.rl.group_size
    if arm != "pass_rate" or step == 0:
        return step * per_step
    return step * per_step + ((step - 1) // cfg.data.refresh_every + 1) * cfg.data.candidates * cfg.data.samples


def steps_for(cfg, arm: str, budget: int) -> int:
    """RL steps an arm can afford out of ``budget`` sampled completions (estimates included: what
    ``charged`` counts)."""
    steps = 0
    while charged(cfg, arm, steps + 1) <= budget:
        steps += 1
    return steps


def make_base(dataset: str, layers: dict, out: Path, seed: int, init: str | None) -> tuple[str, float]:
    """The base every arm starts from (``init``, or pretrained here on the dataset) and its held-out
    pass@1 under the arms' periodic evaluation (``rl.eval_problems`` problems, 2 samples each)."""
    base_cfg = config_lib.build(layers, {"task": f"gym:{dataset}", "seed": seed})
    task = get_task(base_cfg.task, seed=base_cfg.seed)
    if init is None:
        base_cfg.model.max_seq_len, _ = context.size(base_cfg, task, CharTokenizer.build())
        base_dir = out / slug(dataset) / "base"
        base_cfg.out, base_cfg.resume = str(base_dir), True
        common.prepare_run_dir(base_dir, base_cfg)
        init = str(pretrain.run(base_cfg, base_dir))
    common.seed_everything(base_cfg.seed, base_cfg.threads)
    model, _ = common.load_model(init)
    weights = RewardWeights(base_cfg.rl.format_weight, base_cfg.rl.correct_weight, base_cfg.rl.partial_weight)
    rl_eval = config_lib.build({"eval": {"n_problems": base_cfg.rl.eval_problems, "n_samples": 2, "ks": [1], "sample": layers.get("eval", {}).get("sample", {})}}).eval
    return init, evaluate_model(model, common.load_tokenizer(init), task, rl_eval, weights).metrics["pass@1"]


def run_arm(dataset: str, arm: str, seed: int, layers: dict, budget: int, eval_every: int, base_ckpt: str, run_dir: Path) -> dict:
    """GRPO from ``base_ckpt`` with prompts chosen by ``arm``, as many steps as ``budget`` sampled
    completions afford (estimates included); its held-out pass@1 curve in completions spent."""
    cfg = config_lib.build(layers, {"task": f"gym:{dataset}", "seed": seed, "data": {"prompts": arm}})
    steps = steps_for(cfg, arm, budget)
    cfg = config_lib.build(layers, {"task": f"gym:{dataset}", "seed": seed, "data": {"prompts": arm}, "rl": {"steps": steps, "eval_every": eval_every}})
    cfg.out, cfg.init, cfg.resume = str(run_dir), base_ckpt, True
    common.prepare_run_dir(run_dir, cfg)
    rl_recipe.run(cfg, run_dir, base_ckpt)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    per_step = cfg.rl.prompts_per_step * cfg.rl.group_size
    spent = [(m["step"], m["step"] * per_step + m.get("curation/estimate_samples", 0), m["eval/pass@1"]) for m in metrics if "eval/pass@1" in m]
    levels = [m["curriculum/level"] for m in metrics if "curriculum/level" in m]
    return {"dataset": dataset, "arm": arm, "seed": seed, "rl_steps": steps, "curve": spent,
            "charged": [charged(cfg, arm, s) for s, _, _ in spent],  # the seeds' common x for the plot
            "train_correct": sum(m["rollout/correct_rate"] for m in metrics) / max(len(metrics), 1),
            "zero_var": sum(m.get("rollout/zero_var_group_frac", 0.0) for m in metrics) / max(len(metrics), 1),
            "estimate_samples": metrics[-1].get("curation/estimate_samples", 0) if metrics else 0,
            "fallback_steps": sum(1 for m in metrics if m.get("curation/fallback")),
            "top_level": max(levels) if levels else None}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/experiments/curation")
    ap.add_argument("--quick", action="store_true", help="a tiny model and a few RL steps on one dataset: the plumbing in seconds")
    ap.add_argument("--datasets", default="letter_counting@min_words=30,max_words=38", help="comma-separated; a dataset may carry reasoning-gym options (NAME@key=value,...)")
    ap.add_argument("--init", default=None, help="start every arm from this checkpoint (e.g. experiments/breadth.py's mixed base) instead of pretraining one per dataset")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated RL seeds (the base is the same for all)")
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--budget", type=int, default=1536, help="sampled completions per arm (training + estimation)")
    ap.add_argument("--eval-every", type=int, default=6)
    ap.add_argument("--gain", type=float, default=0.05)
    ap.add_argument("--eval-problems", type=int, default=128, help="held-out problems of each periodic evaluation (2 samples each)")
    ap.add_argument("--candidates", type=int, default=32, help="data.candidates: prompts estimated per refresh (curation arm)")
    ap.add_argument("--samples", type=int, default=4, help="data.samples: samples per estimated prompt")
    ap.add_argument("--refresh-every", type=int, default=6, help="data.refresh_every")
    ap.add_argument("--window", type=int, default=3, help="data.window: steps of train correct rate the curriculum averages")
    ap.add_argument("--batch-size", type=int, default=24, help="pretraining rows per step")
    ap.add_argument("--prompts-per-step", type=int, default=8, help="RL prompts per step (group size 8)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--workers", type=int, default=1, help="arms x seeds run in this many processes at once")
    return ap


def main() -> None:
    args = parser().parse_args()
    os.environ.setdefault("R1LAB_NO_PROGRESS", "1")
    out = Path(args.out)
    datasets = split_datasets(args.datasets)[:1] if args.quick else split_datasets(args.datasets)
    seeds = [int(s) for s in args.seeds.split(",")]
    for d in datasets:  # an unknown dataset or option: one line, before any base is pretrained
        try:
            get_task(f"gym:{d}")
        except ValueError as err:
            raise SystemExit(f"curation: --datasets: {err}") from None
    layers = QUICK if args.quick else {"pretrain": {"steps": args.pretrain_steps, "batch_size": args.batch_size},
                                       "rl": {"eval_every": args.eval_every, "prompts_per_step": args.prompts_per_step, "eval_problems": args.eval_problems},
                                       "data": {"candidates": args.candidates, "samples": args.samples, "refresh_every": args.refresh_every, "window": args.window},
                                       "threads": args.threads, "tensorboard": False}
    budget = 6 * 8 if args.quick else args.budget
    eval_every = 1 if args.quick else args.eval_every
    bases = {d: make_base(d, layers, out, seeds[0], args.init) for d in datasets}
    jobs = [(d, arm, seed, layers, budget, eval_every, bases[d][0], out / slug(d) / f"{arm}_s{seed}") for d in datasets for arm in ARMS for seed in seeds]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(run_arm, *zip(*jobs)))
    else:
        runs = [run_arm(*job) for job in jobs]
    rows, summary_curves, parts = [], {}, []
    for d in datasets:
        base_pass = bases[d][1]
        curves, finals = {}, {}
        for arm in ARMS:
            mine = [r for r in runs if r["dataset"] == d and r["arm"] == arm]
            # x: the completions charged (seeds of the pass-rate arm may estimate a few fewer: repeated candidates)
            curves[arm] = [([0] + r["charged"], [base_pass] + [p for _, _, p in r["curve"]]) for r in mine]
            final = [r["curve"][-1][2] if r["curve"] else base_pass for r in mine]
            reached = [next((c for _, c, p in r["curve"] if p >= base_pass + args.gain), None) for r in mine]
            steps = [next((s for s, _, p in r["curve"] if p >= base_pass + args.gain), None) for r in mine]
            finals[arm] = sum(final) / len(final)
            rows.append({"dataset": d, "arm": arm, "seeds": len(mine), "rl_steps": mine[0]["rl_steps"], "base_pass@1": base_pass,
                         "final_pass@1_mean": finals[arm], "final_pass@1_seeds": " ".join(f"{v:.3f}" for v in final),
                         "gain_mean": finals[arm] - base_pass,
                         "completions_to_threshold": " ".join(str(c) if c is not None else "never" for c in reached),
                         "steps_to_threshold": " ".join(str(s) if s is not None else "never" for s in steps),
                         "train_correct_mean": sum(r["train_correct"] for r in mine) / len(mine),
                         "zero_var_groups_mean": sum(r["zero_var"] for r in mine) / len(mine),
                         "estimate_samples": mine[0]["estimate_samples"], "fallback_steps": " ".join(str(r["fallback_steps"]) for r in mine),
                         "top_level": " ".join("-" if r["top_level"] is None else str(r["top_level"]) for r in mine)})
        summary_curves[d] = {arm: [{"x": x, "pass@1": y} for x, y in c] for arm, c in curves.items()}
        plots.curves(out / f"{slug(d)}_pass_at_1.png", curves, title=f"gym:{d}\nheld-out pass@1 at equal compute ({len(seeds)} seed{'s' * (len(seeds) > 1)})",
                     xlabel="sampled completions (training + pass-rate estimates)", ylabel="pass@1")
        top = max(finals.values())
        leaders = [a for a, v in finals.items() if v == top]
        parts.append(f"{d}: no arm ahead (all {top:.3f})" if len(leaders) == len(finals) else
                     f"{d}: highest mean final held-out pass@1 with {', '.join(leaders)} ({top:.3f}; base {base_pass:.3f})")
    verdict = "; ".join(parts)
    experiment.write(out, "curation", rows, {"quick": args.quick, "seeds": seeds, "budget_completions": budget, "gain": args.gain, "init": args.init,
                                             "curves": summary_curves, "runs": runs, "verdict": verdict},
                     title=f"uniform vs curriculum vs pass-rate curation, {budget} sampled completions per arm, seeds {args.seeds}")
    print(verdict)

if __name__ == "__main__":
    main()
