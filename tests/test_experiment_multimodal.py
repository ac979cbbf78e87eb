"""experiments/multimodal.py --quick runs all four arms end to end and writes its folder."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_multimodal_quick_writes_table_plots_and_summary(tmp_path):
    out = tmp_path / "exp"
    res = subprocess.run([sys.executable, str(ROOT / "experiments" / "multimodal.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(ROOT), "R1LAB_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["arm"] for r in summary["rows"]] == ["joint", "und-only", "gen-only", "shared-vq"]
    assert all(0 <= r["und_pass@1"] <= 1 for r in summary["rows"])
    assert (out / "understanding.png").stat().st_size > 0 and (out / "generation.png").stat().st_size > 0
    assert "joint - single-task" in summary["verdict"]
    # The shared-VQ arm's understanding really read codes: its patch encoder never changed
    # after stage I, while the joint arm's kept training.
    from r1lab import checkpoint

    def encoder(arm: str, stage: str):
        return checkpoint.load_latest(out / arm / "seed0" / stage).model_state["und_encoder.patch.weight"]

    assert encoder("shared-vq", "align").equal(encoder("shared-vq", "instruct"))
    assert not encoder("joint", "align").equal(encoder("joint", "instruct"))
