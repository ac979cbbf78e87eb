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


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("multimodal", ROOT / "experiments" / "multimodal.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_budget_is_a_fraction_of_the_default_stage_two_and_three_steps():
    from r1lab import config

    mm, d = _load_script(), config.build().janus
    assert mm.budget(1.0) == {"janus": {"unified_steps": d.unified_steps, "instruct_steps": d.instruct_steps}}
    third = config.build(mm.budget(1 / 3)).janus
    assert (third.align_steps, third.unified_steps, third.instruct_steps) == (d.align_steps, d.unified_steps // 3, d.instruct_steps // 3)


def _fake_arm(out: Path, arm: str, seed: int, und: float, scene: float) -> None:
    run = out / arm / f"seed{seed}"
    run.mkdir(parents=True)
    u = {"greedy_accuracy": und, "scene_greedy_accuracy": und, "digit_greedy_accuracy": 0.1, "pass@1": und / 2, "blind_majority": 0.35}
    g = {"scene_accuracy": scene, "digit_accuracy": 0.1}
    (run / "summary.json").write_text(json.dumps({"understanding": u, "generation": {"guided": g, "unguided": g}, "timings": {"cpu_s": 1.0}, "wall_s": 1.0}))


def test_merge_tabulates_finished_arms_and_pairs_the_comparisons_by_seed(tmp_path):
    out = tmp_path / "exp"
    _fake_arm(out, "joint", 0, 0.50, 0.30)
    _fake_arm(out, "joint", 1, 0.40, 0.20)
    _fake_arm(out, "und-only", 0, 0.45, 0.0)   # und-only finished seed 0 only: the comparison uses seed 0 alone
    _fake_arm(out, "gen-only", 0, 0.20, 0.10)
    _fake_arm(out, "gen-only", 1, 0.20, 0.30)
    res = subprocess.run([sys.executable, str(ROOT / "experiments" / "multimodal.py"), "--merge", "--seeds", "0", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert [(r["arm"], r["seed"]) for r in s["rows"]] == [("joint", 0), ("joint", 1), ("und-only", 0), ("gen-only", 0), ("gen-only", 1),
                                                          ("joint", "mean"), ("und-only", "mean"), ("gen-only", "mean")]
    assert abs(s["means"]["joint"]["und_greedy"] - 0.45) < 1e-9
    assert "understanding +0.050 (seed 0)" in s["verdict"]                       # 0.50 - 0.45, not the mean 0.45 - 0.45
    assert "generation (scenes, guided) +0.050 (seeds +0.200, -0.100)" in s["verdict"]
    assert "decoupled - shared VQ encoding: understanding n/a" in s["verdict"]  # no shared-vq arm finished
    assert not (out / "shared-vq").exists()                                      # --merge trains nothing


def test_arms_of_one_seed_started_together_wait_for_one_vq_tokenizer(tmp_path):
    """While another process holds the seed's VQ lock, a new arm says it waits and trains nothing."""
    import fcntl
    out = tmp_path / "exp"
    (out / "vq-only").mkdir(parents=True)
    with open(out / "vq-only" / "seed0.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "multimodal.py"), "--quick", "--seeds", "0", "--arms", "und-only",
                                 "--threads", "1", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        try:
            line = proc.stdout.readline()
            assert "waiting for seed 0's VQ tokenizer" in line, line
            assert proc.poll() is None and not (out / "vq-only" / "seed0" / "vq").exists()
        finally:
            proc.kill()
            proc.wait()
