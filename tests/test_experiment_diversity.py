"""experiments/diversity.py --quick: base, RL and distilled models on the same held-out problems,
pass@k curves for every k and the diversity figures, in one folder."""

import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_diversity_quick_writes_curves_table_and_verdict(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["diversity.py", "--quick", "--out", str(tmp_path)])
    runpy.run_path(str(ROOT / "experiments" / "diversity.py"), run_name="__main__")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["model"] for r in summary["rows"]] == ["base", "rl", "distilled"]
    for name, curve in summary["pass_curves"].items():
        assert len(curve) == summary["n"] and curve == sorted(curve), name
    assert "distinct answers per problem" in summary["verdict"] and summary["quick"] is True
    for png in ("pass_at_k.png", "distinct_answers.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert "distilled from" in summary["verdict"] and summary["distilled_from"]
    assert (tmp_path / "rejection" / "samples.jsonl").read_text().strip()  # what the distilled model was trained on
