"""``r1lab r1``: the DeepSeek-R1 pipeline (arXiv:2501.12948, sec. 2.3) on a laptop CPU, one command.

    pretrain base (zero's)  ->  cold-start SFT on a small set of readable worked solutions
    ->  reasoning-oriented RL (GRPO)  ->  rejection sampling from that policy (verified, deduplicated)
    ->  SFT on the accepted samples  ->  a second RL stage

evaluated on the held-out split after every stage, with one summary table and ``summary.json``.
Each stage writes into its own sub-folder of the run folder and resumes from it (``--resume``).

Departures from the paper, all for a tiny model on a CPU in minutes: the cold-start set is the
task's own worked solutions (``Example.solution``, verified before use) instead of long CoT
collected with few-shot prompting and human post-processing; rejection sampling keeps only
reasoning data (no "non-reasoning" SFT data such as writing or QA); there is no language
consistency reward (the tiny model writes one language); the second RL stage uses the same rule
rewards as the first (no helpfulness/harmlessness reward models). With ``--init`` an existing
pretrained model (e.g. ``runs/zero-x/pretrain``) replaces the pretraining stage.

    <run>/config.yaml, tokenizer.json
    <run>/pretrain/ sft1/ rl1/ sft2/ rl2/   each: checkpoints/, metrics.jsonl
    <run>/rejection/samples.jsonl, samples.stats.json   accepted samples of rl1 and their statistics
    <run>/data/cold_start.jsonl                          the cold-start SFT records
    <run>/eval/<stage>.json (+ .samples.jsonl), eval/pass_at_k.png
    <run>/summary.json, report.html
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from pathlib import Path

from r1lab import tracking
from r1lab.config import Config
from r1lab.evaluate import EvalResult
from r1lab.recipes import common, pretrain, rejection_sample, rl, sft, zero
from r1lab.recipes.eval import diversity_row, plot_pass_curves
from r1lab.report import html as report_html
from r1lab.rewards import RewardWeights
from r1lab.tasks import Task, get_task
from r1lab.tokenizer import BaseTokenizer

STAGES = ("pretrain", "sft1", "rl1", "rejection", "sft2", "rl2")
"sub-folders, in pipeline order"

SUMMARY_KEYS = ("pass@1", "pass@8", "maj@8", "mean_len")


def cold_start_records(task: Task, tok: BaseTokenizer, n: int, seed: int) -> list[dict[str, str]]:
    """Up to ``n`` distinct train-split problems (by the task's canonical key) with their worked
    solution, as SFT records ``{question, answer, solution}``. Only records whose rendered
    completion is well-formed and judged correct by the task's own verifier are kept, so the cold
    start never teaches a wrong or unreadable trace. StageError if the task gives none."""
    rng = random.Random(seed)
    weights = RewardWeights()
    kept: dict[str, dict[str, str]] = {}
    for _ in range(50 * n + 1000):
        if len(kept) == n:
            break
        ex = task.sample(rng, "train")
        if not ex.solution or task.key(ex) in kept:
            continue
        score = task.score(tok.completion_text(ex.solution, ex.answer), ex, weights)
        if score.format == 1.0 and score.correct == 1.0:
            kept[task.key(ex)] = {"question": ex.question, "answer": ex.answer, "solution": ex.solution}
    if not kept:
        raise common.StageError(f"task {task.name} gives no verified worked solutions (Example.solution) for the cold start; "
                                "pass r1.cold_start_data FILE with {prompt, completion} records")
    return list(kept.values())


def write_jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    """Write records one JSON object a line, atomically (a killed run never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)
    return path


def _with(cfg: Config, section: str, **changes: object) -> Config:
    """``cfg`` with some fields of one section replaced (the stage settings r1 derives)."""
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})


def _rejection_sample(cfg: Config, out: Path, init: Path) -> tuple[str, dict]:
    """(``jsonl:`` spec of the accepted samples, statistics); on ``--resume`` a complete earlier
    sampling from the same checkpoint is reused (it is deterministic: the same file again)."""
    stats_file = rejection_sample.stats_path(out)
    if cfg.resume and out.is_file() and stats_file.is_file():
        try:
            stats = json.loads(stats_file.read_text(encoding="utf-8"))
        except ValueError:
            stats = {}
        if stats.get("complete") and stats.get("init") == str(common.resolve_checkpoint(init).path):
            return f"jsonl:{out}", stats
    out.parent.mkdir(parents=True, exist_ok=True)
    return f"jsonl:{out}", rejection_sample.run(cfg, out, init)


def main(cfg: Config) -> Path:
    t0 = time.time()
    r = cfg.r1
    run_dir = zero.pipeline_dir(cfg, "r1", STAGES)
    task = get_task(cfg.task, seed=cfg.seed)
    if r.cold_start_data and not Path(r.cold_start_data.removeprefix("jsonl:")).is_file():
        raise common.StageError(f"r1.cold_start_data: file {r.cold_start_data} does not exist")
    common.prepare_run_dir(run_dir, cfg)
    print(f"r1: run folder {run_dir}")
    results: dict[str, EvalResult] = {}
    stage_s: dict[str, float] = {}  # seconds each step of the pipeline took in this process (a resumed one skips what was done)
    clock = [time.time()]

    def lap(name: str) -> None:
        now = time.time()
        stage_s[name], clock[0] = now - clock[0], now

    def evaluate(name: str, ckpt: Path) -> None:
        results[name] = zero._evaluate(cfg, ckpt, run_dir / "eval" / f"{name}.json", f"eval {name}")
        lap(f"eval {name}")
        print(tracking.format_table([{"model": name, **results[name].metrics}], title=f"{name}, {zero.split_label(cfg.eval.split)}"))

    with common.StopFlag() as stop:
        # 0. The base: zero's pretraining (or a given model).
        base_ckpt = common.resolve_checkpoint(cfg.init).path if cfg.init else pretrain.run(cfg, run_dir / "pretrain")
        lap("pretrain")
        evaluate("base", base_ckpt)
        stop.check_done("the base model's evaluation")

        # 1. Cold start: SFT on a few readable, verified worked solutions.
        if r.cold_start_data:
            cold = r.cold_start_data
        else:
            records = cold_start_records(task, common.load_tokenizer(base_ckpt), r.cold_start_examples, cfg.seed)
            cold = f"jsonl:{write_jsonl(run_dir / 'data' / 'cold_start.jsonl', records)}"
            print(f"r1: cold-start set of {len(records)} worked solutions from the {task.name} train split")
        sft1_ckpt = sft.run(_with(cfg, "sft", data=cold, steps=r.cold_start_steps), run_dir / "sft1", base_ckpt)
        lap("sft1")
        evaluate("sft1", sft1_ckpt)
        stop.check_done("the cold-start model's evaluation")

        # 2. Reasoning-oriented RL.
        rl1_ckpt = rl.run(_with(cfg, "rl", steps=r.rl1_steps), run_dir / "rl1", sft1_ckpt)
        lap("rl1")
        evaluate("rl1", rl1_ckpt)
        stop.check_done("the first RL stage's evaluation")

        # 3. Rejection sampling from the RL policy: verified, deduplicated, capped per prompt.
        rs_data, rs_stats = _rejection_sample(cfg, run_dir / "rejection" / "samples.jsonl", rl1_ckpt)
        lap("rejection")
        stop.check_done("rejection sampling")
        if not rs_stats.get("kept"):  # nothing verified to learn from: say so, and reuse the cold-start set
            print(f"r1: rejection sampling accepted no sample of {rs_stats.get('samples')}; the second SFT uses the cold-start set")
            rs_data = cold

        # 4. SFT on the accepted samples, from the base (the paper) or from the RL policy.
        sft2_init = base_ckpt if r.sft2_from == "base" else rl1_ckpt
        sft2_ckpt = sft.run(_with(cfg, "sft", data=rs_data, steps=r.sft2_steps), run_dir / "sft2", sft2_init)
        lap("sft2")
        evaluate("sft2", sft2_ckpt)
        stop.check_done("the second SFT stage's evaluation")

        # 5. The second RL stage; its own seed, so that it does not replay the first stage's prompts.
        rl2_ckpt = rl.run(dataclasses.replace(_with(cfg, "rl", steps=r.rl2_steps), seed=cfg.seed + 1), run_dir / "rl2", sft2_ckpt)
        lap("rl2")
        evaluate("rl2", rl2_ckpt)

    summary = {
        "task": cfg.task,
        "stages": {name: {k: res.metrics[k] for k in SUMMARY_KEYS if k in res.metrics} | res.diversity for name, res in results.items()},
        "pass_curves": {name: res.pass_curve for name, res in results.items()},
        "rejection": {k: v for k, v in rs_stats.items() if k != "per_prompt"},
        "wall_s": time.time() - t0,
        "stage_s": stage_s,
        "eval": {"split": cfg.eval.split, "n_problems": cfg.eval.n_problems, "n": cfg.eval.n_samples, "temperature": cfg.eval.sample.temperature},
        "resumed": cfg.resume,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    plot_pass_curves(run_dir / "eval" / "pass_at_k.png", results, f"pass@k after each r1 stage ({cfg.task}, held out)")
    rows = [{"stage": name, **{k: res.metrics[k] for k in SUMMARY_KEYS if k in res.metrics}, **diversity_row(res)} for name, res in results.items()]
    print(tracking.format_table(rows, title=f"r1lab r1 on {cfg.task}: {zero.split_label(cfg.eval.split)}, {cfg.eval.n_problems} problems, "
                                            f"n={cfg.eval.n_samples}, T={cfg.eval.sample.temperature}"))
    print(f"r1: pass@1 {results['base'].metrics['pass@1']:.3f} (base) -> {results['rl2'].metrics['pass@1']:.3f} (rl2) in "
          f"{summary['wall_s']:.0f} s; summary {run_dir / 'summary.json'}")
    print(f"r1: report {report_html.build(run_dir)}")
    return run_dir
