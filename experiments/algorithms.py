"""GRPO, Dr. GRPO, DAPO, GSPO, RLOO and REINFORCE++ on one procedural task, the same budget.

    python experiments/algorithms.py [--out DIR] [--quick] [--seeds 3] [--steps 40] [--task chain]
                                     [--init RUN_OR_CHECKPOINT | --pretrain-steps N] [--prompts 8]
                                     [--arms grpo,dapo,grpo:mini_batches=4,...] [--lr 2.5e-5] [--collect]

One base model, either pretrained here once (seeded) or an existing one (``--init``, a pretrain
run, a `zero` run or a checkpoint folder, as ``r1lab rl --init`` takes it); then each algorithm's
preset (r1lab/configs/<algo>.yaml, the paper's setting) runs RL from it for the same number of
steps, prompts and samples, on each seed. Measured: held-out pass@1 every ``--eval-every`` steps
(the curve and the steps to reach the base model's pass@1 + ``--gain``), a final evaluation with
``--final-samples`` samples per problem (pass@1, and the mean length of correct and of wrong
completions), the rollouts' mean completion length (Dr. GRPO's claim: GRPO's 1/|o| normaliser
lets wrong answers grow longer), the steps to the threshold on the rollouts' correct rate (per
step), the rollouts' entropy at the end, groups drawn per step (DAPO's dynamic sampling), CPU and
wall time. Writes table.md, summary.json and plots (pass@1, length and rollout correct-rate
curves with seed bands, wall-time and final pass@1 bars) through r1lab.report. The
reward-hacking monitor is off in these runs (it only observes). Runs go seed by seed; several processes may share one --out
(each claims a run before training it, and a finished run's result.json is read, not rerun);
``--collect`` only tabulates what is finished.

An arm is a preset's name, optionally with ``rl.*`` overrides after colons: ``grpo:mini_batches=4``
is GRPO taking 4 optimizer steps per batch, ``dapo:lr=2.5e-5`` DAPO at a quarter of the step size.
``--lr X`` sets rl.lr for every arm that does not set it (and names it in the arm, ``dapo:lr=X``), so
runs at another lr share one --out with the default ones (each arm's runs live in ARM/seedN, with
``+`` for ``:``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from r1lab import config as config_lib
from r1lab.recipes import common, pretrain
from r1lab.recipes import rl as rl_recipe
from r1lab.recipes.eval import evaluate_model
from r1lab.report import experiment, plots
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task
from r1lab.tracking import read_metrics

ARMS = ["grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp"]

QUICK = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "d_ff": 64, "n_routed_experts": 4, "top_k": 2, "d_expert": 16},
    "pretrain": {"steps": 8, "batch_size": 8, "warmup_steps": 2},
    "rl": {"prompts_per_step": 2, "group_size": 4, "eval_problems": 4, "sample": {"max_new_tokens": 24}},
    "eval": {"sample": {"max_new_tokens": 24}},
    "threads": 1,
}


def lengths_by_outcome(samples: Path) -> tuple[float | None, float | None]:
    """Mean completion length (tokens) of the correct and of the wrong samples in an eval samples
    file (None where there are none)."""
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    right = [r["length"] for r in rows if r["correct"]]
    wrong = [r["length"] for r in rows if not r["correct"]]
    return (statistics.mean(right) if right else None), (statistics.mean(wrong) if wrong else None)


def final_eval(ckpt: Path, task: str, eval_cfg: config_lib.EvalConfig, samples: Path) -> tuple[float, float | None, float | None]:
    """pass@1 of the checkpoint on the held-out problems and the mean lengths of its correct and
    wrong completions (written to ``samples``)."""
    model, _ = common.load_model(ckpt)
    res = evaluate_model(model, common.load_tokenizer(ckpt), get_task(task), eval_cfg, RewardWeights(), desc="final eval", samples_out=samples)
    return (res.metrics["pass@1"], *lengths_by_outcome(samples))


FIXED = ("steps", "eval_every", "prompts_per_step", "group_size", "eval_problems", "monitor")
"rl keys the experiment sets for every arm alike (its budget and evaluation): an arm may not override them"


def parse_arm(spec: str, lr: float | None = None) -> tuple[str, dict]:
    """``'grpo:mini_batches=4:lr=2.5e-5'`` -> (``'grpo:mini_batches=4:lr=2.5e-05'``, the preset's keys with those
    rl.* overrides on top). The label names each override with its validated value; ``lr`` (the ``--lr``
    flag) is added where the spec sets none. Raises ConfigError naming the culprit."""
    preset, *pairs = spec.strip().split(":")
    if preset not in config_lib.presets():
        raise config_lib.ConfigError(f"no preset {preset!r} in arm {spec!r}; shipped: {', '.join(config_lib.presets())}")
    over: dict = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key or not raw:
            raise config_lib.ConfigError(f"arm {spec!r}: {pair!r} is not KEY=VALUE (an rl.* key, e.g. grpo:mini_batches=4)")
        if key in FIXED:
            raise config_lib.ConfigError(f"arm {spec!r}: rl.{key} is the experiment's, the same for every arm (set it with the experiment's flags)")
        if key in over:
            raise config_lib.ConfigError(f"arm {spec!r}: rl.{key} is given twice")
        over[key] = config_lib.parse_overrides([f"--rl.{key}", raw])["rl"][key]
    if lr is not None and "lr" not in over:
        over["lr"] = lr
    layers = config_lib.load_yaml(preset)
    try:
        rl = config_lib.build(layers, {"rl": over}).rl  # validates keys, types and values
    except config_lib.ConfigError as err:
        raise config_lib.ConfigError(f"arm {spec!r}: {err}") from None
    shown = {k: getattr(rl, k) for k in over}
    label = ":".join([preset] + [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()])
    return label, {**layers, "rl": {**layers.get("rl", {}), **shown}}


def arm_dir(out: Path, label: str) -> Path:
    """The folder of an arm's runs (``:`` -> ``+``, which shells do not treat specially)."""
    return out / label.replace(":", "+")


CLAIM = "claim.pid"
"a run folder's marker: the id of the process training it"


def claim(run_dir: Path) -> bool:
    """Claim ``run_dir`` for this process: False when a live process holds it (a dead one's claim is taken over)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(path.read_text() or 0), 0)
            return False
        except (ProcessLookupError, ValueError):
            path.write_text(str(os.getpid()))  # a killed process's claim (two takers at once is out of scope)
            return True
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def trailing_mean(values: list[float], window: int) -> list[float]:
    """Each value averaged with the ``window - 1`` before it (fewer at the start)."""
    return [statistics.mean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def mean_or_none(values: list) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.mean(got) if got else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/experiments/algorithms")
    ap.add_argument("--quick", action="store_true", help="a tiny model and 2 RL steps: checks the plumbing in seconds")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="RL steps per run (the same budget for every algorithm)")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per RL step (kept groups under DAPO's dynamic sampling)")
    ap.add_argument("--group-size", type=int, default=8, help="samples per prompt")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--gain", type=float, default=0.10, help="threshold = base pass@1 + gain")
    ap.add_argument("--window", type=int, default=5, help="steps averaged in the rollouts' correct-rate curve (steps to the threshold, per step)")
    ap.add_argument("--task", default="chain", help="the RL task; with --init, the one the base was trained on")
    ap.add_argument("--init", default="", help="start every arm from this base (pretrain run, zero run or checkpoint folder) instead of pretraining one")
    ap.add_argument("--pretrain-steps", type=int, default=0, help="pretraining steps of the base model; 0 keeps the config default")
    ap.add_argument("--eval-problems", type=int, default=100)
    ap.add_argument("--final-samples", type=int, default=4, help="samples per problem in the base's and each run's final evaluation")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (use 1 on a busy machine)")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms: PRESET[:RL_KEY=VALUE...], e.g. grpo,grpo:mini_batches=4")
    ap.add_argument("--lr", type=float, default=None, help="rl.lr of every arm that does not set its own (default: each preset's, r1lab's 1e-4)")
    ap.add_argument("--collect", action="store_true", help="train nothing: tabulate the runs already finished in --out (by other processes)")
    args = ap.parse_args()
    os.environ.setdefault("R1LAB_NO_PROGRESS", "1")
    out = Path(args.out)
    if args.lr is not None and not 0 < args.lr < float("inf"):
        print(f"error: --lr: {args.lr} is not a positive finite learning rate", file=sys.stderr)
        sys.exit(2)
    try:
        parsed = [parse_arm(a, args.lr) for a in args.arms.split(",")]
    except config_lib.ConfigError as err:
        print(f"error: --arms: {err}", file=sys.stderr)
        sys.exit(2)
    arms = [label for label, _ in parsed]
    arm_keys = dict(parsed)
    seeds = 1 if args.quick else args.seeds
    steps, eval_every = (2, 1) if args.quick else (args.steps, args.eval_every)
    shared = QUICK if args.quick else {"rl": {"prompts_per_step": args.prompts, "group_size": args.group_size, "eval_problems": args.eval_problems}}
    if args.pretrain_steps and not args.quick:
        shared = {**shared, "pretrain": {"steps": args.pretrain_steps}}
    shared = {"threads": args.threads, **shared, "task": args.task, "tensorboard": False, "save_every": 10_000}
    shared["rl"] = {**shared["rl"], "monitor": {"enabled": False}}  # it only observes; its probe would cost every arm the same

    # One base model for every arm and seed: the comparison is between RL algorithms only.
    base_cfg = config_lib.build(shared, {"out": str(out / "base")})
    base_dir = out / "base"
    try:
        if args.init:
            base_ckpt = common.resolve_checkpoint(args.init).path
        else:
            base_ckpt = pretrain.run(base_cfg, base_dir) if not (base_dir / "checkpoints").is_dir() else common.resolve_checkpoint(base_dir).path
    except common.StageError as err:
        print(f"error: --init: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"algorithms: base {base_ckpt}")
    final_cfg = config_lib.EvalConfig(n_problems=base_cfg.rl.eval_problems, n_samples=args.final_samples, ks=[1], seed=base_cfg.eval.seed,
                                      sample=base_cfg.eval.sample)
    common.seed_everything(0, base_cfg.threads)
    base_pass, base_right, base_wrong = final_eval(base_ckpt, args.task, final_cfg, out / "base_samples.jsonl")
    threshold = base_pass + args.gain

    # Train every (seed, arm) run not yet finished, seed by seed (so an interrupted comparison has every
    # arm on its first seeds). Several processes may share --out: each claims a run before training it.
    for seed in range(0 if args.collect else seeds):
        for arm in arms:
            run_dir = arm_dir(out, arm) / f"seed{seed}"
            if (run_dir / "result.json").is_file() or not claim(run_dir):
                continue
            cfg = config_lib.build(arm_keys[arm], shared,
                                   {"seed": seed, "out": str(run_dir), "resume": True, "rl": {"steps": steps, "eval_every": eval_every}})
            t, c = time.perf_counter(), time.process_time()
            last = rl_recipe.run(cfg, run_dir, base_ckpt)
            result = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}  # a resumed run counts only its remaining steps
            common.seed_everything(0, cfg.threads)
            result["final"] = final_eval(last, args.task, final_cfg, run_dir / "final_samples.jsonl")
            (run_dir / "result.json").write_text(json.dumps(result))
            (run_dir / CLAIM).unlink()

    # Tabulate the finished runs (all of them, unless another process still trains some).
    pass_curves, len_curves, train_curves, walls, rows, lens_by_arm, final_by_arm = {}, {}, {}, {}, [], {}, {}
    for arm in arms:
        pass_curves[arm], len_curves[arm], train_curves[arm], walls[arm] = [], [], [], []
        lens_by_arm[arm] = lens = []
        curve_finals, finals, _, rights, wrongs, reached, reached_train, drawn, cpus, ents = [], [], [], [], [], [], [], [], [], []
        for seed in range(seeds):
            run_dir = arm_dir(out, arm) / f"seed{seed}"
            if not (run_dir / "result.json").is_file():
                continue
            result = json.loads((run_dir / "result.json").read_text())
            walls[arm].append(result["wall_s"])
            cpus.append(result["cpu_s"])
            final, right, wrong = result["final"]
            metrics = read_metrics(run_dir / "metrics.jsonl")
            evals = [(0, base_pass)] + [(m["step"], m["eval/pass@1"]) for m in metrics if "eval/pass@1" in m]
            pass_curves[arm].append(([s for s, _ in evals], [v for _, v in evals]))
            len_curves[arm].append(([m["step"] for m in metrics], [m["rollout/mean_len"] for m in metrics]))
            curve_finals.append(evals[-1][1])
            lens.append(statistics.mean(m["rollout/mean_len"] for m in metrics[-5:]))  # the last 5 steps' rollouts
            ents.append(statistics.mean(m["rollout/entropy"] for m in metrics[-5:]))  # DAPO's clip-higher claim: entropy does not collapse
            drawn.append(statistics.mean(m.get("rollout/groups_drawn_per_kept", 1.0) for m in metrics))
            hit = [s for s, v in evals if v >= threshold]
            reached.append(hit[0] if hit else None)
            # The same threshold on the rollouts' correct rate (the policy's own samples of fresh training
            # prompts before each update, a trailing mean over --window steps): step resolution, no extra sampling.
            # Not under dynamic sampling: its rollouts are the kept groups only (all-correct groups dropped).
            if "rollout/groups_drawn_per_kept" not in metrics[0]:
                train = trailing_mean([m["rollout/correct_rate"] for m in metrics], args.window)
                train_curves[arm].append(([m["step"] for m in metrics], train))
                hit = [m["step"] for m, v in zip(metrics, train) if v >= threshold]
                reached_train.append(hit[0] if hit else None)
            finals.append(final)
            rights.append(right)
            wrongs.append(wrong)
            print(f"algorithms: {arm} seed {seed}: final pass@1 {final:.3f}, curve {[round(v, 3) for _, v in evals]}, {walls[arm][-1]:.0f} s")
        if not finals:  # --collect: no finished run of this arm yet
            for d in (pass_curves, len_curves, train_curves, walls):
                del d[arm]
            continue
        final_by_arm[arm] = finals
        got = [s for s in reached if s is not None]
        got_train = [s for s in reached_train if s is not None]
        rows.append({"algorithm": arm, "pass@1 final": statistics.mean(finals), "pass@1 min": min(finals), "pass@1 max": max(finals),
                     "curve last": statistics.mean(curve_finals),
                     f"steps to {threshold:.2f}": statistics.mean(got) if got else None, "reached": f"{len(got)}/{len(finals)}",
                     "steps to it (rollouts)": statistics.mean(got_train) if got_train else None, "reached (rollouts)": f"{len(got_train)}/{len(reached_train)}" if reached_train else "n/a",
                     "len rollouts end": statistics.mean(lens), "len correct": mean_or_none(rights), "len wrong": mean_or_none(wrongs),
                     "entropy end": statistics.mean(ents), "seeds": len(finals),
                     "groups drawn/kept": statistics.mean(drawn), "cpu s": statistics.mean(cpus), "wall s": statistics.mean(walls[arm])})

    plots.curves(out / "pass_at_1.png", pass_curves, title=f"held-out pass@1 on {args.task}", xlabel="RL step", ylabel="pass@1")
    plots.curves(out / "mean_len.png", len_curves, title="mean completion length (rollouts)", xlabel="RL step", ylabel="tokens")
    plots.curves(out / "rollout_correct.png", train_curves, title=f"rollouts' correct rate ({args.window}-step trailing mean)", xlabel="RL step",
                 ylabel="correct rate")
    plots.bars(out / "wall.png", walls, title="wall time per run", ylabel="seconds")
    plots.bars(out / "final_pass.png", final_by_arm, title=f"final held-out pass@1 (base {base_pass:.3f})", ylabel="pass@1")
    best = max(rows, key=lambda r: r["pass@1 final"])
    by = {r["algorithm"]: r for r in rows}
    verdict = f"highest final held-out pass@1: {best['algorithm']} ({best['pass@1 final']:.3f}; base {base_pass:.3f})"
    if "grpo" in by and "dr_grpo" in by:
        g, d = by["grpo"]["len rollouts end"], by["dr_grpo"]["len rollouts end"]
        spread = max(max(v) - min(v) for v in (lens_by_arm["grpo"], lens_by_arm["dr_grpo"]))  # across seeds
        said = "within the seed spread" if abs(d - g) <= spread else "shorter, as claimed" if d < g else "longer, not as claimed"
        verdict += (f"; Dr. GRPO's length claim: final rollout length {d:.1f} vs GRPO's {g:.1f} ({said}: {spread:.1f} tokens),"
                    f" wrong answers {fmt(by['dr_grpo']['len wrong'])} vs {fmt(by['grpo']['len wrong'])} tokens")
    experiment.write(out, "algorithms", rows, {"quick": args.quick, "seeds": seeds, "steps": steps, "task": args.task, "init": str(base_ckpt),
                                               "prompts_per_step": shared["rl"]["prompts_per_step"], "group_size": shared["rl"]["group_size"],
                                               "eval_problems": base_cfg.rl.eval_problems, "final_samples": args.final_samples,
                                               "base_pass@1": base_pass, "base_len_correct": base_right, "base_len_wrong": base_wrong,
                                               "threshold": threshold, "verdict": verdict,
                                               "pass_curves": {a: [list(map(list, zip(*c))) for c in cs] for a, cs in pass_curves.items()}},
                     title=f"RL algorithms on {args.task}: {steps} steps, {seeds} seed(s) each")
    print(verdict)


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


if __name__ == "__main__":
    main()
