"""experiments/algorithms.py --quick: every algorithm's preset runs from one base model and the
folder holds the table, the plots and a summary with one row per algorithm."""

import json
import os
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_algorithms_quick_writes_its_folder(tmp_path, monkeypatch):
    arms = ["grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp", "grpo:mini_batches=2:lr=3e-5"]
    monkeypatch.setattr(sys, "argv", ["algorithms.py", "--quick", "--out", str(tmp_path), "--arms", ",".join(arms)])
    runpy.run_path(str(ROOT / "experiments" / "algorithms.py"), run_name="__main__")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["algorithm"] for r in summary["rows"]] == arms[:-1] + ["grpo:mini_batches=2:lr=3e-05"]  # values as validated
    assert summary["quick"] is True and "highest final held-out pass@1" in summary["verdict"]
    for png in ("pass_at_1.png", "mean_len.png", "rollout_correct.png", "wall.png", "final_pass.png"):
        assert (tmp_path / png).stat().st_size > 1000
    for arm in ("dapo", "gspo"):  # each ran its own preset: DAPO's metric only exists under dynamic sampling
        rows = [json.loads(line) for line in (tmp_path / arm / "seed0" / "metrics.jsonl").read_text().splitlines()]
        assert ("rollout/groups_drawn_per_kept" in rows[0]) == (arm == "dapo")
        assert "eval/pass@1" in rows[-1]
    # The overridden arm is GRPO with 2 optimizer steps per batch at 0.3x the step size, in its own folder.
    plain, tuned = ([json.loads(line) for line in (tmp_path / arm / "seed0" / "metrics.jsonl").read_text().splitlines()]
                    for arm in ("grpo", "grpo+mini_batches=2+lr=3e-05"))
    assert [m["train/optimizer_steps"] for m in plain] == [1, 1] and [m["train/optimizer_steps"] for m in tuned] == [2, 2]
    assert [round(t["train/lr"] / p["train/lr"], 9) for p, t in zip(plain, tuned)] == [0.3, 0.3]  # the same warm-up, scaled
    assert tuned[-1]["train/kl"] > 0  # still GRPO's preset underneath: its KL to the reference (Dr. GRPO's preset has none)


def run_experiment(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["algorithms.py", "--quick", *args])
    runpy.run_path(str(ROOT / "experiments" / "algorithms.py"), run_name="__main__")


@pytest.mark.slow  # three --quick runs, ~11 s on an idle core
def test_algorithms_init_starts_every_arm_from_an_existing_base(tmp_path, monkeypatch, capsys):
    from r1lab.recipes import common

    run_experiment(monkeypatch, "--out", str(tmp_path / "a"), "--arms", "rloo")
    first = json.loads((tmp_path / "a" / "summary.json").read_text())
    run_experiment(monkeypatch, "--out", str(tmp_path / "b"), "--arms", "rloo", "--init", str(tmp_path / "a" / "base"))
    second = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert not (tmp_path / "b" / "base").exists()  # nothing pretrained
    assert second["init"] == str(common.resolve_checkpoint(tmp_path / "a" / "base").path) == first["init"]
    assert second["base_pass@1"] == first["base_pass@1"]  # the same base, evaluated the same way
    # The same seed from the same base trains the same run, and a finished run is read back, not rerun.
    assert second["rows"][0]["pass@1 final"] == first["rows"][0]["pass@1 final"]
    result = tmp_path / "b" / "rloo" / "seed0" / "result.json"
    result.write_text(json.dumps({**json.loads(result.read_text()), "wall_s": 1234.0}))
    run_experiment(monkeypatch, "--out", str(tmp_path / "b"), "--arms", "rloo", "--init", str(tmp_path / "a" / "base"))
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["rows"][0]["wall s"] == 1234.0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_experiment(monkeypatch, "--out", str(tmp_path / "c"), "--init", str(tmp_path / "nothing"))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing" in err and "does not exist" in err


def test_a_run_is_claimed_by_one_live_process(tmp_path):
    import subprocess

    claim = runpy.run_path(str(ROOT / "experiments" / "algorithms.py"))["claim"]
    run_dir = tmp_path / "grpo" / "seed0"
    assert claim(run_dir)  # free: taken
    assert not claim(run_dir)  # held by a live process (this one)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_dir / "claim.pid").write_text(str(dead.pid))
    assert claim(run_dir) and (run_dir / "claim.pid").read_text() == str(os.getpid())  # a dead process's claim is taken over


def test_an_arm_is_a_preset_with_validated_rl_overrides():
    parse_arm = runpy.run_path(str(ROOT / "experiments" / "algorithms.py"))["parse_arm"]
    label, keys = parse_arm("grpo:mini_batches=4:lr=2.5e-5")
    assert label == "grpo:mini_batches=4:lr=2.5e-05"
    assert keys["rl"]["mini_batches"] == 4 and keys["rl"]["lr"] == 2.5e-5 and keys["rl"]["kl_coef"] == 0.04  # on top of the preset
    assert parse_arm("dapo", 2.5e-5)[0] == "dapo:lr=2.5e-05"  # --lr names itself in the arm (its own folder)
    assert parse_arm("dapo:lr=1e-4", 2.5e-5)[0] == "dapo:lr=0.0001"  # the arm's own lr wins
    assert parse_arm("rloo") == ("rloo", {"rl": parse_arm("rloo")[1]["rl"]}) and "lr" not in parse_arm("rloo")[1]["rl"]


@pytest.mark.parametrize("args, culprit", [
    (["--arms", "nope"], "'nope'"),
    (["--arms", "grpo:mini_batches"], "KEY=VALUE"),
    (["--arms", "grpo:foo=1"], "rl.foo"),
    (["--arms", "grpo:mini_batches=0"], "rl.mini_batches"),
    (["--arms", "grpo:lr=abc"], "rl.lr"),
    (["--arms", "grpo:lr=1e-4:lr=2e-4"], "twice"),
    (["--arms", "grpo:steps=5"], "rl.steps"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
])
def test_a_bad_arm_or_lr_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, args, culprit):
    with pytest.raises(SystemExit) as exc:
        run_experiment(monkeypatch, "--out", str(tmp_path / "x"), *args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and culprit in err
    assert not (tmp_path / "x").exists()  # nothing pretrained or evaluated
