"""Metrics and progress: one JSON line per logged step, TensorBoard scalars, a terminal bar.

Every run folder gets ``metrics.jsonl``: one object per ``Tracker.log`` call,
``{"step": N, "time": <unix seconds>, "rollout/reward_mean": 0.41, ...}``, flushed as it is
written so that a crash loses at most the line being written. The same scalars go to
``<run>/tb/`` for TensorBoard, with the metric name as the tag (``rollout/reward_mean`` groups
under ``rollout``). Metric names follow the house naming (STYLE.md rule 12).

Resume contract: ``checkpoint.save`` at step S and a crash at step S + k leave rows for steps
after S in the file. ``Tracker(run, resume=True, resume_step=S)`` drops them (and a half-written
last line), and TensorBoard purges its events after S, so the resumed run's file holds the same
steps and values as an uninterrupted run's; only ``time`` differs.

Non-finite values: JSON has no NaN or infinity, and Python's ``json`` would write the invalid
tokens ``NaN``/``Infinity``. We write the strings ``"nan"``, ``"inf"`` and ``"-inf"`` instead
(valid JSON that keeps NaN and infinity apart, and that ``float()`` parses), and ``read_metrics``
turns them back into floats.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from numbers import Number
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"
_RESERVED = ("step", "time")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _scalar(name: str, v: Any) -> float | int:
    """A plain Python number from a float, int, bool, numpy scalar or one-element tensor."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise TypeError(f"metric {name!r} is a tensor of shape {tuple(v.shape)}, not a scalar")
        v = v.item()
    elif isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return int(v)
    if not isinstance(v, Number) or isinstance(v, complex):
        raise TypeError(f"metric {name!r} must be a real number, got {type(v).__name__}")
    return v  # type: ignore[return-value]


def _json_value(v: float | int) -> float | int | str:
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _parse_lines(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(raw line, row) pairs of a metrics file's text."""
    out = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            # A crash mid-write leaves the last line cut short (no newline after it): drop it.
            # Damage anywhere else is not something a crash does, so it is reported.
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON line") from None
        out.append((line, row))
    return out


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All rows of a ``metrics.jsonl`` (a file or its run folder), oldest first. A truncated last
    line is ignored; the strings "nan", "inf", "-inf" come back as floats."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    rows = [row for _, row in _parse_lines(path.read_text(encoding="utf-8"), path)]
    for row in rows:
        for k, v in row.items():
            if isinstance(v, str) and v in _NONFINITE:
                row[k] = _NONFINITE[v]
    return rows


class Tracker:
    """Writes metrics of one run folder to ``metrics.jsonl`` and (optionally) TensorBoard.

    A fresh tracker (``resume=False``) starts both from empty; ``resume=True`` keeps what is there,
    dropping rows after ``resume_step`` when it is given (the step of the checkpoint resumed from).
    Under torchrun, create it on rank 0 only: the file has one writer.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True, resume: bool = False,
                 resume_step: int | None = None):
        if resume_step is not None and not resume:
            raise ValueError("resume_step needs resume=True")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        if resume:
            self._truncate(resume_step)
        self._file = open(self.path, "a" if resume else "w", encoding="utf-8")
        self._tb = None
        if tensorboard:
            # Imported here: tensorboard costs about a second to import and is optional.
            from torch.utils.tensorboard import SummaryWriter

            tb_dir = self.run_dir / TB_DIR
            if not resume and tb_dir.is_dir():
                # Old event files would interleave a previous run's curves with this one's.
                for f in tb_dir.glob("events.out.tfevents.*"):
                    f.unlink()
            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(log_dir=str(tb_dir), purge_step=purge, flush_secs=30)

    def _truncate(self, resume_step: int | None) -> None:
        if not self.path.exists():
            return
        text = self.path.read_text(encoding="utf-8")
        parsed = _parse_lines(text, self.path)
        # Rows are kept in their original text form so that values cannot drift.
        kept = [ln for ln, r in parsed if resume_step is None or r["step"] <= resume_step]
        if len(kept) == len(parsed) and (not text or text.endswith("\n")):
            return
        # Rewrite through a temporary file and rename, so a crash here cannot lose the rows kept.
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(ln + "\n" for ln in kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append one row for ``step``. Values may be Python numbers, numpy scalars or
        one-element tensors."""
        row: dict[str, Any] = {"step": int(step), "time": round(time.time(), 3)}
        values = {}
        for k, v in metrics.items():
            if k in _RESERVED:
                raise ValueError(f"metric name {k!r} is reserved")
            values[k] = _scalar(k, v)
            row[k] = _json_value(values[k])
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, global_step=int(step), walltime=row["time"])

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable_or_total: Iterable | int, desc: str = "", **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr showing rate and ETA. Given an int, it counts to that total and you
    call ``bar.update()``. ``bar.set_postfix({"loss": 0.12}, refresh=False)`` shows a few metrics.
    ``R1LAB_NO_PROGRESS=1`` disables it (tests, CI logs). Redraws are rate-limited; when stderr is
    not a terminal (a log file) to one line every 30 s, so logs stay readable."""
    tty = sys.stderr.isatty()
    opts: dict[str, Any] = dict(
        desc=desc,
        file=sys.stderr,
        mininterval=0.5 if tty else 30.0,
        dynamic_ncols=True,
        disable=os.environ.get("R1LAB_NO_PROGRESS", "") not in ("", "0"),
    )
    opts.update(kwargs)
    if isinstance(iterable_or_total, int):
        return tqdm(total=iterable_or_total, **opts)
    return tqdm(iterable_or_total, **opts)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        a = abs(v)
        if a == 0 or not math.isfinite(v) or 1e-4 <= a < 1e4:
            return f"{v:.4g}"  # 4 significant digits: 0.1235, 12.35, 1235
        if 1e4 <= a < 1e9:
            return f"{v:.0f}"  # whole numbers read better than 1.235e+04 for token counts
        return f"{v:.3e}"
    return str(v)


def _numeric(v: Any) -> bool:
    return isinstance(v, (Number, np.generic, torch.Tensor)) and not isinstance(v, bool)


def format_table(rows: list[Mapping[str, Any]], columns: list[str] | None = None,
                 title: str = "") -> str:
    """A plain aligned text table: numbers right-aligned, floats to 4 significant digits,
    missing cells blank. Columns default to every key in order of first appearance."""
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    numeric = [all(_numeric(r[c]) for r in rows if r.get(c) is not None) and any(c in r for r in rows)
               for c in columns]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(vals: list[str]) -> str:
        out = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)]
        return "  ".join(out).rstrip()

    lines = [title] if title else []
    lines += [line(list(columns)), "  ".join("-" * w for w in widths)]
    lines += [line(row) for row in cells]
    return "\n".join(lines)


__all__ = ["Tracker", "format_table", "progress", "read_metrics"]
