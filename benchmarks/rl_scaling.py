"""RL under torchrun on this machine: the same GRPO run in 1 process and as 2 ranks (DDP, FSDP2) of
half the prompts each, with ``--rl.group_seeds`` so that all three draw the same samples. Prints
sample, train and step seconds per step (medians over the steps; the first step is left out, it
holds FSDP2's lazy initialisation) and whether the reward curves are identical.

    python benchmarks/rl_scaling.py [--steps 6] [--init RUN]   # no --init: pretrains a tiny MoE base

Each configuration runs ``r1lab rl`` as a user would (``--nproc 2`` starts torchrun; gloo on the
CPU). On a 2-core machine the point is correctness and overhead, not a speed-up. The last line is
one JSON object, ratios first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "R1LAB_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
BASE = ["--model.d_model", "32", "--model.n_layers", "2", "--model.n_heads", "2", "--model.n_kv_heads", "1", "--model.d_ff", "64",
        "--model.n_routed_experts", "4", "--model.top_k", "2", "--model.d_expert", "16", "--model.aux_loss_coef", "0",
        "--model.router", "sigmoid", "--model.bias_update_speed", "0.001", "--model.mtp_depth", "1",
        "--pretrain.steps", "6", "--pretrain.batch_size", "8", "--pretrain.warmup_steps", "2"]
"a tiny MoE base (aux-free bias, MTP), as tests/test_distributed.py pretrains"
CONFIGS = [("1 process", ["--rl.prompts_per_step", "4"]), ("2 x DDP", ["--rl.prompts_per_step", "2", "--nproc", "2"]),
           ("2 x FSDP2", ["--rl.prompts_per_step", "2", "--nproc", "2", "--dist.strategy", "fsdp2"])]


def r1lab(*args: str) -> None:
    res = subprocess.run([sys.executable, "-m", "r1lab", *args], env=ENV, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"r1lab {args[0]} failed:\n{res.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="RL steps per configuration")
    ap.add_argument("--init", default="", help="a pretrained run or checkpoint (default: pretrain a tiny MoE base first)")
    args = ap.parse_args()
    from r1lab.tracking import format_table, read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        init = args.init or str(Path(tmp) / "base")
        if not args.init:
            r1lab("pretrain", *BASE, "--threads", "1", "--tensorboard", "false", "--out", init)
        rl = ["rl", "--init", init, "--threads", "1", "--tensorboard", "false", "--rl.steps", str(args.steps), "--rl.group_size", "4",
              "--rl.eval_every", "0", "--rl.sample.max_new_tokens", "24", "--rl.monitor.enabled", "false", "--save_every", "1000",
              "--rl.group_seeds", "true", "--rl.extra_rewards", '["chars"]', "--rl.extra_reward_weights", "[0.5]"]
        table, curves = [], {}
        for name, extra in CONFIGS:
            out = Path(tmp) / name.replace(" ", "_")
            r1lab(*rl, *extra, "--out", str(out))
            rows = read_metrics(out / "metrics.jsonl")
            later = rows[1:] or rows
            step = [r["time/sample_s"] + r["time/train_s"] for r in later]
            curves[name] = [r["rollout/reward_mean"] for r in rows]
            table.append({"configuration": name, "sample_s": statistics.median(r["time/sample_s"] for r in later),
                          "train_s": statistics.median(r["time/train_s"] for r in later), "step_s": statistics.median(step),
                          "step_s_range": f"{min(step):.3f}-{max(step):.3f}", "first_step_s": rows[0]["time/sample_s"] + rows[0]["time/train_s"]})
    print(format_table(table, title=f"RL, {args.steps} steps of 4 prompts x 4 samples (2 ranks: 2 prompts each), group seeds"))
    same = all(abs(a - b) <= 1e-5 * max(1.0, abs(a)) for name in curves for a, b in zip(curves["1 process"], curves[name]))
    print(f"rollout/reward_mean per step, 1 process: {[round(v, 6) for v in curves['1 process']]}; the same in every configuration: {same}")
    one = {r["configuration"]: r for r in table}
    print(json.dumps({"ddp2_over_one_step_s": one["2 x DDP"]["step_s"] / one["1 process"]["step_s"],
                      "fsdp2_over_ddp2_step_s": one["2 x FSDP2"]["step_s"] / one["2 x DDP"]["step_s"],
                      "reward_curves_identical": same, "table": table, "reward_mean_1_process": curves["1 process"]}))


if __name__ == "__main__":
    main()
