"""``report.html``: one self-contained page per run or experiment folder, rebuilt from the folder.

Everything on the page comes from files a run or an experiment already writes, and each section
appears only where its data exists, so the same code serves a finished run, a run still going
(a half-written last line of ``metrics.jsonl`` is skipped) and a stopped one:

    config.yaml                     the resolved config
    summary.json, eval/*.json       base vs RL table; pass@k against k
    <stage>/metrics.jsonl           training curves against optimizer steps (one figure per group)
    <stage>/expert_load.jsonl       expert-load heatmaps, {"step": N, "load_LE": [[...] per layer]}
    eval/*.samples.jsonl            the same held-out prompts answered by each evaluated model
    summary.json with "experiment"  an experiment folder: its table, its PNGs, and curves of the
                                    runs under it, one line per arm with seeds as a min-max band

Images are drawn through ``r1lab.report.plots`` into ``<folder>/plots/`` and inlined into the page
as base64 PNGs, so the file opens from disk anywhere, with no network.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from r1lab import tracking
from r1lab.report import plots

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
SAMPLE_PROMPTS = 6
"held-out prompts shown side by side (the first ones of the evaluation, not picked by outcome)"

# (title, y-axis label with unit, pattern of metric names). One figure per group and stage, one
# line per matching metric; a group with no matching metric in a stage is left out.
CURVE_GROUPS: list[tuple[str, str, str]] = [
    ("pretraining loss", "cross-entropy (nats/token)", r"pretrain/loss"),
    ("policy loss", "clipped surrogate loss (per token)", r"train/loss"),
    ("reward", "reward per completion (mean over the batch)", r"rollout/reward_mean|rollout/reward/.+"),
    ("reward components", "fraction of completions", r"rollout/(format_rate|correct_rate)"),
    ("reward parts", "mean reward per completion (weighted part of the total)", r"reward/.+_mean"),
    ("held-out pass@1", "pass@1 (fraction of problems)", r"eval/pass@1"),
    ("completion length", "completion length (tokens)", r"(rollout|eval)/mean_len"),
    ("KL to the reference policy", "KL (nats/token)", r"train/kl"),
    ("clip fractions", "fraction of completion tokens", r".*clip_frac.*"),
    ("entropy", "entropy (nats/token)", r".*entropy.*"),
    ("zero-variance groups", "fraction of GRPO groups (no learning signal)", r"rollout/zero_var_group_frac"),
    ("throughput", "tokens/s", r".*tokens_per_s"),
    ("expert-load balance", "max expert load / mean load", r"moe/(layer\d+/)?load_max_over_mean"),
    ("dead experts", "routed experts with no token-slot in the step", r"moe/(layer\d+/)?dead_experts"),
    ("text and image-code losses (Janus)", "cross-entropy (nats/token)", r"(align|unified|instruct)/(text|code)_loss"),
    ("VQ tokenizer reconstruction", "mean squared error per pixel channel", r"vq/recon_mse"),
    ("balancing bias", "L2 norm of the aux-free selection bias", r"moe/layer\d+/bias_norm"),
]
OFF_WHEN_ZERO = ("KL to the reference policy", "clip fractions", "dead experts", "balancing bias")
"groups left out when 0 throughout: the feature was off or nothing happened (kl_coef 0; one update per batch cannot clip; no dead expert; a softmax router has no bias)"
EVAL_COLUMNS = ("pass@", "maj@", "mean_len", "format_rate", "correct_rate", "distinct_answers")
_SEED_RE = re.compile(r"seed[-_]?(\d+)\Z")


@dataclass
class Figure:
    title: str
    png: str  # base64
    path: str  # relative to the folder


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return tracking._cell(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return "" if v is None else str(v)


def _table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Table:
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    return Table(title, list(columns), [[_fmt(r.get(c)) for c in columns] for r in rows])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a cut last line (a writer still at work) is skipped."""
    rows = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON line") from None
    return rows


class _Drawer:
    """Names figures under ``<folder>/plots/`` and inlines the PNGs drawn there."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.dir = folder / PLOTS_DIR

    def path(self, name: str) -> Path:
        return self.dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") + ".png")

    def __call__(self, png: Path, title: str) -> Figure:
        return inline(png, title, self.folder)


def inline(path: Path, title: str, folder: Path) -> Figure:
    rel = os.path.relpath(path, folder)
    return Figure(title, base64.b64encode(Path(path).read_bytes()).decode("ascii"), rel)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            xs.append(r["step"])
            ys.append(float(v))
    return xs, ys


def _groups(keys: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    """(title, ylabel, metric names) of each curve group with at least one metric in ``keys``."""
    out = []
    for title, ylabel, pattern in CURVE_GROUPS:
        names = [k for k in keys if re.fullmatch(pattern, k)]
        if names:
            out.append((title, ylabel, names))
    return out


def _stage_dirs(folder: Path) -> list[tuple[str, Path]]:
    """(stage name, folder) of every folder holding metrics.jsonl: the folder itself or a child."""
    found = [("", folder)] if (folder / tracking.METRICS_FILE).is_file() else []
    found += [(d.name, d) for d in sorted(folder.iterdir()) if d.is_dir() and (d / tracking.METRICS_FILE).is_file()]
    return found


def training_curves(folder: Path, draw: _Drawer) -> Section:
    sec = Section("Training curves")
    for stage, d in _stage_dirs(folder):
        rows = tracking.read_metrics(d)
        if not rows:
            continue
        keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("step", "time")]
        sec.notes.append(f"{stage or 'run'}: {len(rows)} logged steps, last step {rows[-1]['step']}")
        label = f"{stage}: " if stage else ""
        for title, ylabel, names in _groups(keys):
            arms = {n: [_series(rows, n)] for n in names}
            if title in OFF_WHEN_ZERO and all(y == 0 for (_, ys), in arms.values() for y in ys):
                sec.notes.append(f"{label}{title}: {', '.join(names)} 0 at every logged step (not drawn)")
                continue
            png = plots.curves(draw.path(f"{stage or 'run'}-{title}"), arms, title=f"{label}{title}", xlabel="optimizer step", ylabel=ylabel)
            sec.figures.append(draw(png, f"{label}{title}"))
    return sec


def expert_load(folder: Path, draw: _Drawer) -> Section:
    """Heatmaps of the first and last logged expert load of every stage that logged one."""
    sec = Section("Expert load (MoE routing)")
    for stage, d in [("", folder)] + [(c.name, c) for c in sorted(folder.iterdir()) if c.is_dir()]:
        path = d / "expert_load.jsonl"
        if not path.is_file():
            continue
        rows = [r for r in _read_jsonl(path) if isinstance(r, dict) and r.get("load_LE")]
        for r in rows[:1] + rows[1:][-1:]:
            M, step = r["load_LE"], r.get("step", "?")
            if not isinstance(M, list) or not all(isinstance(x, list) and x for x in M) or len({len(x) for x in M}) != 1:
                raise ValueError(f"{path}: load_LE of step {step} must be a list of equally long per-layer lists")
            title = f"{stage or 'run'}: expert load at step {step}"
            png = plots.heatmap(draw.path(f"{stage or 'run'}-expert-load-step{step}"), M, title=title, xlabel="routed expert",
                                ylabel="MoE layer", colorbar="fraction of routed token-slots", yticklabels=[str(i) for i in range(len(M))])
            sec.figures.append(draw(png, title))
    return sec


def _eval_dirs(folder: Path) -> list[tuple[str, Path]]:
    """(prefix, folder) of the run's eval/ and of its stages' (``r1lab eval --init RUN/rl`` writes
    to ``RUN/rl/eval/``)."""
    found = [("", folder / "eval")] if (folder / "eval").is_dir() else []
    return found + [(f"{d.name}/", d / "eval") for d in sorted(folder.iterdir()) if d.is_dir() and (d / "eval").is_dir()]


def _first_base_rl(name: str) -> tuple[bool, bool, str]:
    return (name != "base", name != "rl", name)


def _eval_files(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for prefix, d in _eval_dirs(folder):
        for p in d.glob("*.json"):
            data = _read_json(p)
            if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
                out.append((prefix + p.stem, data))
    return sorted(out, key=lambda x: _first_base_rl(x[0]))


def evaluations(folder: Path, draw: _Drawer) -> Section:
    sec = Section("Evaluation")
    evals = _eval_files(folder)
    if not evals:
        return sec
    rows = []
    for name, data in evals:
        m = data["metrics"]
        cols = {k: v for k, v in m.items() if k.startswith(EVAL_COLUMNS)}
        rows.append({"model": name, **cols, "n": data.get("n"), "problems": data.get("n_problems"), "T": data.get("temperature")})
    first = evals[0][1]
    sec.tables.append(_table(f"{first.get('task', '')} ({first.get('split', '')} split): "
                             f"pass@k {first.get('pass_estimator', 'unbiased')}", rows))
    arms = {}
    for name, data in evals:
        ks = [k for k in data.get("ks", []) if f"pass@{k}" in data["metrics"]]
        if data.get("pass_curve"):  # every k = 1..n (evaluations since the diversity figures)
            arms[name] = [(list(range(1, len(data["pass_curve"]) + 1)), data["pass_curve"])]
        elif ks:
            arms[name] = [(ks, [data["metrics"][f"pass@{k}"] for k in ks])]
    if arms and any(len(r[0][0]) > 1 for r in arms.values()):
        png = plots.curves(draw.path("pass-at-k"), arms, title="pass@k (unbiased estimator) against k",
                           xlabel="k (samples per problem)", ylabel="pass@k (fraction of problems)", logx=True)
        sec.figures.append(draw(png, "pass@k against k"))
    return sec


def summary_table(folder: Path) -> Section:
    """The run's own summary (``r1lab zero``): base vs RL on its headline figures."""
    sec = Section("Base vs RL")
    path = folder / "summary.json"
    if not path.is_file():
        return sec
    s = _read_json(path)
    if not isinstance(s, dict) or "experiment" in s:
        return sec
    models = [m for m in ("base", "rl") if isinstance(s.get(m), dict)]
    if models:
        sec.tables.append(_table(f"{s.get('task', '')}: held-out figures", [{"model": m, **s[m]} for m in models]))
    if isinstance(s.get("stages"), dict) and s["stages"]:  # r1lab r1: one row per pipeline stage
        sec.tables.append(_table(f"{s.get('task', '')}: held-out figures after each stage", [{"stage": k, **v} for k, v in s["stages"].items()]))
    if isinstance(s.get("rl_curve"), list) and s["rl_curve"]:
        sec.tables.append(_table("GRPO progress on held-out problems", s["rl_curve"]))
    if "wall_s" in s:
        sec.notes.append(f"wall time {s['wall_s']:.0f} s" + (" (resumed)" if s.get("resumed") else ""))
    return sec


@dataclass
class SampleCell:
    completion: str
    answer: str | None
    reward: float
    correct: bool
    parts: list[tuple[str, bool]]  # (text, is the extracted answer)


def _mark_answer(text: str) -> list[tuple[str, bool]]:
    """The completion cut around its last ``<answer>`` block, so that the page can highlight it."""
    start = text.rfind("<answer>")
    end = text.find("</answer>", start) if start >= 0 else -1
    if start < 0 or end < 0:
        return [(text, False)]
    a, b = start + len("<answer>"), end
    return [(text[:a], False), (text[a:b], True), (text[b:], False)]


def sample_completions(folder: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(model names, rows): the first held-out prompts that every evaluated model answered, with
    each model's first sample."""
    files = sorted(((prefix + p.name[: -len(".samples.jsonl")], p) for prefix, d in _eval_dirs(folder) for p in d.glob("*.samples.jsonl")),
                   key=lambda x: _first_base_rl(x[0]))
    if not files:
        return [], []
    names, by_model = [], []
    for name, p in files:
        first: dict[str, dict[str, Any]] = {}
        for i, r in enumerate(_read_jsonl(p)):
            if not isinstance(r, dict) or not isinstance(r.get("question"), str) or not isinstance(r.get("completion"), str):
                raise ValueError(f"{p}:{i + 1}: a sample needs \"question\" and \"completion\" strings")
            first.setdefault(r["question"], r)
        names.append(name)
        by_model.append(first)
    questions = [q for q in by_model[0] if all(q in m for m in by_model[1:])][:SAMPLE_PROMPTS]
    rows = []
    for q in questions:
        cells = [SampleCell(m[q]["completion"], m[q].get("answer"), float(m[q].get("reward", 0.0)), bool(m[q].get("correct")),
                            _mark_answer(m[q]["completion"])) for m in by_model]
        rows.append({"question": q, "gold": by_model[0][q].get("gold", ""), "cells": cells})
    return names, rows


def janus_section(folder: Path, summary: Any) -> Section:
    """A ``r1lab janus`` run: held-out understanding and generation figures and the image grids
    of its held-out drawing prompts (``grids/*.png``)."""
    sec = Section("Janus: understanding and generation")
    if not isinstance(summary, dict) or not summary.get("janus"):
        return sec
    und, gen = summary.get("understanding", {}), summary.get("generation", {})
    sec.tables.append(_table(f"held-out understanding ({und.get('questions')} questions, n={und.get('n')}, R1 reward, exact answers)",
                             [{k: v for k, v in und.items() if "pass@" in k}]))
    sec.tables.append(_table("held-out generation (scenes: exact detector; digits: classifier)",
                             [{"guidance": g.get("cfg_scale"), "scene accuracy": g.get("scene_accuracy"), "digit accuracy": g.get("digit_accuracy"),
                               "scene prompts": g.get("scene_prompts")} for g in gen.values() if isinstance(g, dict)]))
    sec.notes.append(f"VQ held-out reconstruction MSE {summary.get('vq_heldout_mse', float('nan')):.5f}; digit classifier held-out accuracy "
                     f"{summary.get('digit_classifier_heldout_accuracy', float('nan')):.3f}")
    for p in sorted((folder / "grids").glob("*.png")):
        sec.figures.append(inline(p, p.stem.replace("_", " "), folder))
    return sec


def experiment_sections(folder: Path, summary: dict[str, Any], draw: _Drawer) -> list[Section]:
    """An experiment folder: its comparison table, its own plots, and the curves of the runs under
    it (``<arm>/seed<N>/[<stage>/]metrics.jsonl``: one line per arm and stage, seeds as a band)."""
    sec = Section("Comparison")
    rows = summary.get("rows")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        sec.tables.append(_table(summary.get("experiment", ""), rows))
    for key in ("verdict", "command"):
        if summary.get(key):
            sec.notes.append(f"{key}: {summary[key]}")
    pngs = Section("Plots")
    for p in sorted(folder.glob("*.png")):
        pngs.figures.append(inline(p, p.stem.replace("_", " "), folder))

    # Runs under the experiment, grouped into arms by their path with the seed folder removed.
    runs: dict[tuple[str, str], list[list[dict[str, Any]]]] = {}
    for m in sorted(folder.rglob(tracking.METRICS_FILE)):
        parts = m.parent.relative_to(folder).parts
        seed_at = next((i for i, s in enumerate(parts) if _SEED_RE.search(s)), None)
        if seed_at is None:
            arm, stage = "/".join(parts) or folder.name, ""
        else:
            head = parts[:seed_at] + ((_SEED_RE.sub("", parts[seed_at]).rstrip("-_"),) if _SEED_RE.sub("", parts[seed_at]) else ())
            arm, stage = "/".join(head) or "run", "/".join(parts[seed_at + 1 :])
        rows_m = tracking.read_metrics(m)
        if rows_m:
            runs.setdefault((stage, arm), []).append(rows_m)
    curves = Section("Runs: one line per arm, seeds as min-max bands")
    for stage in dict.fromkeys(s for s, _ in runs):
        arms = {arm: rs for (s, arm), rs in runs.items() if s == stage}
        keys = list(dict.fromkeys(k for rs in arms.values() for r in rs for row in r for k in row if k not in ("step", "time")))
        for title, ylabel, names in _groups(keys):
            for name in names:
                data = {arm: [_series(r, name) for r in rs] for arm, rs in arms.items()}
                full = f"{stage + ': ' if stage else ''}{title} ({name})"
                png = plots.curves(draw.path(f"arms-{stage}-{name}"), data, title=full, xlabel="optimizer step", ylabel=ylabel)
                curves.figures.append(draw(png, full))
    return [sec, pngs, curves]


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("r1lab.report", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined)


def build(folder: str | Path) -> Path:
    """Write ``<folder>/report.html`` (and its PNGs under ``<folder>/plots/``); return its path.

    Raises ValueError naming the file when the folder holds nothing to report or a damaged file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"report: {folder} is not a folder")
    draw = _Drawer(folder)
    for stale in draw.dir.glob("*.png"):  # plots/ is the report's own: no figure of an older build lingers
        stale.unlink()
    summary_path = folder / "summary.json"
    summary = _read_json(summary_path) if summary_path.is_file() else None
    is_experiment = isinstance(summary, dict) and "experiment" in summary
    config = (folder / "config.yaml").read_text(encoding="utf-8") if (folder / "config.yaml").is_file() else ""
    names, samples = [], []
    if is_experiment:
        kind, sections = "experiment", experiment_sections(folder, summary, draw)
        status = "complete (summary.json written)"
    else:
        kind = "run"
        sections = [summary_table(folder), janus_section(folder, summary), evaluations(folder, draw), training_curves(folder, draw), expert_load(folder, draw)]
        names, samples = sample_completions(folder)
        status = "complete (summary.json written)" if summary is not None else _progress_note(folder)
    sections = [s for s in sections if s.figures or s.tables]
    if not sections and not samples and not config:
        raise ValueError(f"report: {folder} holds nothing to report (no summary.json, metrics.jsonl, eval/ or config.yaml)")
    html = _ENV.get_template("report.html").render(
        title=f"r1lab {kind}: {folder.resolve().name}", folder=str(folder.resolve()), kind=kind, status=status,
        sections=sections, config=config, sample_models=names, samples=samples)
    out = folder / REPORT_FILE
    tmp = out.with_name(f"{REPORT_FILE}.tmp-{os.getpid()}")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _progress_note(folder: Path) -> str:
    """How far a run without a summary got: still going or stopped, as far as the files say."""
    last = []
    for stage, d in _stage_dirs(folder):
        rows = tracking.read_metrics(d)
        if rows:
            last.append(f"{stage or 'run'} at step {rows[-1]['step']}")
    age = ""
    stamps = [p.stat().st_mtime for _, d in _stage_dirs(folder) for p in [d / tracking.METRICS_FILE]]
    if stamps:
        age = f"; metrics last written {max(0.0, time.time() - max(stamps)):.0f} s ago"
    return "in progress or stopped (no summary.json yet)" + (": " + ", ".join(last) if last else "") + age


__all__ = ["build", "REPORT_FILE", "CURVE_GROUPS"]
