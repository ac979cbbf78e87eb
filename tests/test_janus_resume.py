"""``r1lab janus`` survives kill -9 in any stage: a run killed in the VQ stage and again in stage
II, then resumed, ends bit-identical to an uninterrupted run (weights, optimizer, RNG and metrics
of every stage, and the same evaluation)."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

from test_janus import ARGS
from test_resume import KILL_SEED, interrupt, rows_by_step, same_checkpoint
from r1lab import checkpoint
from r1lab.cli import main

STEPS = {"vq_steps": 8, "align_steps": 4, "unified_steps": 8, "instruct_steps": 4}
ARGV = [*ARGS, *[a for k, v in STEPS.items() for a in (f"--janus.{k}", str(v))], "--save_every", "2", "--keep_checkpoints", "1000"]


def test_janus_killed_in_two_stages_resumes_bit_identical(tmp_path):
    reference = tmp_path / "reference"
    assert main(["janus", "--out", str(reference), *ARGV]) == 0
    run, rng = tmp_path / "run", random.Random(KILL_SEED)
    cmd = ["janus", "--out", str(run), *ARGV]
    assert interrupt(cmd, run / "vq", rng.randint(1, 6), signal.SIGKILL, rng, tmp_path / "a.txt").returncode == -9
    assert interrupt([*cmd, "--resume"], run / "unified", rng.randint(1, 6), signal.SIGKILL, rng, tmp_path / "b.txt").returncode == -9
    assert main([*cmd, "--resume"]) == 0

    def summary(path: Path) -> dict:
        s = json.loads((path / "summary.json").read_text())
        return {k: v for k, v in s.items() if k not in ("wall_s", "timings")}

    assert summary(run) == summary(reference)
    for stage, key in (("vq", "vq_steps"), ("align", "align_steps"), ("unified", "unified_steps"), ("instruct", "instruct_steps")):
        assert rows_by_step(run / stage) == rows_by_step(reference / stage), stage
        last = f"step_{STEPS[key]}"
        assert same_checkpoint(checkpoint.checkpoints_dir(run / stage) / last, checkpoint.checkpoints_dir(reference / stage) / last), stage
    print(f"\njanus: kill points tried 2 (vq, unified), resumed bit-identically 2 (seed {KILL_SEED})")


def test_janus_resume_refuses_changed_settings(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["janus", "--out", str(out), *ARGV]) == 0
    assert main(["janus", "--out", str(out), *ARGV, "--resume", "--janus.cfg_dropout", "0.3"]) == 2
    assert "janus.cfg_dropout" in capsys.readouterr().err
    assert main(["janus", "--out", str(out), *ARGV]) == 2  # no --resume: refuses to overwrite
