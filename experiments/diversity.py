"""Does RL narrow what a model can solve, and does distillation narrow its answers?

    python experiments/diversity.py [--quick] [--seed 0] [--n 64] [--problems 100] [--base RUN [--rl RUN]] [--out DIR]

Three models, evaluated on the same held-out problems with the same n samples each (unbiased
pass@k for every k = 1..n, distinct answers per problem, distinct-2 of the reasoning, entropy):
  base       pretrained from scratch (zero's pretraining; ``--base RUN`` reuses a pretrained run)
  rl         GRPO from base with verifiable rewards only (R1-Zero)
  distilled  base fine-tuned on the RL model's verified samples: rejection sampling, then SFT
             (sequence-level distillation, DeepSeek-R1 sec. 2.4, here into the same architecture)
Yue et al. 2025 (arXiv:2504.13837) report that RL raises pass@1 while the base model's pass@k
catches up and overtakes it at large k (the curves cross): RL sharpens what the base can already
sample rather than adding new solutions. The seed's claim is that distillation "raises efficiency
but lowers diversity". Writes table.md, summary.json, pass_at_k.png and distinct_answers.png.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from r1lab import checkpoint
from r1lab import config as config_lib
from r1lab.config import Config, EvalConfig
from r1lab.evaluate import EvalResult
from r1lab.recipes import common, pretrain, rejection_sample, rl, sft
from r1lab.recipes.eval import evaluate_model
from r1lab.recipes.r1 import cold_start_records, write_jsonl
from r1lab.report import experiment, plots
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task

QUICK = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "d_ff": 64, "n_routed_experts": 4, "top_k": 2, "d_expert": 16},
    "pretrain": {"steps": 8, "batch_size": 8, "warmup_steps": 2},
    "rl": {"steps": 2, "prompts_per_step": 2, "group_size": 4, "eval_every": 0, "sample": {"max_new_tokens": 24}},
    "rejection": {"n_prompts": 4, "samples_per_prompt": 4, "sample": {"max_new_tokens": 24}},
    "sft": {"steps": 2, "batch_size": 2, "val_fraction": 0.0},
    "eval": {"sample": {"max_new_tokens": 24}},
}


def stage(cfg: Config, run_dir: Path, train) -> Path:
    """Run (or, when its folder is complete, reuse) one training stage; return its last checkpoint."""
    cfg = config_lib.build(config_lib.to_dict(cfg), {"resume": True})
    run_dir.mkdir(parents=True, exist_ok=True)
    return train(cfg, run_dir)


def crossing(base: list[float], tuned: list[float]) -> int | None:
    """The smallest k at which the base's pass@k is at least the tuned model's, if tuned starts above."""
    if tuned[0] <= base[0]:
        return None
    return next((k for k, (b, t) in enumerate(zip(base, tuned), start=1) if b >= t), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/experiments/diversity")
    ap.add_argument("--quick", action="store_true", help="a tiny model and a few steps: checks the plumbing in seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", default="chain")
    ap.add_argument("--n", type=int, default=64, help="samples per problem (pass@k for k = 1..n)")
    ap.add_argument("--problems", type=int, default=100, help="held-out problems")
    ap.add_argument("--base", default="", help="a pretrained run or checkpoint folder to reuse as the base (e.g. runs/zero-x/pretrain)")
    ap.add_argument("--rl", default="", help="an RL-trained run or checkpoint folder (trained from --base) to reuse as the RL model")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    args = ap.parse_args()
    os.environ.setdefault("R1LAB_NO_PROGRESS", "1")
    out = Path(args.out)
    n, problems = (4, 3) if args.quick else (args.n, args.problems)
    keys = {**(QUICK if args.quick else {}), "task": args.task, "seed": args.seed, "threads": args.threads, "tensorboard": False, "save_every": 10_000}
    cfg = config_lib.build(keys)
    task = get_task(args.task, seed=args.seed)
    walls: dict[str, float] = {}

    t = time.perf_counter()
    if args.base:
        base = common.resolve_checkpoint(args.base).path
    else:
        if checkpoint.latest_step(out / "base") is None:
            common.prepare_run_dir(out / "base", cfg)
        base = stage(cfg, out / "base", pretrain.run)
    walls["base"] = time.perf_counter() - t
    t = time.perf_counter()
    rl_ckpt = common.resolve_checkpoint(args.rl).path if args.rl else stage(cfg, out / "rl", lambda c, d: rl.run(c, d, base))
    walls["rl"] = time.perf_counter() - t
    t = time.perf_counter()
    data = out / "rejection" / "samples.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    source = "the RL model's verified samples (rejection sampling)"
    if not rejection_sample.run(cfg, data, rl_ckpt)["kept"]:  # a tiny --quick model: nothing verified to distil
        source = "the task's worked solutions: rejection sampling accepted none of the RL model's samples"
        print(f"diversity: distilling {source}")
        write_jsonl(data, cold_start_records(task, common.load_tokenizer(base), 64, args.seed))
    distilled = stage(config_lib.build(config_lib.to_dict(cfg), {"sft": {"data": f"jsonl:{data}"}}), out / "distilled",
                      lambda c, d: sft.run(c, d, base))
    walls["distilled"] = time.perf_counter() - t

    ecfg = EvalConfig(n_problems=problems, n_samples=n, ks=sorted({1, n}), seed=cfg.eval.seed, sample=cfg.eval.sample)
    results: dict[str, EvalResult] = {}
    for name, ckpt in (("base", base), ("rl", rl_ckpt), ("distilled", distilled)):
        common.seed_everything(args.seed, args.threads)
        model, _ = common.load_model(ckpt)
        results[name] = evaluate_model(model, common.load_tokenizer(ckpt), task, ecfg, RewardWeights(), desc=f"eval {name}")

    ks = list(range(1, n + 1))
    plots.curves(out / "pass_at_k.png", {name: [(ks, r.pass_curve)] for name, r in results.items()},
                 title=f"pass@k on held-out {args.task} ({problems} problems, n={n})", xlabel="k (samples)", ylabel="pass@k (unbiased)", logx=True)
    plots.bars(out / "distinct_answers.png", {name: [r.diversity["distinct_answers_per_problem"]] for name, r in results.items()},
               title=f"distinct final answers per problem (of n={n})", ylabel="distinct answers")
    probe = [k for k in (1, 4, 16, 64) if k <= n]
    rows = [{"model": name, **{f"pass@{k}": r.pass_curve[k - 1] for k in probe}, f"pass@{n}": r.pass_curve[-1],
             **r.diversity, "mean_len": r.metrics["mean_len"], "train_s": walls[name]} for name, r in results.items()]

    b, t_rl, d = (results[m].pass_curve for m in ("base", "rl", "distilled"))
    cross = crossing(b, t_rl)
    parts = [f"RL pass@1 {b[0]:.3f} -> {t_rl[0]:.3f}, pass@{n} {b[-1]:.3f} -> {t_rl[-1]:.3f}"]
    if t_rl[0] <= b[0]:
        parts.append("RL did not raise pass@1 here, so no crossing can be read")
    elif cross is not None:
        parts.append(f"the curves cross at k={cross}: from there the base solves at least as many problems (as Yue et al. 2025 report)")
    else:
        parts.append(f"the curves do not cross up to k={n}: RL stays above the base at every k (Yue et al.'s crossing is not seen at this n)")
    cross_d = crossing(b, d)
    if cross_d is not None:
        parts.append(f"the distilled model starts above the base (pass@1 {d[0]:.3f} vs {b[0]:.3f}) and the base overtakes it from k={cross_d}")
    da = {m: results[m].diversity["distinct_answers_per_problem"] for m in results}
    parts.append(f"distinct answers per problem: base {da['base']:.2f}, rl {da['rl']:.2f}, distilled {da['distilled']:.2f} "
                 f"({'distillation narrowed them' if da['distilled'] < da['base'] else 'distillation did not narrow them'} relative to the base; "
                 f"distilled pass@1 {d[0]:.3f})")
    verdict = "; ".join(parts) + f" (distilled from {source})"
    summary = {"quick": args.quick, "seeds": [args.seed], "task": args.task, "n": n, "problems": problems, "distilled_from": source,
               "pass_curves": {m: r.pass_curve for m, r in results.items()}, "crossing_k": cross, "distilled_crossing_k": cross_d,
               "arms": {m: {"metrics": r.metrics, "diversity": r.diversity} for m, r in results.items()}, "verdict": verdict}
    experiment.write(out, "diversity", rows, summary, title=f"diversity of base, RL and distilled models on held-out {args.task} (n={n})")
    print(verdict)


if __name__ == "__main__":
    main()
