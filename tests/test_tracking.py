"""Tracking: the metrics file a run leaves behind, its resume contract, and terminal output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from r1lab.tracking import Tracker, format_table, progress, read_metrics


def steps(rows: list[dict]) -> list[int]:
    return [r["step"] for r in rows]


def test_log_writes_one_flushed_json_line_per_call(tmp_path: Path) -> None:
    t = Tracker(tmp_path, tensorboard=False)
    t.log(1, {"rollout/reward_mean": 0.5, "train/loss": torch.tensor(2.0), "n": np.int64(3)})
    # Readable before close: a crash right after log() must not lose the row.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    t.close()
    row = json.loads(lines[0])
    assert len(lines) == 1
    assert row["step"] == 1 and row["rollout/reward_mean"] == 0.5 and row["train/loss"] == 2.0
    assert row["n"] == 3 and isinstance(row["time"], float)


def test_reserved_and_non_scalar_metrics_are_rejected(tmp_path: Path) -> None:
    with Tracker(tmp_path, tensorboard=False) as t:
        with pytest.raises(ValueError, match="'step'"):
            t.log(1, {"step": 1.0})
        with pytest.raises(TypeError, match="'x'"):
            t.log(1, {"x": torch.zeros(2)})
        with pytest.raises(TypeError, match="'s'"):
            t.log(1, {"s": "text"})


def test_non_finite_values_are_valid_json_and_read_back(tmp_path: Path) -> None:
    with Tracker(tmp_path, tensorboard=False) as t:
        t.log(1, {"a": float("nan"), "b": float("inf"), "c": -math.inf, "d": 1.5})
    line = (tmp_path / "metrics.jsonl").read_text().strip()
    strict = json.loads(line, parse_constant=lambda c: pytest.fail(f"invalid JSON token {c}"))
    assert strict["a"] == "nan" and strict["b"] == "inf" and strict["c"] == "-inf"
    (row,) = read_metrics(tmp_path)
    assert math.isnan(row["a"]) and row["b"] == math.inf and row["c"] == -math.inf and row["d"] == 1.5


def test_read_metrics_tolerates_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
    assert steps(read_metrics(path)) == [1, 2]


def test_read_metrics_reports_damage_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        read_metrics(path)


def test_resume_drops_rows_after_checkpoint_step(tmp_path: Path) -> None:
    # Uninterrupted run: steps 1..6.
    ref = tmp_path / "ref"
    with Tracker(ref, tensorboard=False) as t:
        for s in range(1, 7):
            t.log(s, {"loss": 1.0 / s})

    # Interrupted run: checkpoint at 3, crash during the write of step 5's row.
    run = tmp_path / "run"
    with Tracker(run, tensorboard=False) as t:
        for s in range(1, 5):
            t.log(s, {"loss": 1.0 / s})
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "time": 1.0, "lo')
    with Tracker(run, tensorboard=False, resume=True, resume_step=3) as t:
        assert steps(read_metrics(run)) == [1, 2, 3]
        for s in range(4, 7):
            t.log(s, {"loss": 1.0 / s})

    def strip_time(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "time"} for r in rows]

    assert strip_time(read_metrics(run)) == strip_time(read_metrics(ref))


def test_fresh_tracker_starts_an_empty_file(tmp_path: Path) -> None:
    with Tracker(tmp_path, tensorboard=False) as t:
        t.log(1, {"x": 1.0})
    with Tracker(tmp_path, tensorboard=False) as t:
        t.log(7, {"x": 2.0})
    assert steps(read_metrics(tmp_path)) == [7]


def test_resume_step_requires_resume(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Tracker(tmp_path, tensorboard=False, resume_step=3)


def test_tensorboard_scalars_use_metric_names_as_tags(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with Tracker(tmp_path) as t:
        t.log(1, {"rollout/reward_mean": 0.25})
        t.log(2, {"rollout/reward_mean": 0.75})
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert acc.Tags()["scalars"] == ["rollout/reward_mean"]
    assert [(e.step, e.value) for e in acc.Scalars("rollout/reward_mean")] == [(1, 0.25), (2, 0.75)]


def test_progress_counts_and_can_be_disabled(monkeypatch, capsys) -> None:
    monkeypatch.setenv("R1LAB_NO_PROGRESS", "1")
    assert list(progress(range(3), "x")) == [0, 1, 2]
    bar = progress(5, "steps")
    bar.update(2)
    bar.set_postfix({"loss": 0.1234}, refresh=False)
    bar.close()
    assert capsys.readouterr().err == ""

    monkeypatch.setenv("R1LAB_NO_PROGRESS", "0")
    with progress(4, "steps") as bar:
        bar.set_postfix({"loss": 0.1234}, refresh=False)
        bar.update(4)
    err = capsys.readouterr().err
    assert "steps" in err and "4/4" in err and "loss=0.123" in err


def test_format_table_aligns_and_rounds() -> None:
    rows = [
        {"stage": "pretrain", "loss": 1.23456789, "tokens": 123456.0, "steps": 10},
        {"stage": "rl", "loss": 0.000123456, "steps": 200, "ok": True},
    ]
    out = format_table(rows, title="Summary")
    assert out.splitlines() == [
        "Summary",
        "stage          loss  tokens  steps  ok",
        "--------  ---------  ------  -----  ---",
        "pretrain      1.235  123456     10",
        "rl        0.0001235            200  yes",
    ]


def test_format_table_column_selection_and_special_floats() -> None:
    out = format_table([{"a": float("nan"), "b": 2.5e-7, "c": "skip"}], columns=["b", "a"])
    assert out.splitlines() == ["        b    a", "---------  ---", "2.500e-07  nan"]
