"""experiments/process_vs_outcome.py --quick: a base policy, Math-Shepherd labels, a PRM, and the
four reward arms (outcome, learned process, hybrid, oracle process) with the monitor on; the
folder holds the table, the plot and a summary with one row per arm and the PRM's held-out check."""

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~25 s on a shared 2-core machine
def test_process_vs_outcome_quick_writes_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["process_vs_outcome.py", "--quick", "--out", str(tmp_path), "--threads", "1"])
    runpy.run_path(str(ROOT / "experiments" / "process_vs_outcome.py"), run_name="__main__")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["arm"] for r in summary["rows"]] == ["outcome", "process", "hybrid", "oracle", "hackable"]
    assert summary["quick"] is True and "Math-Shepherd" in summary["verdict"] and "oracle vs outcome" in summary["verdict"]
    assert summary["prm_heldout"]["traces"] > 0 and (tmp_path / "prm_labels_train.jsonl").is_file()
    assert (tmp_path / "pass_at_1.png").stat().st_size > 1000
    for arm, reward in (("outcome", None), ("process", "process"), ("hybrid", "hybrid"), ("oracle", "process"), ("hackable", None)):
        run = tmp_path / arm / "seed0"
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert ("reward/process_mean" in rows[0]) == (reward is not None)  # each arm trained on its own reward
        assert ("reward/chars_mean" in rows[0]) == (arm == "hackable")
        assert "eval/pass@1" in rows[-1] and "monitor/events" in rows[-1] and (run / "events.jsonl").is_file()
