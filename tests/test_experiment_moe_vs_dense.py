"""experiments/moe_vs_dense.py --quick runs end to end and writes its folder."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_moe_vs_dense_quick_writes_table_plots_and_summary(tmp_path):
    out = tmp_path / "exp"
    res = subprocess.run([sys.executable, str(ROOT / "experiments" / "moe_vs_dense.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "R1LAB_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["arms"]) == {"dense", "moe-aux", "moe-auxfree"}
    rows = summary["rows"]
    assert all(r["heldout_loss"] > 0 for r in rows)
    dense, moe = (next(r for r in rows if r["arm"] == a) for a in ("dense", "moe-aux"))
    assert abs(dense["active_M"] - moe["active_M"]) / dense["active_M"] < 0.05  # equal active parameters
    assert moe["load_max_over_mean"] >= 1 and dense["load_max_over_mean"] is None
    assert (out / "heldout_loss.png").stat().st_size > 0 and (out / "load_balance.png").stat().st_size > 0
    assert "verdict" in summary and (out / "table.md").exists()
