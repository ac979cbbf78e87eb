"""Runs that survive: real ``r1lab`` processes killed with SIGKILL at random steps (or stopped with
SIGTERM) and resumed end bit-identical to uninterrupted runs, weights and metrics; non-finite
steps are skipped and reported; a full disk and a truncated checkpoint leave a resumable run.

Kill points are drawn from a seeded RNG; ``R1LAB_KILL_POINTS`` (default 3 per stage) and
``R1LAB_KILL_SEED`` change how many and where (the measured figures in the README come from
``R1LAB_KILL_POINTS=10``). After every kill, the rows the killed process wrote and its newest
checkpoint are compared with the uninterrupted run's, so each kill point is checked on its own.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, overrides
from r1lab import checkpoint
from r1lab.cli import main
from r1lab.recipes import pretrain as pretrain_recipe
from r1lab.tracking import read_metrics

KILL_POINTS = int(os.environ.get("R1LAB_KILL_POINTS", "3"))
KILL_SEED = int(os.environ.get("R1LAB_KILL_SEED", "0"))
ARGS = overrides(TINY)
# Longer runs than TINY's, so that a kill lands mid-run; every checkpoint kept for comparison.
PRETRAIN_STEPS, RL_STEPS = max(30, 4 * KILL_POINTS), max(10, 3 * KILL_POINTS + 4)
PRETRAIN = [*ARGS, "--pretrain.steps", str(PRETRAIN_STEPS), "--save_every", "3", "--keep_checkpoints", "1000"]
RL = [*ARGS, "--rl.steps", str(RL_STEPS), "--rl.eval_every", "4", "--save_every", "2", "--keep_checkpoints", "1000"]
ENV = {**os.environ, "R1LAB_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}


def comparable(row: dict) -> dict:
    """A metrics row without wall-clock quantities."""
    return {k: v for k, v in row.items() if k != "time" and not k.startswith("time/") and not k.endswith("tokens_per_s")}


def rows_by_step(run: Path) -> dict[int, dict]:
    path = run / "metrics.jsonl"
    return {r["step"]: comparable(r) for r in read_metrics(path)} if path.exists() else {}


def same(a, b) -> bool:
    """Exact equality of nested state (tensors with torch.equal; NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b


def same_checkpoint(a: Path, b: Path) -> bool:
    """Weights, optimizer state, RNG and caller state of two step folders are identical."""
    ca, cb = checkpoint.load(a), checkpoint.load(b)
    return (same(ca.model_state, cb.model_state) and same(ca.optimizer_state, cb.optimizer_state)
            and same(ca.extra_states, cb.extra_states) and ca.rng == cb.rng and ca.state == cb.state)


def newest_step_written(run: Path) -> int:
    """Highest step with a complete row in metrics.jsonl (0 when none)."""
    try:
        text = (run / "metrics.jsonl").read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    steps = [json.loads(line)["step"] for line in text.split("\n")[:-1] if line.strip()]
    return max(steps, default=0)


def step_seconds(run: Path) -> float:
    """Wall time of the last logged step (from the rows' "time"), to land kills anywhere in a step."""
    try:
        rows = read_metrics(run)
    except (FileNotFoundError, ValueError):
        return 0.02
    return min(max(rows[-1]["time"] - rows[-2]["time"], 0.001), 0.5) if len(rows) >= 2 else 0.02


def interrupt(argv: list[str], run: Path, at_step: int, sig: int, rng: random.Random, log: Path) -> subprocess.CompletedProcess | None:
    """Start ``r1lab *argv``, wait until ``run`` logged ``at_step`` plus a random fraction of a
    step (sampling, update, save, eval: anywhere), send ``sig``; None if the process ended first."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "r1lab.cli", *argv], stdout=out, stderr=subprocess.STDOUT, env=ENV)
        deadline = time.monotonic() + 120
        while newest_step_written(run) < at_step and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, step_seconds(run)))
        if proc.poll() is not None:
            return None
        proc.send_signal(sig)
        proc.wait(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, log.read_text(), "")


def check_segment(run: Path, reference: Path, ref_rows: dict[int, dict]) -> bool:
    """What the killed process left equals the uninterrupted run's: every complete row, and the
    newest checkpoint that both runs hold (a graceful stop also saves at an off-schedule step)."""
    rows = rows_by_step(run)
    ok = all(ref_rows[s] == r for s, r in rows.items())
    ours = checkpoint.checkpoints_dir(run)
    common = [p.name for p in ours.glob("step_*") if p.name.removeprefix("step_").isdigit()
              and (checkpoint.checkpoints_dir(reference) / p.name).is_dir()] if ours.is_dir() else []
    if common:
        newest = max(common, key=lambda name: int(name.removeprefix("step_")))
        ok = ok and same_checkpoint(ours / newest, checkpoint.checkpoints_dir(reference) / newest)
    return ok


def survive_kills(argv: list[str], run: Path, reference: Path, total: int, signals: list[int], tmp: Path) -> list[bool]:
    """Interrupt a run once per entry of ``signals`` at increasing random steps, resuming after
    each; return per kill point whether the process resumed from it matched the reference (up to
    the next kill, or to the end)."""
    rng = random.Random(KILL_SEED)
    ref_rows = rows_by_step(reference)
    results, seen = [], 0
    # One kill point in each of len(signals) equal slices of steps 1 .. total - 3.
    edges = [1 + round(i * (total - 3) / len(signals)) for i in range(len(signals) + 1)]
    for i, sig in enumerate(signals):
        # Strictly after every row seen so far: stale rows of the previous process must not count.
        k = max(rng.randint(edges[i], max(edges[i], edges[i + 1] - 1)), seen + 1)
        done = interrupt([*argv, *(["--resume"] if i else [])], run, k, sig, rng, tmp / f"log{i}.txt")
        assert done is not None, f"run finished before kill point {k}"
        if sig == signal.SIGKILL:
            assert done.returncode == -signal.SIGKILL, done.stdout
        else:  # graceful: the step finishes, a checkpoint is written, a clear message, exit 128 + signal
            last = newest_step_written(run)
            assert done.returncode == 128 + sig, done.stdout
            assert f"stopped by {signal.Signals(sig).name} after step {last}" in done.stdout, done.stdout
            assert checkpoint.latest_step(run) == last
        seen = newest_step_written(run)
        results.append(check_segment(run, reference, ref_rows))
    final = subprocess.run([sys.executable, "-m", "r1lab.cli", *argv, "--resume"], capture_output=True, text=True, env=ENV, timeout=300)
    assert final.returncode == 0, final.stderr
    last = f"step_{total}"
    results.append(rows_by_step(run) == ref_rows
                   and same_checkpoint(checkpoint.checkpoints_dir(run) / last, checkpoint.checkpoints_dir(reference) / last))
    # results[0] checks the first process, uninterrupted so far; results[i] the one that resumed
    # from kill point i (the last: the run to the end).
    assert results[0], "the first process already differs from the reference"
    resumed = results[1:]
    print(f"\n{argv[0]}: kill points tried {len(signals)}, resumed bit-identically {sum(resumed)} (seed {KILL_SEED})")
    return resumed


def test_pretrain_killed_at_random_steps_resumes_bit_identical(tmp_path):
    reference = tmp_path / "reference"
    assert main(["pretrain", "--out", str(reference), *PRETRAIN]) == 0
    results = survive_kills(["pretrain", "--out", str(tmp_path / "run"), *PRETRAIN], tmp_path / "run", reference, PRETRAIN_STEPS,
                            [signal.SIGKILL] * KILL_POINTS, tmp_path)
    assert all(results), results


def test_rl_stopped_by_sigterm_and_killed_resumes_bit_identical(base_run, tmp_path):
    reference = tmp_path / "reference"
    argv = ["--init", str(base_run), *RL, "--rl.kl_coef", "0.01"]  # the reference model is state too
    assert main(["rl", "--out", str(reference), *argv]) == 0
    assert "eval/pass@1" in rows_by_step(reference)[4]
    results = survive_kills(["rl", "--out", str(tmp_path / "run"), *argv], tmp_path / "run", reference, RL_STEPS,
                            [signal.SIGTERM] + [signal.SIGKILL] * KILL_POINTS, tmp_path)
    assert all(results), results


def test_zero_killed_in_each_stage_ends_with_the_same_summary(tmp_path):
    argv = [*ARGS, "--pretrain.steps", "12", "--rl.steps", "4", "--model.ffn", "dense"]
    assert main(["zero", "--out", str(tmp_path / "reference"), *argv]) == 0
    run, rng = tmp_path / "run", random.Random(KILL_SEED)
    cmd = ["zero", "--out", str(run), *argv]
    assert interrupt(cmd, run / "pretrain", rng.randint(1, 10), signal.SIGKILL, rng, tmp_path / "a.txt").returncode == -9
    assert interrupt([*cmd, "--resume"], run / "rl", rng.randint(1, 2), signal.SIGKILL, rng, tmp_path / "b.txt").returncode == -9
    assert main([*cmd, "--resume"]) == 0

    def summary(path: Path) -> dict:
        s = json.loads((path / "summary.json").read_text())
        return {k: v for k, v in s.items() if k not in ("wall_s", "resumed")}

    assert summary(run) == summary(tmp_path / "reference")
    for stage in ("pretrain", "rl"):
        assert rows_by_step(run / stage) == rows_by_step(tmp_path / "reference" / stage)
    a = load_file(run / "rl" / "checkpoints" / "step_4" / "model.safetensors")
    b = load_file(tmp_path / "reference" / "rl" / "checkpoints" / "step_4" / "model.safetensors")
    assert same(a, b)
    print(f"\nzero: kill points tried 2 (pretrain, rl), resumed bit-identically 2 (seed {KILL_SEED})")


def _nan_from(step: int, monkeypatch) -> None:
    """Make pretraining's loss NaN from optimizer step ``step`` (1-based) on."""
    calls = []
    real = pretrain_recipe.masked_nll

    def nll(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        return out * float("nan") if len(calls) >= step else out

    monkeypatch.setattr(pretrain_recipe, "masked_nll", nll)


def test_a_nan_step_is_skipped_and_reported(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    calls = []
    real = pretrain_recipe.masked_nll

    def nll(*args, **kwargs):  # NaN at step 3 only
        calls.append(1)
        value = real(*args, **kwargs)
        return value * float("nan") if len(calls) == 3 else value

    monkeypatch.setattr(pretrain_recipe, "masked_nll", nll)
    assert main(["pretrain", "--out", str(out), *ARGS]) == 0
    err = capsys.readouterr().err
    assert "step 3: non-finite loss (nan); update skipped" in err
    raw = (out / "metrics.jsonl").read_text().splitlines()
    row = json.loads(raw[2])  # strict JSON: NaN is written as "nan"
    assert row["step"] == 3 and row["pretrain/skipped_nonfinite"] == 1 and row["pretrain/loss"] == "nan"
    assert [r["pretrain/skipped_nonfinite"] for r in read_metrics(out)] == [0, 0, 1, 0, 0, 0]
    assert all(torch.isfinite(t).all() for t in load_file(out / "checkpoints" / "step_6" / "model.safetensors").values())


def test_nonfinite_stop_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    # NaN from step 3 on, max_bad_steps 2: steps 3 and 4 are skipped, then the run stops (exit 3)
    # before saving step 4, so step_2 is the newest checkpoint and loads.
    _nan_from(3, monkeypatch)
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), *ARGS, "--max_bad_steps", "2"]) == 3
    assert checkpoint.latest_step(out) == 2
    assert checkpoint.load_latest(out).step == 2
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]


def test_too_many_nonfinite_steps_stop_with_exit_3_and_a_message(tmp_path, monkeypatch, capsys):
    _nan_from(2, monkeypatch)
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), *ARGS, "--save_every", "1"]) == 3
    err = capsys.readouterr().err
    assert "step 4: 3 consecutive steps with a non-finite loss or gradient" in err
    assert f"last good checkpoint {out / 'checkpoints' / 'step_3'}" in err  # saved during the streak, weights of step 1
    assert same(load_file(out / "checkpoints" / "step_3" / "model.safetensors"),
                load_file(out / "checkpoints" / "step_2" / "model.safetensors"))


def test_rl_nonfinite_gradient_is_named(base_run, tmp_path, monkeypatch, capsys):
    from r1lab import rl

    real = rl.policy_loss

    def policy_loss(logp, *args, **kwargs):
        out = real(logp, *args, **kwargs)
        x = logp.sum()
        # Finite value, NaN gradient: where() sends a zero gradient into sqrt(negative), and 0 * NaN is NaN.
        out.loss = out.loss + torch.where(torch.tensor(True), x * 0, torch.sqrt(-x.abs() - 1))
        return out

    monkeypatch.setattr(rl, "policy_loss", policy_loss)
    out = tmp_path / "rl"
    assert main(["rl", "--init", str(base_run), "--out", str(out), *ARGS]) == 3
    err = capsys.readouterr().err
    assert "step 1: non-finite gradient of " in err and "stopped at step 3" in err
    assert [r["train/skipped_nonfinite"] for r in read_metrics(out)] == [1, 1, 1]


def test_full_disk_stops_with_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    real = checkpoint.torch.save

    def save(obj, f, *args, **kwargs):
        if "step_4" in str(f):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and str(out / "checkpoints" / "step_4") in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2"]
    assert checkpoint.load(out / "checkpoints" / "step_2").step == 2


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), *ARGS]) == 0
    # clone(): load_file maps the file, and reading a mapping of a truncated file is SIGBUS.
    expected = {k: v.clone() for k, v in load_file(out / "checkpoints" / "step_6" / "model.safetensors").items()}
    bad = out / "checkpoints" / "step_6" / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.warns(checkpoint.CheckpointWarning, match=re.escape(str(bad))):
        assert main(["pretrain", "--out", str(out), *ARGS, "--resume"]) == 0
    assert same(load_file(bad), expected)  # redone from step_4, to the same weights
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4, 5, 6]


def test_stop_flag_turns_sigterm_into_a_stop_after_the_step_and_restores_handlers():
    from r1lab.recipes.common import RunStopped, StopFlag

    before = signal.getsignal(signal.SIGTERM)
    with StopFlag() as stop:
        stop.check(1, 5, None)  # nothing requested: no-op
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs between bytecodes
        assert stop.requested
        stop.check(5, 5, None)  # the last step: the run is complete, nothing to stop
        with pytest.raises(RunStopped, match="stopped by SIGTERM after step 2; checkpoint ck") as err:
            stop.check(2, 5, "ck")
        assert err.value.exit_code == 143
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is before


def test_nonfinite_guard_names_the_culprit_and_passes_huge_finite_gradients():
    from r1lab.recipes.common import nonfinite_guard

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    one = torch.tensor(1.0)
    assert nonfinite_guard(one, model) is None
    assert nonfinite_guard(torch.tensor(float("inf")), model) == "loss (inf)"
    for p in model.parameters():
        p.grad.fill_(3e30)  # the norm over all overflows to inf, yet every gradient is finite
    assert nonfinite_guard(one, model) is None
    model[1].weight.grad[1, 2] = float("nan")
    assert nonfinite_guard(one, model) == "gradient of 1.weight"
    model[0].bias.grad = None  # parameters without a gradient are skipped
    model[1].weight.grad[1, 2] = float("-inf")
    assert nonfinite_guard(one, model) == "gradient of 1.weight"
