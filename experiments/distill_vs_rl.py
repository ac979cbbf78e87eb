"""A small dense student: distilled from an RL-trained MoE teacher, or trained with RL directly?

    python experiments/distill_vs_rl.py [--quick] [--seed 0] [--teacher RUN] [--n 16] [--out DIR]

DeepSeek-R1 (arXiv:2501.12948, sec. 4.1, table 6) distils R1's samples into small dense models and
finds the distilled Qwen-32B far ahead of the same model trained with large-scale RL. Here:
  teacher    the MoE model of ``r1lab zero`` (pretrained, then GRPO); ``--teacher RUN`` reuses one
  student    a small dense model pretrained on the same corpus (fewer steps, a quarter of the width)
  distilled  the student after sequence-level distillation: ``r1lab distill`` (SFT on the teacher's
             verified samples of train prompts; ``--mode token``: KL to its logits), timed
  rl         the student after GRPO for the same wall-clock as the distillation (run in chunks of
             ``--chunk`` steps until it has used as much time; it resumes bit-identically between chunks)
All four are evaluated on the same held-out problems, n samples each: pass@1 and pass@n.
Writes table.md, summary.json, pass_at_k.png and pass_at_1.png.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from r1lab import checkpoint
from r1lab import config as config_lib
from r1lab.config import EvalConfig
from r1lab.evaluate import EvalResult
from r1lab.model.transformer import count_parameters
from r1lab.recipes import common, distill, pretrain, rl
from r1lab.recipes.eval import evaluate_model
from r1lab.report import experiment, plots
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task

STUDENT = {"ffn": "dense", "d_model": 64, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "d_ff": 192}
"a quarter of the teacher's width, half its depth, dense"
QUICK_TEACHER = {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "d_ff": 64, "n_routed_experts": 4, "top_k": 2, "d_expert": 16}
QUICK_STUDENT = {"ffn": "dense", "d_model": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "d_ff": 32}
QUICK = {
    "pretrain": {"steps": 8, "batch_size": 8, "warmup_steps": 2},
    "rl": {"steps": 2, "prompts_per_step": 2, "group_size": 4, "eval_every": 0, "sample": {"max_new_tokens": 24}},
    "rejection": {"n_prompts": 4, "samples_per_prompt": 4, "sample": {"max_new_tokens": 24}},
    "sft": {"steps": 2, "batch_size": 2, "val_fraction": 0.0},
    "distill": {"sample": {"max_new_tokens": 24}},
    "eval": {"sample": {"max_new_tokens": 24}},
}


def train(keys: dict, run_dir: Path, fn) -> tuple[Path, float]:
    """Run (or resume, or reuse when complete) one stage in ``run_dir``; (last checkpoint, seconds)."""
    cfg = config_lib.build(keys, {"resume": True, "out": str(run_dir)})
    if not (run_dir / "config.yaml").is_file():
        common.prepare_run_dir(run_dir, cfg)
    t = time.perf_counter()
    path = fn(cfg, run_dir)
    return path, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/experiments/distill_vs_rl")
    ap.add_argument("--quick", action="store_true", help="tiny models and a few steps: checks the plumbing in seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", default="chain")
    ap.add_argument("--teacher", default="", help="an RL-trained run or checkpoint folder to reuse as the teacher (e.g. runs/zero-x)")
    ap.add_argument("--student-pretrain-steps", type=int, default=600)
    ap.add_argument("--distill-steps", type=int, default=100, help="SFT steps on the teacher's verified samples (token mode: KL steps)")
    ap.add_argument("--mode", choices=["sequence", "token"], default="sequence",
                    help="sequence: SFT on the teacher's verified samples (DeepSeek-R1); token: KL to the teacher's logits")
    ap.add_argument("--chunk", type=int, default=5, help="RL steps between wall-clock checks")
    ap.add_argument("--n", type=int, default=16, help="samples per held-out problem")
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("R1LAB_NO_PROGRESS", "1")
    out = Path(args.out)
    n, problems = (4, 3) if args.quick else (args.n, args.problems)
    shared = {**(QUICK if args.quick else {}), "task": args.task, "seed": args.seed, "threads": args.threads, "tensorboard": False,
              "save_every": 10_000, "keep_checkpoints": 1}
    teacher_keys = {**shared, "model": QUICK_TEACHER} if args.quick else shared
    student_model = QUICK_STUDENT if args.quick else STUDENT
    student_keys = {**shared, "model": student_model,
                    "pretrain": {**shared.get("pretrain", {}), **({} if args.quick else {"steps": args.student_pretrain_steps})}}

    # The teacher: zero's recipe (MoE pretrain, then GRPO), or a given run.
    if args.teacher:
        teacher = common.resolve_checkpoint(args.teacher).path
    else:
        t_base, _ = train(teacher_keys, out / "teacher-base", pretrain.run)
        teacher, _ = train(teacher_keys, out / "teacher", lambda c, d: rl.run(c, d, t_base))
    student, _ = train(student_keys, out / "student", pretrain.run)

    # Distillation, timed (teacher sampling included), then RL on the student for as long.
    # --quick: a teacher trained for seconds has no verified sample to learn from, so it distils at token level.
    mode = "token" if args.quick else args.mode
    distill_keys = {**student_keys, "distill": {**student_keys.get("distill", {}), "teacher": str(teacher), "mode": mode,
                                                **({"steps": 2, "prompts_per_step": 2} if args.quick else {"steps": args.distill_steps})},
                    "sft": {**student_keys.get("sft", {}), **({} if args.quick else {"steps": args.distill_steps})}}
    distilled, distill_s = train(distill_keys, out / "distilled", lambda c, d: distill.run(c, d, student, teacher))
    budget_file = out / "distill_s.txt"
    if not budget_file.is_file() or distill_s > 1.0:  # a reused (finished) distillation keeps its measured time
        budget_file.write_text(f"{distill_s}\n")
    budget = float(budget_file.read_text())
    rl_dir, rl_s, steps = out / "rl", 0.0, 0
    chunk = 1 if args.quick else args.chunk
    while rl_s < budget:
        steps = (checkpoint.latest_step(rl_dir) or 0) + chunk
        rl_keys = {**student_keys, "rl": {**student_keys.get("rl", {}), "steps": steps, "eval_every": 0}}
        rl_ckpt, dt = train(rl_keys, rl_dir, lambda c, d: rl.run(c, d, student))
        rl_s += dt
        if args.quick and steps >= 2:
            break

    ecfg = EvalConfig(n_problems=problems, n_samples=n, ks=sorted({1, n}), seed=config_lib.EvalConfig().seed,
                      sample=config_lib.build(shared).eval.sample)
    task = get_task(args.task, seed=args.seed)
    results: dict[str, EvalResult] = {}
    rows = []
    for name, ckpt, wall in (("teacher (MoE, RL)", teacher, None), ("student base", student, None),
                             ("student distilled", distilled, budget), ("student RL", rl_ckpt, rl_s)):
        common.seed_everything(args.seed, args.threads)
        model, _ = common.load_model(ckpt)
        total, active = count_parameters(model)
        results[name] = r = evaluate_model(model, common.load_tokenizer(ckpt), task, ecfg, RewardWeights(), desc=f"eval {name}")
        rows.append({"model": name, "params_M": total / 1e6, "active_M": active / 1e6, "pass@1": r.pass_curve[0], f"pass@{n}": r.pass_curve[-1],
                     "distinct_answers": r.diversity["distinct_answers_per_problem"], "mean_len": r.metrics["mean_len"],
                     "train_s": wall, "rl_steps": steps if name == "student RL" else None})

    ks = list(range(1, n + 1))
    plots.curves(out / "pass_at_k.png", {m: [(ks, r.pass_curve)] for m, r in results.items()},
                 title=f"pass@k on held-out {args.task} ({problems} problems, n={n})", xlabel="k (samples)", ylabel="pass@k (unbiased)", logx=True)
    plots.bars(out / "pass_at_1.png", {m: [r.pass_curve[0]] for m, r in results.items()}, title="held-out pass@1", ylabel="pass@1")
    d, r_ = results["student distilled"].pass_curve, results["student RL"].pass_curve
    verdict = (f"at equal wall-clock ({budget:.0f} s distilling vs {rl_s:.0f} s / {steps} steps of GRPO), the distilled student reaches "
               f"pass@1 {d[0]:.3f} and pass@{n} {d[-1]:.3f}, the RL student {r_[0]:.3f} and {r_[-1]:.3f} "
               f"(student base {results['student base'].pass_curve[0]:.3f}, teacher {results['teacher (MoE, RL)'].pass_curve[0]:.3f}): "
               f"DeepSeek-R1's distillation result {'reproduces' if d[0] > r_[0] else 'does not reproduce'} here at pass@1")
    summary = {"quick": args.quick, "seeds": [args.seed], "mode": mode, "task": args.task, "n": n, "problems": problems, "budget_s": budget, "rl_s": rl_s,
               "rl_steps": steps, "pass_curves": {m: r.pass_curve for m, r in results.items()}, "verdict": verdict}
    experiment.write(out, "distill_vs_rl", rows, summary, title=f"distilled vs RL-trained dense student on held-out {args.task}")
    print(verdict)


if __name__ == "__main__":
    main()
