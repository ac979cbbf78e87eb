"""``r1lab zero``: the whole DeepSeek-R1-Zero story on a laptop CPU, in one command.

pretrain a small (MoE by default) model from scratch -> evaluate the base model on held-out
problems -> GRPO with verifiable rewards only, no SFT -> evaluate again -> summary table.
Each stage writes into its own sub-folder of the run folder and resumes from it.

    <run>/config.yaml, tokenizer.json
    <run>/pretrain/  checkpoints/, metrics.jsonl, tb/
    <run>/rl/        checkpoints/, metrics.jsonl, tb/
    <run>/eval/base.json, eval/rl.json
    <run>/summary.json, report.html (plots/ beside it)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from r1lab import checkpoint, tracking
from r1lab import config as config_lib
from r1lab.config import Config
from r1lab.evaluate import EvalResult
from r1lab.recipes import common, pretrain, prompts, rl
from r1lab.recipes.eval import evaluate_model, save_result
from r1lab.report import html as report_html
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task

SUMMARY_KEYS = ("pass@1", "pass@8", "mean_len")

# Keys that may change on --resume: they change where and how a run is logged or how fast it runs,
# never what it computes.
RESUME_FREE_KEYS = frozenset({"resume", "out", "threads", "tensorboard", "log_every", "save_every", "keep_checkpoints", "max_bad_steps"})
RESUME_FREE_SECTIONS = ("check", "generate", "label", "export", "janus")  # sections zero never reads


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, cfg: Config, sections: tuple[str, ...] | None = None) -> list[str]:
    """``key (saved -> now)`` for every setting that differs between a run folder's config.yaml
    and ``cfg``: of the top-level ``sections`` when given, else of all but ``RESUME_FREE_KEYS`` and
    ``RESUME_FREE_SECTIONS``. A key missing from the saved file (written before the key existed)
    is compared with its default."""
    before = {**_flatten(config_lib.to_dict(Config())), **_flatten(saved)}
    now = _flatten(config_lib.to_dict(cfg))

    def checked(k: str) -> bool:
        top = k.split(".")[0]
        return top in sections if sections is not None else k not in RESUME_FREE_KEYS and top not in RESUME_FREE_SECTIONS

    return [f"{k} ({before.get(k)!r} -> {v!r})" for k, v in now.items() if checked(k) and before.get(k) != v]


def pipeline_dir(cfg: Config, name: str, stages: tuple[str, ...], sections: tuple[str, ...] | None = None) -> Path:
    """The run folder of a multi-stage command (zero, r1, janus), before any work: refuse one whose
    stage sub-folders hold checkpoints unless resuming, and a resume whose settings differ from
    the saved config.yaml (``config_changes``), naming the keys."""
    run_dir = common.run_dir_for(cfg, name)
    if not cfg.resume and any(checkpoint.latest_step(run_dir / s) is not None for s in stages):
        raise common.StageError(f"run folder {run_dir} already holds checkpoints: pass --resume to continue it, or another --out")
    saved = run_dir / "config.yaml"
    if cfg.resume and saved.is_file():
        changes = config_changes(config_lib.load_yaml(saved), cfg, sections)
        if changes:
            raise common.StageError(f"--resume with settings that differ from {saved}: {'; '.join(changes)}; "
                                    "resume with the same settings, or start a new run with another --out")
    return run_dir


def eval_mismatch(result: EvalResult, cfg: Config) -> list[str]:
    """The evaluation settings under which ``result`` was measured that differ from ``cfg``'s."""
    e = cfg.eval
    wanted = {"task": cfg.task, "split": e.split, "n_problems": e.n_problems, "n": e.n_samples, "ks": list(e.ks),
              "temperature": e.sample.temperature, "top_p": e.sample.top_p, "max_new_tokens": e.sample.max_new_tokens, "seed": e.seed}
    return [f"{k} ({getattr(result, k)!r} -> {v!r})" for k, v in wanted.items() if getattr(result, k) != v]


def split_label(split: str) -> str:
    """How a table names the evaluated split: only the test split is held out."""
    return "held-out test split" if split == "test" else f"{split} split (NOT held out: these problems are trained on)"


def _evaluate(cfg: Config, ckpt_path: Path, out: Path, desc: str) -> EvalResult:
    """Evaluate the checkpoint at ``ckpt_path``, reusing ``out`` if a previous run wrote it with the
    same evaluation settings (else it is measured again, saying why)."""
    if out.is_file() and cfg.resume:
        try:
            previous = EvalResult.from_json(out.read_text(encoding="utf-8"))
            changed = eval_mismatch(previous, cfg)
        except (ValueError, TypeError, KeyError) as err:  # unreadable or from an older format
            changed = [f"unreadable ({type(err).__name__})"]
        if not changed:
            return previous
        print(f"zero: {out} was measured with other settings: {', '.join(changed)}; evaluating again")
    common.seed_everything(cfg.seed, cfg.threads)
    model, _ = common.load_model(ckpt_path)
    result = evaluate_model(model, common.load_tokenizer(ckpt_path), get_task(cfg.task, seed=cfg.seed), cfg.eval,
                            RewardWeights(cfg.rl.format_weight, cfg.rl.correct_weight, cfg.rl.partial_weight), desc=desc,
                            samples_out=out.with_suffix(".samples.jsonl"))
    save_result(result, out)
    return result


def _signal(cfg: Config, ckpt_path: Path, out: Path) -> dict | None:
    """The pre-RL signal check (recipes/prompts.py) on the base, reused on --resume; None when
    data.signal_problems is 0. It samples with its own generator: RL's numbers do not move."""
    if not cfg.data.signal_problems:
        return None
    if cfg.resume and out.is_file():
        return json.loads(out.read_text(encoding="utf-8"))
    model, _ = common.load_model(ckpt_path)
    return prompts.signal_check(cfg, model, common.load_tokenizer(ckpt_path), get_task(cfg.task, seed=cfg.seed), "zero", out)


def main(cfg: Config) -> Path:
    t0 = time.time()
    run_dir = pipeline_dir(cfg, "zero", ("pretrain", "rl"))
    common.prepare_run_dir(run_dir, cfg)
    print(f"zero: run folder {run_dir}")

    # Each training stage stops gracefully on its own (after a step, with a checkpoint); this flag
    # covers the evaluations in between, which are redone or reused on --resume.
    with common.StopFlag() as stop:
        base_ckpt = pretrain.run(cfg, run_dir / "pretrain")
        common.print_stage_summary(run_dir / "pretrain", "pretrain", ["pretrain/loss", "pretrain/tokens_per_s", "moe/load_max_over_mean"])
        base = _evaluate(cfg, base_ckpt, run_dir / "eval" / "base.json", "eval base")
        print(tracking.format_table([{"model": "base", **base.metrics}], title=f"base model, {split_label(cfg.eval.split)}"))
        stop.check_done("the base model's evaluation")
        signal = _signal(cfg, base_ckpt, run_dir / "eval" / "signal.json")
        rl_ckpt = rl.run(cfg, run_dir / "rl", base_ckpt)
        tuned = _evaluate(cfg, rl_ckpt, run_dir / "eval" / "rl.json", "eval rl")

    # R1-Zero's signature: held-out pass@1 and completion length rising together over RL steps.
    curve = [
        {"step": row["step"], "pass@1": row["eval/pass@1"], "mean_len": row["eval/mean_len"], "train_correct_rate": row["rollout/correct_rate"]}
        for row in tracking.read_metrics(run_dir / "rl" / "metrics.jsonl")
        if "eval/pass@1" in row
    ]
    summary = {
        "task": cfg.task,
        "base": {k: base.metrics[k] for k in SUMMARY_KEYS if k in base.metrics},
        "rl": {k: tuned.metrics[k] for k in SUMMARY_KEYS if k in tuned.metrics},
        "wall_s": time.time() - t0,
        "eval": {"split": cfg.eval.split, "n_problems": cfg.eval.n_problems, "n": cfg.eval.n_samples, "temperature": cfg.eval.sample.temperature},
        "resumed": cfg.resume,
        "signal": signal,
        "rl_curve": curve,
    }
    monitor_file = run_dir / "rl" / rl.MONITOR_FILE
    if monitor_file.is_file():  # the reward-hacking monitor's verdict (events in rl/events.jsonl)
        summary["monitor"] = json.loads(monitor_file.read_text(encoding="utf-8"))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if curve:
        print(tracking.format_table(curve, title=f"GRPO progress: held-out pass@1 ({cfg.rl.eval_problems} problems x 2 samples) and mean completion length"))
    rows = [{"model": name, **res.metrics} for name, res in (("base", base), ("rl", tuned))]
    print(tracking.format_table(rows, title=f"r1lab zero on {cfg.task}: {split_label(cfg.eval.split)}, {cfg.eval.n_problems} problems, n={cfg.eval.n_samples}, T={cfg.eval.sample.temperature}"))
    print(f"zero: pass@1 {base.metrics['pass@1']:.3f} -> {tuned.metrics['pass@1']:.3f} in {summary['wall_s']:.0f} s; summary {run_dir / 'summary.json'}")
    print(f"zero: report {report_html.build(run_dir)}")
    return run_dir
