"""A DeepSeek-V3-style model (MLA, sigmoid group-limited routing with the aux-loss-free bias
moving every step, the sequence-wise balance loss, an MTP module) killed with SIGKILL mid-run
resumes bit-identically, in pretraining and in RL: weights, optimizer, RNG, metrics, and the
aux-free bias, which must be restored exactly (it is a buffer, not a parameter the optimizer
would rebuild). The machinery is tests/test_resume.py's."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from conftest import TINY, overrides
from r1lab import checkpoint
from r1lab.cli import main
from test_resume import KILL_POINTS, RL_STEPS, rows_by_step, survive_kills
from test_resume import RL as RL_ARGS

V3 = ["--config", "v3-tiny", *overrides(TINY), "--model.n_routed_experts", "8", "--model.n_group", "2", "--model.topk_group", "1",
      "--model.bias_update_speed", "0.01"]
PRETRAIN_STEPS = 12  # shorter than test_resume's: one kill point by default keeps this test in the default suite
PRETRAIN = [*V3, "--pretrain.steps", str(PRETRAIN_STEPS), "--save_every", "3", "--keep_checkpoints", "1000"]


V3_KILLS = 1 if "R1LAB_KILL_POINTS" not in os.environ else KILL_POINTS  # each kill costs a process start; the slow RL test takes all


def biases(step_dir) -> dict[str, torch.Tensor]:
    return {k: v for k, v in checkpoint.load(step_dir).model_state.items() if k.endswith("router.bias_E")}


def test_v3_pretrain_killed_resumes_bit_identical_with_the_aux_free_bias(tmp_path):
    reference = tmp_path / "reference"
    assert main(["pretrain", "--out", str(reference), *PRETRAIN]) == 0
    ckpts = checkpoint.checkpoints_dir(reference)
    first, last = biases(ckpts / "step_3"), biases(ckpts / f"step_{PRETRAIN_STEPS}")
    assert set(last) == {"layers.1.ffn.router.bias_E", "mtp.block.ffn.router.bias_E"}  # the MTP block routes too
    assert last["layers.1.ffn.router.bias_E"].abs().sum() > 0 and not torch.equal(first["layers.1.ffn.router.bias_E"], last["layers.1.ffn.router.bias_E"])
    assert "pretrain/mtp_loss" in rows_by_step(reference)[1]
    results = survive_kills(["pretrain", "--out", str(tmp_path / "run"), *PRETRAIN], tmp_path / "run", reference, PRETRAIN_STEPS,
                            [signal.SIGKILL] * V3_KILLS, tmp_path)
    assert all(results), results  # same_checkpoint compares every buffer, the bias included, with torch.equal


@pytest.mark.slow  # 6 processes; the default suite covers V3 resume with the pretraining test
def test_v3_rl_killed_resumes_bit_identical_with_the_aux_free_bias(tmp_path):
    base = tmp_path / "base"
    assert main(["pretrain", "--out", str(base), *V3, "--pretrain.steps", "6"]) == 0
    reference = tmp_path / "reference"
    argv = ["--init", str(base), *RL_ARGS, "--rl.kl_coef", "0.01"]  # the model comes from --init
    assert main(["rl", "--out", str(reference), *argv]) == 0
    start = biases(checkpoint.checkpoints_dir(base) / "step_6")
    end = biases(checkpoint.checkpoints_dir(reference) / f"step_{RL_STEPS}")
    assert not torch.equal(start["layers.1.ffn.router.bias_E"], end["layers.1.ffn.router.bias_E"])  # RL moved the bias
    results = survive_kills(["rl", "--out", str(tmp_path / "run"), *argv], tmp_path / "run", reference, RL_STEPS,
                            [signal.SIGKILL] * KILL_POINTS, tmp_path)
    assert all(results), results
