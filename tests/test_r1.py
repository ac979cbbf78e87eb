"""``r1lab r1``: the cold-start set is verified, distinct, train-split worked solutions; the
pipeline runs every stage, evaluates after each, and resumes bit-identically after kill -9."""

from __future__ import annotations

import json
import random

import pytest

from r1lab.recipes import common
from r1lab.recipes.r1 import cold_start_records
from r1lab.tasks import get_task
from r1lab.tasks.base import Example, Task
from r1lab.tokenizer import CharTokenizer


def test_cold_start_records_are_verified_distinct_train_solutions():
    task, tok = get_task("chain"), CharTokenizer.build()
    records = cold_start_records(task, tok, 50, seed=3)
    assert len(records) == 50
    examples = [Example(r["question"], r["answer"], r["solution"]) for r in records]
    assert len({task.key(ex) for ex in examples}) == 50  # distinct problems, not just distinct texts
    assert all(task.split_of(ex) == "train" for ex in examples)  # never a held-out problem
    for ex in examples:
        assert ex.solution.splitlines()[-1].endswith(f"={ex.answer}")  # the worked steps lead to the answer
        assert task.score(tok.completion_text(ex.solution, ex.answer), ex, common_weights()).correct == 1.0
    assert cold_start_records(task, tok, 50, seed=3) == records  # seeded


def common_weights():
    from r1lab.rewards import RewardWeights

    return RewardWeights()


class _Broken(Task):
    """A task whose worked solutions lead to a wrong answer, or that has none."""

    name = "broken"

    def __init__(self, solution: str):
        self.solution = solution

    def sample(self, rng: random.Random, split):
        a = rng.randint(0, 10_000)
        return Example(f"{a}+1", str(a + 1), self.solution)

    def check(self, answer: str, example: Example) -> float:
        return 1.0 if answer == example.answer else 0.0


def test_cold_start_without_usable_solutions_is_a_one_line_error():
    tok = CharTokenizer.build()
    with pytest.raises(common.StageError, match="no verified worked solutions"):
        cold_start_records(_Broken(""), tok, 5, seed=0)
    # a solution that renders into a malformed completion (a tag inside <think>) is never kept
    with pytest.raises(common.StageError, match="r1.cold_start_data"):
        cold_start_records(_Broken("<answer>"), tok, 5, seed=0)


TINY_R1 = ["--pretrain.steps", "12", "--model.ffn", "dense", "--r1.cold_start_examples", "16", "--r1.cold_start_steps", "4",
           "--r1.rl1_steps", "3", "--r1.sft2_steps", "4", "--r1.rl2_steps", "3", "--sft.batch_size", "2", "--sft.val_fraction", "0",
           "--rejection.n_prompts", "4", "--rejection.samples_per_prompt", "4", "--rejection.sample.max_new_tokens", "24"]


def test_r1_runs_every_stage_and_evaluates_after_each(tmp_path, capsys):
    from conftest import TINY, overrides
    from r1lab.cli import main

    run = tmp_path / "r1"
    assert main(["r1", "--out", str(run), *overrides(TINY), *TINY_R1]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary["stages"]) == ["base", "sft1", "rl1", "sft2", "rl2"]
    for stage in ("pretrain", "sft1", "rl1", "sft2", "rl2"):
        assert (run / stage / "checkpoints").is_dir(), stage
    cold = [json.loads(line) for line in (run / "data" / "cold_start.jsonl").read_text().splitlines()]
    assert len(cold) == 16 and all(r["solution"] for r in cold)
    sft1_rows = [json.loads(line) for line in (run / "sft1" / "metrics.jsonl").read_text().splitlines()]
    assert len(sft1_rows) == 4 and sft1_rows[-1]["sft/loss"] < sft1_rows[0]["sft/loss"]  # the cold start is learnt
    for name, curve in summary["pass_curves"].items():
        assert len(curve) == 4 and curve == sorted(curve), name  # n = 4 samples, pass@k non-decreasing
    out = capsys.readouterr().out
    assert "r1lab r1 on chain" in out and "rl2" in out
    assert (run / "eval" / "pass_at_k.png").stat().st_size > 1000 and (run / "report.html").is_file()


@pytest.mark.slow  # ~1-2 min: six r1lab processes
def test_r1_killed_in_every_stage_resumes_bit_identical(tmp_path):
    import signal

    from safetensors.torch import load_file

    from conftest import TINY, overrides
    from r1lab.cli import main
    from test_resume import KILL_SEED, interrupt, rows_by_step, same

    argv = [*overrides(TINY), *TINY_R1, "--pretrain.steps", "16", "--r1.cold_start_steps", "6", "--r1.sft2_steps", "6",
            "--r1.rl1_steps", "4", "--r1.rl2_steps", "4", "--save_every", "1", "--keep_checkpoints", "1000"]
    reference = tmp_path / "reference"
    assert main(["r1", "--out", str(reference), *argv]) == 0
    run, rng = tmp_path / "run", random.Random(KILL_SEED)
    cmd = ["r1", "--out", str(run), *argv]
    # One kill -9 inside each training stage, at a random step; every restart resumes.
    for i, (stage, last) in enumerate((("pretrain", 14), ("sft1", 4), ("rl1", 2), ("sft2", 4), ("rl2", 2))):
        done = interrupt([*cmd, *(["--resume"] if i else [])], run / stage, rng.randint(1, last), signal.SIGKILL, rng, tmp_path / f"{stage}.txt")
        assert done is not None and done.returncode == -signal.SIGKILL, (stage, done and done.stdout[-2000:])
    assert main([*cmd, "--resume"]) == 0

    def summary(path):
        s = json.loads((path / "summary.json").read_text())
        s["rejection"].pop("init")  # the checkpoint's path, which names the run folder
        return {k: v for k, v in s.items() if k not in ("wall_s", "stage_s", "resumed")}

    assert summary(run) == summary(reference)
    for stage in ("pretrain", "sft1", "rl1", "sft2", "rl2"):
        assert rows_by_step(run / stage) == rows_by_step(reference / stage), stage
    assert (run / "data" / "cold_start.jsonl").read_bytes() == (reference / "data" / "cold_start.jsonl").read_bytes()
    a = load_file(run / "rl2" / "checkpoints" / "step_4" / "model.safetensors")
    b = load_file(reference / "rl2" / "checkpoints" / "step_4" / "model.safetensors")
    assert same(a, b)
    print(f"\nr1: kill points tried 5 (pretrain, sft1, rl1, sft2, rl2), resumed bit-identically 5 (seed {KILL_SEED})")


def test_r1_bad_cold_start_file_is_one_line_exit_2(tmp_path, capsys):
    from r1lab.cli import main

    assert main(["r1", "--out", str(tmp_path / "r"), "--r1.cold_start_data", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("r1lab: error: r1.cold_start_data") and "\n" not in err
    assert main(["r1", "--r1.sft2_from", "rl2"]) == 2  # not one of base, rl1
    assert "r1.sft2_from" in capsys.readouterr().err


def test_r1_help_lists_its_stages_settings(capsys):
    from r1lab.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["r1", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for key in ("--r1.cold_start_examples", "--r1.rl1_steps", "--sft.lr", "--rejection.samples_per_prompt", "--rl.group_size"):
        assert key in out, key


def test_r1_preset_spells_out_the_embedded_defaults():
    from r1lab import config as config_lib

    assert config_lib.build(config_lib.load_yaml("r1")) == config_lib.build()
