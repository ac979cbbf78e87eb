"""Every stage from the command line on a tiny config, and bad input ending in one line, exit 2."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, overrides
from r1lab.cli import main
from r1lab.tracking import read_metrics

ARGS = overrides(TINY)


def test_pretrain_writes_a_run_folder_and_the_loss_falls(base_run):
    assert {"config.yaml", "metrics.jsonl", "tokenizer.json", "checkpoints"} <= {p.name for p in base_run.iterdir()}
    assert sorted(p.name for p in (base_run / "checkpoints").iterdir()) == ["step_4", "step_6"]  # keep 2
    rows = read_metrics(base_run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["pretrain/loss"] < rows[0]["pretrain/loss"]
    assert "moe/load_max_over_mean" in rows[0]


def test_eval_records_estimator_parameters(base_run, tmp_path):
    assert main(["eval", "--init", str(base_run), "--out", str(tmp_path), *ARGS]) == 0
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    assert (result["n"], result["ks"], result["split"], result["temperature"]) == (4, [1, 4], "test", 1.0)
    assert {"pass@1", "pass@4", "maj@4", "mean_len"} <= set(result["metrics"])
    assert 0.0 <= result["metrics"]["pass@1"] <= result["metrics"]["pass@4"] <= 1.0


def test_rl_logs_grpo_metrics_and_changes_the_weights(base_run, tmp_path):
    out = tmp_path / "rl"
    assert main(["rl", "--init", str(base_run), "--out", str(out), *ARGS, "--rl.format_weight", "1.0"]) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("rollout/reward_mean", "rollout/zero_var_group_frac", "rollout/mean_len", "train/clip_frac", "train/kl", "rollout/tokens_per_s"):
        assert key in rows[0]
    assert "eval/pass@1" in rows[1] and "eval/pass@1" not in rows[0]  # eval_every 2, and at the end
    assert max(r["rollout/logp_mismatch_max"] for r in rows) < 1e-3  # one model code for both sides
    before = load_file(base_run / "checkpoints" / "step_6" / "model.safetensors")
    after = load_file(out / "checkpoints" / "step_3" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_rl_resume_continues_to_the_same_weights(base_run, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["rl", "--init", str(base_run), "--out", str(full), *ARGS, "--save_every", "1"]) == 0
    assert main(["rl", "--init", str(base_run), "--out", str(part), *ARGS, "--save_every", "1", "--rl.steps", "2"]) == 0
    shutil.rmtree(part / "checkpoints" / "step_2")  # as if killed after saving step 1
    assert main(["rl", "--init", str(base_run), "--out", str(part), *ARGS, "--save_every", "1", "--resume"]) == 0
    a = load_file(full / "checkpoints" / "step_3" / "model.safetensors")
    b = load_file(part / "checkpoints" / "step_3" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_metrics(part / "metrics.jsonl")] == [1, 2, 3]


def test_sample_prints_completions(base_run, capsys):
    assert main(["sample", "3+4*2", "--init", str(base_run), "--generate.n", "2", *ARGS]) == 0
    out = capsys.readouterr().out
    assert "=== 3+4*2" in out and out.count("[format") == 2


def test_zero_end_to_end_writes_the_summary(tmp_path, capsys):
    out = tmp_path / "zero"
    assert main(["zero", "--out", str(out), *ARGS, "--eval.n_samples", "8", "--eval.ks", "[1, 8]", "--model.ffn", "dense"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "chain" and summary["wall_s"] > 0
    for side in ("base", "rl"):
        assert set(summary[side]) == {"pass@1", "pass@8", "mean_len"}
    assert (out / "eval" / "base.json").is_file() and (out / "eval" / "rl.json").is_file()
    assert summary["monitor"]["events"] == len((out / "rl" / "events.jsonl").read_text().splitlines())  # the reward-hacking monitor's verdict
    assert "r1lab zero on chain" in capsys.readouterr().out
    # A second run into the same folder must not clobber it.
    assert main(["zero", "--out", str(out), *ARGS]) == 2


def test_zero_is_reproducible_under_a_seed(tmp_path):
    summaries = []
    for name in ("a", "b"):
        assert main(["zero", "--out", str(tmp_path / name), *ARGS, "--seed", "3"]) == 0
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        summary.pop("wall_s")
        summaries.append(summary)
    assert summaries[0] == summaries[1]
    a = load_file(tmp_path / "a" / "rl" / "checkpoints" / "step_3" / "model.safetensors")
    b = load_file(tmp_path / "b" / "rl" / "checkpoints" / "step_3" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["nonsense"], "unknown stage"),
        (["pretrain", "--model.top_k", "99"], "model.top_k"),
        (["pretrain", "--rl.group_size", "1"], "rl.group_size"),
        (["pretrain", "--pretrain.lr", "-1"], "pretrain.lr"),
        (["pretrain", "--nope.key", "1"], "nope"),
        (["pretrain", "--task", "nonsense"], "unknown task 'nonsense'"),
        (["pretrain", "--task", "gym:not_a_dataset"], "not_a_dataset"),
        (["rl"], "needs --init"),
        (["eval", "--init", "/nonexistent/run"], "/nonexistent/run"),
        (["pretrain", "--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_a_checkpoint_of_another_shape_or_a_corrupt_one_is_refused(base_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(base_run / "checkpoints" / "step_6", bad)
    state = json.loads((bad / "state.json").read_text())
    state["state"]["model_config"]["d_model"] = 64
    (bad / "state.json").write_text(json.dumps(state))
    assert main(["eval", "--init", str(bad), *ARGS]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    shutil.copytree(base_run / "checkpoints" / "step_6", corrupt)
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["eval", "--init", str(corrupt), *ARGS]) == 2
    assert "model.safetensors" in capsys.readouterr().err


class _ClosedPipe:
    """stdout whose reader has left: every write raises BrokenPipeError, as in `r1lab X --help | head -1`."""

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        return self.fd


@pytest.mark.parametrize("argv", [["--help"], *([stage, "--help"] for stage in __import__("r1lab.cli").cli.STAGES), ["prm", "label", "--help"]])
def test_help_of_every_stage_into_a_closed_pipe_exits_quietly(argv, monkeypatch, tmp_path, capsys):
    with open(tmp_path / "stdout", "w") as sink:  # main() points the pipe's fd at /dev/null: a file of ours, not pytest's
        monkeypatch.setattr("sys.stdout", _ClosedPipe(sink.fileno()))
        assert main(argv) == 141
    assert capsys.readouterr().err == ""
