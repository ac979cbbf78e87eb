"""Process rewards vs outcome rewards on one procedural task, the same seeds and budget, with the
reward-hacking monitor watching every run.

    python experiments/process_vs_outcome.py [--out DIR] [--quick] [--seeds 2] [--steps 40] [--task chain]
                                             [--base RUN] [--prm RUN] [--arms outcome,process,hybrid,oracle]

One base policy (pretrained here, or ``--base``). One process reward model: ``--prm``, or trained
here the Math-Shepherd way (arXiv:2312.08935): ``r1lab prm label`` rolls out ``--rollouts``
continuations from every step prefix of the base policy's traces (hard labels: does any reach the
right answer), ``r1lab prm train`` fits the PRM (initialised from the policy, as in the paper),
and its step accuracy and AUC against the task's exact step labels are measured on held-out
problems. Then GRPO from the base with the advantages of:

- ``outcome``: R1's verifiable outcome reward (format + correctness);
- ``process``: the learned PRM's step scores, DeepSeekMath's process supervision (sec. 4.1.3);
- ``hybrid``: half process, half outcome advantages (``--process-weight``);
- ``oracle``: process supervision with the task's exact step checks (the PRM research lacks);
- ``hackable``: a positive control for the monitor, the outcome reward plus a length bonus big
  enough that rambling to the token budget pays more than a right answer.

Measured per arm: held-out verified pass@1 every ``--eval-every`` steps (the curve, the final
value, steps to reach base + ``--gain``), the learned PRM's step accuracy on the policy's own
samples during RL (does the policy drift where the PRM is wrong?), and the monitor's events.
Writes table.md, summary.json and plots through r1lab.report.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from r1lab import checkpoint
from r1lab import config as config_lib
from r1lab.prm import load_scorer
from r1lab.recipes import common, pretrain
from r1lab.recipes import prm as prm_recipe
from r1lab.recipes import rl as rl_recipe
from r1lab.recipes.eval import evaluate_model
from r1lab.report import experiment, plots
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task
from r1lab.tracking import read_metrics

ARMS = ["outcome", "process", "hybrid", "oracle", "hackable"]
REWARD = {"outcome": "outcome", "process": "process", "hybrid": "hybrid", "oracle": "process", "hackable": "outcome"}
"each arm's rl.reward; the oracle arm runs without --rl.prm"
HACKABLE = {"extra_rewards": ["chars"], "extra_reward_weights": [3.0]}
"the positive control: 3 reward points per 100 characters, so rambling to the token budget pays more than a right answer"

QUICK = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "d_ff": 64, "n_routed_experts": 4, "top_k": 2, "d_expert": 16},
    "pretrain": {"steps": 8, "batch_size": 8, "warmup_steps": 2},
    "rl": {"prompts_per_step": 2, "group_size": 4, "eval_problems": 4, "sample": {"max_new_tokens": 24},
           "monitor": {"probe_every": 1, "probe_problems": 3, "window": 2, "probe_window": 2}},
    "eval": {"sample": {"max_new_tokens": 24}},
    "prm": {"n_problems": 3, "traces_per_problem": 2, "rollouts": 2, "steps": 2, "batch_size": 4, "sample": {"max_new_tokens": 24}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/experiments/process_vs_outcome")
    ap.add_argument("--quick", action="store_true", help="a tiny model, a 2-step PRM and 2 RL steps: checks the plumbing in seconds")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40, help="RL steps per run (the same budget for every arm)")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--eval-problems", type=int, default=100)
    ap.add_argument("--gain", type=float, default=0.05, help="threshold = base pass@1 + gain")
    ap.add_argument("--task", default="chain")
    ap.add_argument("--base", default="", help="a pretrained run or checkpoint to start from (default: pretrain one here)")
    ap.add_argument("--pretrain-steps", type=int, default=0, help="pretraining steps of the base model; 0 keeps the config default")
    ap.add_argument("--prm", default="", help="a trained `r1lab prm train` run (default: label and train one here)")
    ap.add_argument("--label-problems", type=int, default=64, help="train problems the PRM's labels come from")
    ap.add_argument("--rollouts", type=int, default=8, help="Math-Shepherd N: rollouts per step prefix (the paper: 8)")
    ap.add_argument("--prm-steps", type=int, default=300)
    ap.add_argument("--process-weight", type=float, default=0.5)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per RL step")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (use 1 on a busy machine)")
    ap.add_argument("--arms", default=",".join(ARMS))
    args = ap.parse_args()
    os.environ.setdefault("R1LAB_NO_PROGRESS", "1")
    out = Path(args.out)
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"--arms: unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}")
    seeds = 1 if args.quick else args.seeds
    steps, eval_every = (2, 1) if args.quick else (args.steps, args.eval_every)
    if args.quick:
        shared: dict = QUICK
    else:
        shared = {"rl": {"prompts_per_step": args.prompts, "group_size": 8, "eval_problems": args.eval_problems},
                  "prm": {"n_problems": args.label_problems, "traces_per_problem": 4, "rollouts": args.rollouts, "steps": args.prm_steps}}
        if args.pretrain_steps:
            shared = {**shared, "pretrain": {"steps": args.pretrain_steps}}
    shared = {**shared, "threads": args.threads, "task": args.task, "tensorboard": False, "save_every": 10_000}

    # 1. One base policy for every arm and seed.
    base_cfg = config_lib.build(shared, {"out": str(out / "base")})
    if args.base:
        base_ckpt = common.resolve_checkpoint(args.base).path
    else:
        base_dir = out / "base"
        base_ckpt = pretrain.run(base_cfg, base_dir) if not (base_dir / "checkpoints").is_dir() else common.resolve_checkpoint(base_dir).path
    model, _ = common.load_model(base_ckpt)
    tok = common.load_tokenizer(base_ckpt)
    eval_cfg = config_lib.EvalConfig(n_problems=base_cfg.rl.eval_problems, n_samples=2, ks=[1], seed=base_cfg.eval.seed, sample=base_cfg.eval.sample)
    common.seed_everything(0, base_cfg.threads)
    base_pass = evaluate_model(model, tok, get_task(args.task), eval_cfg, RewardWeights(), desc="eval base").metrics["pass@1"]
    threshold = base_pass + args.gain

    # 2. One learned PRM (Math-Shepherd labels from the base policy), and its held-out step accuracy.
    prm_info: dict = {}
    needs_prm = any(a in ("process", "hybrid") for a in arms)
    prm_run = Path(args.prm) if args.prm else out / "prm"
    if needs_prm:
        held = out / "prm_labels_test.jsonl"
        if not args.prm:
            labels = out / "prm_labels_train.jsonl"
            if not labels.is_file():
                prm_recipe.label(config_lib.build(shared, {"init": str(base_ckpt), "out": str(labels), "prm": {"split": "train"}}))
            if checkpoint.latest_step(prm_run) is None:
                prm_recipe.train(config_lib.build(shared, {"init": str(base_ckpt), "out": str(prm_run), "resume": True,
                                                          "prm": {"action": "train", "data": str(labels), "labels": "hard"}}))
        if not held.is_file():
            prm_recipe.label(config_lib.build(shared, {"init": str(base_ckpt), "out": str(held), "seed": 1,
                                                      "prm": {"split": "test", "rollouts": 0, "n_problems": max(8, shared["prm"]["n_problems"] // 2)}}))
        prm_info = prm_recipe.evaluate(load_scorer(prm_run), prm_recipe.read_data(str(held)), 0.5)
        print(f"PRM {prm_run}: held-out step accuracy {prm_info['step_accuracy']:.3f}, AUC {prm_info['step_auc']:.3f} "
              f"against exact labels ({prm_info['steps_judged']} steps; {prm_info['step_good_rate']:.0%} right)")

    # 3. RL, one run per arm and seed, the same budget.
    curves: dict[str, list] = {}
    acc_curves: dict[str, list] = {}
    rows, event_rows = [], []
    for arm in arms:
        curves[arm], finals, reached, events, accs = [], [], [], [], []
        for seed in range(seeds):
            run_dir = out / arm / f"seed{seed}"
            rl_over = {"steps": steps, "eval_every": eval_every, "reward": REWARD[arm], "process_weight": args.process_weight,
                       "prm": str(prm_run) if arm in ("process", "hybrid") else "", **(HACKABLE if arm == "hackable" else {})}
            cfg = config_lib.build(shared, {"seed": seed, "out": str(run_dir), "resume": True, "rl": rl_over})
            rl_recipe.run(cfg, run_dir, base_ckpt)
            metrics = read_metrics(run_dir / "metrics.jsonl")
            evals = [(0, base_pass)] + [(m["step"], m["eval/pass@1"]) for m in metrics if "eval/pass@1" in m]
            curves[arm].append(([s for s, _ in evals], [v for _, v in evals]))
            finals.append(evals[-1][1])
            hit = [s for s, v in evals if v >= threshold]
            reached.append(hit[0] if hit else None)
            run_events = [json.loads(line) for line in (run_dir / rl_recipe.EVENTS_FILE).read_text().splitlines() if line.strip()]
            events += run_events
            event_rows += [{"arm": arm, "seed": seed, "step": e["step"], "kind": e["kind"], "message": e["message"]} for e in run_events]
            acc = [(m["step"], m["process/prm_step_acc"]) for m in metrics if "process/prm_step_acc" in m]
            if acc:
                acc_curves.setdefault(arm, []).append(([s for s, _ in acc], [v for _, v in acc]))
                accs.append((statistics.mean(v for _, v in acc[:max(1, len(acc) // 4)]), statistics.mean(v for _, v in acc[-max(1, len(acc) // 4):])))
        got = [s for s in reached if s is not None]
        kinds = sorted({e["kind"] for e in events})
        rows.append({"arm": arm, "reward": REWARD[arm] + (" (learned PRM)" if arm in ("process", "hybrid") else " (exact checks)" if arm == "oracle" else " + 3 x length bonus" if arm == "hackable" else ""),
                     "pass@1 final": statistics.mean(finals), "pass@1 min": min(finals), "pass@1 max": max(finals),
                     f"steps to {threshold:.2f}": statistics.mean(got) if got else None, "reached": f"{len(got)}/{seeds}",
                     "PRM step acc (RL samples) first->last": f"{statistics.mean(a for a, _ in accs):.3f}->{statistics.mean(b for _, b in accs):.3f}" if accs else "",
                     "monitor events": len(events), "event kinds": ",".join(kinds)})

    plots.curves(out / "pass_at_1.png", curves, title=f"held-out verified pass@1 on {args.task}", xlabel="RL step", ylabel="pass@1")
    if acc_curves:
        plots.curves(out / "prm_step_acc.png", acc_curves, title="learned PRM's step accuracy on the policy's samples (vs exact)",
                     xlabel="RL step", ylabel="accuracy")
    by = {r["arm"]: r for r in rows}
    verdict = f"base pass@1 {base_pass:.3f}; final held-out pass@1: " + ", ".join(f"{a} {by[a]['pass@1 final']:.3f}" for a in arms)
    if "outcome" in by:
        for arm in ("process", "hybrid", "oracle", "hackable"):
            if arm in by:
                a, o = by[arm], by["outcome"]
                diff = a["pass@1 final"] - o["pass@1 final"]
                if a["pass@1 min"] > o["pass@1 max"]:
                    call = "helps: above outcome in every seed"
                elif a["pass@1 max"] < o["pass@1 min"]:
                    call = "hurts: below outcome in every seed"
                else:
                    call = "no clear difference: the seeds' ranges overlap"
                verdict += (f"; {arm} vs outcome {diff:+.3f} ({call}"
                            f"{'; monitor flagged ' + a['event kinds'] if a['monitor events'] else '; no monitor event'})")
    verdict += " (Math-Shepherd: process-supervised PPO 77.9 -> 84.1 on GSM8K over outcome-supervised)"
    experiment.write(out, "process_vs_outcome", rows,
                     {"quick": args.quick, "seeds": seeds, "steps": steps, "task": args.task, "base_pass@1": base_pass, "threshold": threshold,
                      "prm": str(prm_run) if needs_prm else None, "prm_heldout": prm_info, "events": event_rows, "verdict": verdict},
                     title=f"process vs outcome rewards on {args.task}: {steps} RL steps, {seeds} seed(s) each")
    if event_rows:
        print(f"monitor events: {len(event_rows)}; see summary.json")
    print(verdict)


if __name__ == "__main__":
    main()
