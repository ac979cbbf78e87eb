"""experiments/algorithms.py --quick: every algorithm's preset runs from one base model and the
folder holds the table, the plots and a summary with one row per algorithm."""

import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_algorithms_quick_writes_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["algorithms.py", "--quick", "--out", str(tmp_path), "--arms", "grpo,dr_grpo,dapo,gspo,rloo,reinforce_pp"])
    runpy.run_path(str(ROOT / "experiments" / "algorithms.py"), run_name="__main__")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["algorithm"] for r in summary["rows"]] == ["grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp"]
    assert summary["quick"] is True and "highest final held-out pass@1" in summary["verdict"]
    for png in ("pass_at_1.png", "mean_len.png", "wall.png"):
        assert (tmp_path / png).stat().st_size > 1000
    for arm in ("dapo", "gspo"):  # each ran its own preset: DAPO's metric only exists under dynamic sampling
        rows = [json.loads(line) for line in (tmp_path / arm / "seed0" / "metrics.jsonl").read_text().splitlines()]
        assert ("rollout/groups_drawn_per_kept" in rows[0]) == (arm == "dapo")
        assert "eval/pass@1" in rows[-1]
