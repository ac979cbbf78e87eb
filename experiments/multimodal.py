"""Does joint training help, and does Janus's decoupled visual encoding beat one shared encoding?

    python experiments/multimodal.py [--quick] [--seeds 0 1] [--budget 0.333] [--out DIR] [--threads 1]

Four arms run the real `r1lab janus` recipe with the same steps and batch size (every arm sees
janus.batch_size sequences per step in every stage: equal steps and rows; not equal FLOPs, as a
question is ~60 positions and a drawing ~130-180) and one VQ tokenizer per seed; what changes is
what the sequences are:

  joint        the default mix: understanding + text-to-image + text (Janus)
  und-only     no text-to-image sequences (janus.gen_weight 0)
  gen-only     only text-to-image sequences and text (janus.gen_weight 1 - text_weight)
  shared-vq    joint, but understanding reads the VQ codes through the generation embedding
               instead of the patch encoder (janus.und_input vq): one encoding for both ways

Understanding is held-out greedy accuracy (R1 reward, exact answers; pass@1 at T = 1 beside it);
generation is the share of held-out scene prompts whose image the exact detector reads back, with
guidance and without (digits, read by the classifier, are only ten prompts). The seed says
multimodal learning is "not ready yet: no lab has shown convincing gains"; the verdict line
compares joint with the single-task arms and with the shared encoding at this scale: mean
differences over the seeds, and each seed's own (arms of one seed share the VQ tokenizer).

Each arm-seed is its own run folder under --out; processes with different --seeds or --arms can
share one --out (a finished arm is reused, not rerun), and a last call naming all seeds merges
them (with --merge it trains nothing and tabulates whatever arm-seeds are finished): table.md
(a row per arm and seed, then a mean row per arm), summary.json (with "means"), understanding.png
(mean, min-max whiskers, a dot per seed), understanding_by_kind.png (scenes and digits, each
beside its own blind bar), generation.png.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
from pathlib import Path

from r1lab import config as config_lib
from r1lab.recipes import janus
from r1lab.report import experiment, plots

ARMS = {
    "joint": {},
    "und-only": {"gen_weight": 0.0},
    "gen-only": {"gen_weight": 0.9, "text_weight": 0.1},
    "shared-vq": {"und_input": "vq"},
}
BUDGET = 1 / 3
"""each arm's default budget without --quick, as a fraction of `r1lab janus`'s stage-II/III steps
(stage I, the VQ tokenizer and the evaluation stay at the defaults): 1/3 is 150 + 400 + 200 steps,
~4-6 CPU-minutes an arm at 1 thread (und-only cheapest), what two seeds of four arms could have on
a shared machine. Neither 1/6 nor 1/3 learnt to see or draw (docs/janus.md); the full default
(1.0, ~16 CPU-minutes an arm) reads digits and draws scenes."""


def budget(fraction: float) -> dict:
    """The config layer of one arm at `fraction` of the default stage-II/III steps."""
    d = config_lib.build().janus
    return {"janus": {"unified_steps": max(1, round(d.unified_steps * fraction)), "instruct_steps": max(1, round(d.instruct_steps * fraction))}}


QUICK = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "d_ff": 48, "n_routed_experts": 4, "top_k": 2, "d_expert": 16},
    "janus": {"vq_steps": 4, "vq_batch_size": 8, "vq_channels": 8, "vq_codebook": 16, "enc_dim": 16, "enc_layers": 1, "align_steps": 2,
              "unified_steps": 3, "instruct_steps": 2, "batch_size": 6, "warmup_steps": 1, "eval_questions": 6, "eval_prompts": 4, "eval_samples": 2},
    "tensorboard": False,
}


def merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def seed_vq(out: Path, seed: int, cfg: config_lib.Config) -> Path:
    """The seed's VQ tokenizer under ``out/vq-only``, trained by the first process to get there;
    processes that start arms of one seed together wait on an exclusive lock for it, instead of
    writing one folder at once (which interleaved their metrics lines)."""
    folder = out / "vq-only" / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"seed{seed}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"multimodal: waiting for seed {seed}'s VQ tokenizer (another process is training it)", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        return janus.train_vq(cfg, folder / "vq")  # the lock goes with the file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model and a few steps (the test's smoke run)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=BUDGET,
                    help="fraction of the default stage-II/III steps per arm (default %(default).3g; 1.0 = the `r1lab janus` default)")
    ap.add_argument("--out", default="runs/experiments/multimodal")
    ap.add_argument("--merge", action="store_true",
                    help="train nothing: write the table, plots and summary of the arm-seeds already finished under --out")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS),
                    help="run only these arms (several processes can share one --out; a finished arm is reused, not rerun)")
    args = ap.parse_args()
    out = Path(args.out)
    if not 0 < args.budget <= 4:
        raise SystemExit(f"multimodal: --budget must be in (0, 4], got {args.budget}")
    base = QUICK if args.quick else budget(args.budget)
    rows, results = [], {}
    for arm in args.arms:
        for seed in args.seeds:
            run = out / arm / f"seed{seed}"
            if args.merge and not (run / "summary.json").is_file():
                continue  # --merge reads finished arms only
            if not (run / "summary.json").is_file():
                # Every arm of a seed reads the same VQ tokenizer (same settings and seed): trained
                # once, copied into each arm's folder, where the recipe resumes it as finished.
                layer = merge(base, {"seed": seed, "threads": args.threads, "out": str(out / "vq-only" / f"seed{seed}"), "resume": True})
                vq_dir = seed_vq(out, seed, config_lib.build(layer))
                if not (run / "vq").is_dir():
                    shutil.copytree(vq_dir.parents[1], run / "vq")
                layer = merge(base, {"janus": ARMS[arm], "seed": seed, "threads": args.threads, "out": str(run), "resume": True})
                janus.main(config_lib.build(layer))
            s = json.loads((run / "summary.json").read_text())
            g, u = s["generation"]["guided"], s["understanding"]
            row = {"arm": arm, "seed": seed, "und_greedy": u["greedy_accuracy"], "und_scene_greedy": u.get("scene_greedy_accuracy", float("nan")),
                   "und_digit_greedy": u.get("digit_greedy_accuracy", float("nan")), "und_pass@1": u["pass@1"], "blind_majority": u["blind_majority"],
                   "gen_scene_acc": g["scene_accuracy"], "gen_digit_acc": g["digit_accuracy"],
                   "gen_scene_unguided": s["generation"]["unguided"]["scene_accuracy"], "gen_digit_unguided": s["generation"]["unguided"]["digit_accuracy"],
                   "cpu_s": round(s["timings"].get("cpu_s", s.get("cpu_s", 0))), "wall_s": round(s["wall_s"])}
            rows.append(row)
            results.setdefault(arm, []).append(row)
    if not args.merge and set(results) != set(ARMS):
        print(f"multimodal: arms {sorted(results)} done; run the others (or all), or --merge, to write the table")
        return
    if not rows:
        raise SystemExit(f"multimodal: no finished arm under {out}")

    seeds = sorted({r["seed"] for r in rows})
    # The blind bars of each kind's questions (every arm answers the same held-out questions).
    cfg = config_lib.build(base)
    items = janus.eval_items(cfg)
    j = cfg.janus
    bars = {kind: janus.blind_baselines([it for it in items if it.kind == kind], j.digit_fraction)["blind_majority"]
            for kind in ("scene", "digit") if any(it.kind == kind for it in items)}
    keys = ("und_greedy", "und_scene_greedy", "und_digit_greedy", "und_pass@1", "gen_scene_acc", "gen_scene_unguided", "gen_digit_acc", "cpu_s")

    def mean(arm: str, key: str) -> float:
        vals = [r[key] for r in results[arm] if r[key] == r[key]]
        return sum(vals) / len(vals) if vals else float("nan")

    def gain(a: str, b: str, key: str) -> str:
        """Mean difference a - b over the seeds both arms finished, and each seed's own (paired)."""
        xa, xb = ({r["seed"]: r[key] for r in results.get(arm, [])} for arm in (a, b))
        per = [xa[seed] - xb[seed] for seed in sorted(set(xa) & set(xb))]
        if not per:
            return "n/a (an arm is not finished)"
        return f"{sum(per) / len(per):+.3f}" + (" (seeds " + ", ".join(f"{d:+.3f}" for d in per) + ")" if len(per) > 1 else f" (seed {min(set(xa) & set(xb))})")

    if len(seeds) > 1:  # one mean row per arm under its seeds' rows
        rows += [{"arm": a, "seed": "mean", **{k: round(mean(a, k), 4) for k in rows[0] if k not in ("arm", "seed")}} for a in results]
    plots.bars(out / "understanding.png", {a: [r["und_greedy"] for r in rs] for a, rs in results.items()},
               title="held-out understanding (greedy; blind majority answer %.2f)" % rows[0]["blind_majority"], ylabel="accuracy (fraction of questions)")
    plots.grouped_bars(out / "understanding_by_kind.png", {a: [mean(a, "und_scene_greedy"), mean(a, "und_digit_greedy")] for a in results},
                       series=[f"scenes (blind {bars.get('scene', float('nan')):.2f})", f"digits (blind {bars.get('digit', float('nan')):.2f})"],
                       title="understanding by kind (greedy, seed mean)", ylabel="accuracy")
    plots.grouped_bars(out / "generation.png", {a: [mean(a, "gen_scene_unguided"), mean(a, "gen_scene_acc")] for a in results},
                       series=["no guidance", "guidance (means over seeds)"],
                       title="held-out generation (scenes, exact detector)", ylabel="fraction of prompts drawn correctly")
    verdict = (f"joint - single-task: understanding {gain('joint', 'und-only', 'und_greedy')} (scenes {gain('joint', 'und-only', 'und_scene_greedy')}, "
               f"digits {gain('joint', 'und-only', 'und_digit_greedy')}), generation (scenes, guided) "
               f"{gain('joint', 'gen-only', 'gen_scene_acc')}, unguided {gain('joint', 'gen-only', 'gen_scene_unguided')}; "
               f"decoupled - shared VQ encoding: understanding {gain('joint', 'shared-vq', 'und_greedy')}, generation (guided) "
               f"{gain('joint', 'shared-vq', 'gen_scene_acc')}; seeds {seeds}, budget {args.budget:.3g} of the default stage-II/III steps"
               + (" (--quick: a smoke run, no evidence)" if args.quick else ""))
    means = {a: {k: mean(a, k) for k in keys} | {"seeds": [r["seed"] for r in results[a]]} for a in results}
    experiment.write(out, "multimodal", rows, {"arms": list(ARMS), "seeds": seeds, "blind_majority_by_kind": bars, "budget": None if args.quick else args.budget, "means": means,
                                               "verdict": verdict, "quick": args.quick},
                     title="joint vs separate training, decoupled vs shared visual encoding")
    print(verdict)

if __name__ == "__main__":
    main()
