"""experiments/distill_vs_rl.py --quick: teacher, student, distilled and RL students in one folder,
the RL student given at least the distillation's wall-clock."""

import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_distill_vs_rl_quick_writes_table_plots_and_verdict(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["distill_vs_rl.py", "--quick", "--out", str(tmp_path)])
    runpy.run_path(str(ROOT / "experiments" / "distill_vs_rl.py"), run_name="__main__")
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {r["model"]: r for r in summary["rows"]}
    assert list(rows) == ["teacher (MoE, RL)", "student base", "student distilled", "student RL"]
    teacher, student = rows["teacher (MoE, RL)"], rows["student base"]
    assert teacher["active_M"] < teacher["params_M"] and student["active_M"] == student["params_M"]  # MoE teacher, dense student
    assert student["params_M"] < teacher["params_M"]
    assert summary["rl_steps"] >= 1 and summary["budget_s"] > 0
    assert "equal wall-clock" in summary["verdict"]
    for png in ("pass_at_k.png", "pass_at_1.png"):
        assert (tmp_path / png).stat().st_size > 1000
