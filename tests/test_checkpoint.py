"""Checkpoints: exact resume, tied weights, RNG, retention, and surviving damage and full disks."""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from r1lab import checkpoint
from r1lab.checkpoint import CheckpointError, CheckpointWarning


class Tiny(nn.Module):
    """Embedding tied to the output head, dropout (consumes torch RNG) and a buffer like an MoE
    routing bias that the training step moves outside autograd."""

    def __init__(self, vocab: int = 11, dim: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.body = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(0.1))
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("bias", torch.zeros(vocab))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(x))) + self.bias  # (B, T, V)


def make(seed: int = 0, dim: int = 8) -> tuple[Tiny, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = Tiny(dim=dim)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


def train_step(model: Tiny, opt: torch.optim.Optimizer, data_rng: torch.Generator) -> None:
    # Every RNG a recipe touches: a private data generator, global torch (dropout, noise),
    # numpy and Python random.
    x = torch.randint(0, 11, (4, 5), generator=data_rng)  # (B, T)
    noise = torch.randn(()) * 1e-3 + float(np.random.rand()) * 1e-3 + random.random() * 1e-3
    loss = nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten()) + noise
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        model.bias += 1e-3 * torch.sign(model.bias.mean() - model.bias - 1e-4)


def seed_all(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed + 1)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_after_save_is_bit_identical_to_uninterrupted(tmp_path: Path) -> None:
    model, opt = make()
    data_rng = seed_all(1)
    for _ in range(6):
        train_step(model, opt, data_rng)
    expected_model, expected_opt = model.state_dict(), opt.state_dict()

    model, opt = make()
    data_rng = seed_all(1)
    for step in range(1, 4):
        train_step(model, opt, data_rng)
    checkpoint.save(tmp_path, 3, model, opt, state={"data_pos": 3}, generators={"data": data_rng})
    # Disturb everything the checkpoint must put back.
    for _ in range(3):
        train_step(model, opt, data_rng)

    model, opt = make(seed=99)
    data_rng = seed_all(123)
    ckpt = checkpoint.load_latest(tmp_path)
    assert ckpt is not None and ckpt.step == 3 and ckpt.state == {"data_pos": 3}
    checkpoint.apply(model, ckpt, opt)
    checkpoint.restore_rng(ckpt.rng, generators={"data": data_rng})
    for _ in range(3):
        train_step(model, opt, data_rng)
    assert_same(model.state_dict(), expected_model)
    for i, s in expected_opt["state"].items():
        assert_same(opt.state_dict()["state"][i], s)


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    sys.path[:0] = [{tests!r}, {root!r}]
    import torch
    torch.set_num_threads(1)
    from test_checkpoint import make, seed_all, train_step
    from r1lab import checkpoint
    model, opt = make()
    data_rng = seed_all(1)
    for step in range(1, 7):
        train_step(model, opt, data_rng)
        if step % 2 == 0:
            checkpoint.save({run!r}, step, model, opt, generators={{"data": data_rng}}, keep=2)
        if step == 5:
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_sigkilled_run_resumes_bit_identical(tmp_path: Path) -> None:
    run = tmp_path / "run"
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), root=str(Path(__file__).parents[1]),
                               run=str(run))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert checkpoint.latest_step(run) == 4

    model, opt = make(seed=5)
    data_rng = torch.Generator()
    ckpt = checkpoint.load_latest(run)
    checkpoint.apply(model, ckpt, opt)
    checkpoint.restore_rng(ckpt.rng, {"data": data_rng})
    for _ in range(5, 9):
        train_step(model, opt, data_rng)

    ref, ref_opt = make()
    ref_rng = seed_all(1)
    for _ in range(8):
        train_step(ref, ref_opt, ref_rng)
    assert_same(model.state_dict(), ref.state_dict())


def test_tied_weights_saved_once_and_stay_tied(tmp_path: Path) -> None:
    model, opt = make()
    path = checkpoint.save(tmp_path, 1, model, opt)
    # Stored once: the file holds one (11, 8) float32 matrix for both names, not two.
    nbytes = (path / "model.safetensors").stat().st_size
    assert nbytes < 11 * 8 * 4 * 2 + 8 * 8 * 4 + 8 * 4 + 11 * 4 + 1024

    fresh, _ = make(seed=7)
    ckpt = checkpoint.load(path)
    assert ckpt.model_state["head.weight"] is ckpt.model_state["embed.weight"]
    checkpoint.apply(fresh, ckpt)
    assert fresh.head.weight is fresh.embed.weight
    assert_same(fresh.state_dict(), model.state_dict())


def test_optimizer_file_loads_with_weights_only(tmp_path: Path) -> None:
    model, opt = make()
    train_step(model, opt, seed_all(0))
    path = checkpoint.save(tmp_path, 1, model, opt)
    state = torch.load(path / "optimizer.pt", weights_only=True)
    assert state["state"][0]["exp_avg"].shape == model.embed.weight.shape


def test_extra_models_and_scheduler_state_round_trip(tmp_path: Path) -> None:
    model, opt = make()
    ref, _ = make(seed=3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        opt.step()
        sched.step()
    checkpoint.save(tmp_path, 3, model, opt, state={"scheduler": sched.state_dict()},
                    extra_models={"ref_model": ref})
    ckpt = checkpoint.load_latest(tmp_path)
    new_ref, _ = make(seed=4)
    new_model, new_opt = make(seed=4)
    checkpoint.apply(new_model, ckpt, new_opt, extra_models={"ref_model": new_ref})
    assert_same(new_ref.state_dict(), ref.state_dict())
    new_sched = torch.optim.lr_scheduler.StepLR(new_opt, step_size=2, gamma=0.5)
    new_sched.load_state_dict(ckpt.state["scheduler"])
    assert new_sched.get_last_lr() == sched.get_last_lr()


def test_rng_capture_restore_replays_every_generator() -> None:
    g = torch.Generator().manual_seed(3)
    r = random.Random(4)
    npg = np.random.default_rng(5)
    gens = {"torch": g, "py": r, "np": npg}
    saved = json.loads(json.dumps(checkpoint.capture_rng(gens)))  # must survive JSON

    def draw() -> tuple:
        return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(),
                np.random.randn(), torch.rand(3).tolist(), torch.rand(2, generator=g).tolist(),
                r.random(), npg.random())

    first = draw()
    checkpoint.restore_rng(saved, gens)
    assert draw() == first


def test_restore_rng_names_missing_generator() -> None:
    saved = checkpoint.capture_rng({})
    with pytest.raises(CheckpointError, match="'data'"):
        checkpoint.restore_rng(saved, {"data": torch.Generator()})


def test_keep_last_n(tmp_path: Path) -> None:
    model, opt = make()
    for step in range(1, 6):
        checkpoint.save(tmp_path, step * 10, model, opt, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_40", "step_50"]
    assert checkpoint.latest_step(tmp_path) == 50


def test_keep_never_removes_the_checkpoint_just_written(tmp_path: Path) -> None:
    # Resumed from step 10 after a later step_20 was abandoned: saving step 15 with keep=1
    # must not delete step 15 just because a higher step exists.
    model, opt = make()
    checkpoint.save(tmp_path, 20, model, opt)
    path = checkpoint.save(tmp_path, 15, model, opt, keep=1)
    assert path.is_dir()


def test_resaving_a_step_replaces_it(tmp_path: Path) -> None:
    model, opt = make()
    checkpoint.save(tmp_path, 5, model, opt, state={"v": 1})
    checkpoint.save(tmp_path, 5, model, opt, state={"v": 2})
    assert checkpoint.load_latest(tmp_path).state == {"v": 2}
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_5"]


def test_truncated_model_falls_back_with_warning_naming_file(tmp_path: Path) -> None:
    model, opt = make()
    checkpoint.save(tmp_path, 1, model, opt, state={"at": 1})
    bad = checkpoint.save(tmp_path, 2, model, opt, state={"at": 2}) / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.warns(CheckpointWarning, match=str(bad)):
        ckpt = checkpoint.load_latest(tmp_path)
    assert ckpt.step == 1 and ckpt.state == {"at": 1}
    with pytest.raises(CheckpointError, match="truncated") as err:
        checkpoint.load(bad.parent)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_bit_flip_and_missing_state_json_are_detected(tmp_path: Path) -> None:
    model, opt = make()
    checkpoint.save(tmp_path, 1, model, opt)
    p2 = checkpoint.save(tmp_path, 2, model, opt)
    p3 = checkpoint.save(tmp_path, 3, model, opt)
    data = bytearray((p3 / "optimizer.pt").read_bytes())
    data[-20] ^= 1
    (p3 / "optimizer.pt").write_bytes(bytes(data))
    (p2 / "state.json").unlink()
    with pytest.warns(CheckpointWarning) as rec:
        ckpt = checkpoint.load_latest(tmp_path)
    assert ckpt.step == 1
    msgs = [str(w.message) for w in rec]
    assert any(str(p3 / "optimizer.pt") in m and "sha256" in m for m in msgs)
    assert any(str(p2) in m and "state.json" in m for m in msgs)


def test_leftover_tmp_folder_is_ignored_and_cleaned(tmp_path: Path) -> None:
    model, opt = make()
    checkpoint.save(tmp_path, 1, model, opt)
    # A save killed mid-write by a process that no longer exists (pid far above pid_max).
    tmp = tmp_path / "checkpoints" / "step_2.tmp-99999999"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"partial")
    with pytest.warns(CheckpointWarning, match="step_2.tmp-99999999"):
        assert checkpoint.load_latest(tmp_path).step == 1
    assert checkpoint.latest_step(tmp_path) == 1
    checkpoint.save(tmp_path, 3, model, opt)
    assert not tmp.exists()


def test_full_disk_keeps_previous_and_raises_one_line(tmp_path: Path, monkeypatch) -> None:
    model, opt = make()
    good = checkpoint.save(tmp_path, 1, model, opt, keep=1)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)  # model.safetensors is written, optimizer.pt is not
    with pytest.raises(CheckpointError) as err:
        checkpoint.save(tmp_path, 2, model, opt, keep=1)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "checkpoints" / "step_2") in msg
    assert "No space left on device" in msg
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_1"]
    monkeypatch.undo()
    assert checkpoint.load(good).step == 1


def test_full_disk_in_safetensors_is_a_checkpoint_error(tmp_path: Path, monkeypatch) -> None:
    model, _ = make()

    def full_disk(*args, **kwargs):
        raise checkpoint.safetensors.SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint.safetensors.torch, "save_file", full_disk)
    with pytest.raises(CheckpointError, match="No space left"):
        checkpoint.save(tmp_path, 1, model)
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_shape_mismatch_is_one_line_error(tmp_path: Path) -> None:
    model, _ = make(dim=8)
    path = checkpoint.save(tmp_path, 1, model)
    other, _ = make(dim=4)
    with pytest.raises(CheckpointError) as err:
        checkpoint.apply(other, checkpoint.load(path))
    assert str(err.value) == (
        f"checkpoint {path / 'model.safetensors'} does not fit the model: embed.weight has shape "
        "(11, 8) in the checkpoint and (11, 4) in the model"
    )


def test_missing_keys_are_one_line_error(tmp_path: Path) -> None:
    path = checkpoint.save(tmp_path, 1, nn.Linear(3, 3))
    with pytest.raises(CheckpointError, match=r"does not fit the model: missing .*unexpected") as err:
        checkpoint.apply(nn.Sequential(nn.Linear(3, 3)), checkpoint.load(path))
    assert "\n" not in str(err.value)


def test_optimizer_mismatch_is_checkpoint_error(tmp_path: Path) -> None:
    model, opt = make()
    path = checkpoint.save(tmp_path, 1, model, opt)
    other = torch.optim.AdamW([nn.Parameter(torch.zeros(2))])
    with pytest.raises(CheckpointError, match="does not fit the optimizer"):
        checkpoint.apply(model, checkpoint.load(path), other)


def test_no_checkpoints_means_none(tmp_path: Path) -> None:
    assert checkpoint.load_latest(tmp_path) is None
    assert checkpoint.latest_step(tmp_path) is None
