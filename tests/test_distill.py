"""Distillation: the token-level KL against a naive loop, zero loss and zero gradient into an
identical copy, a vocabulary mismatch as one line, an MoE teacher into a dense student at both
levels, and kill -9 resume."""

from __future__ import annotations

import copy
import json
import math
import signal

import pytest
import torch

from conftest import TINY, overrides
from r1lab.cli import main
from r1lab.config import ModelConfig, build
from r1lab.model.transformer import Transformer
from r1lab.recipes import distill
from r1lab.sft import distill_kl
from r1lab.tracking import read_metrics

ARGS = overrides(TINY)
DENSE_STUDENT = ["--model.ffn", "dense", "--model.d_model", "16", "--model.n_heads", "2", "--model.n_kv_heads", "2", "--model.d_ff", "32"]


def naive_kl(s_BTV, t_BTV, mask_BT, direction, temperature, top_k):
    total, count = 0.0, 0
    B, T, V = s_BTV.shape
    for b in range(B):
        for t in range(T):
            if not mask_BT[b, t]:
                continue
            s = [float(x) / temperature for x in s_BTV[b, t]]
            te = [float(x) / temperature for x in t_BTV[b, t]]
            keep = sorted(range(V), key=lambda v: -te[v])[:top_k] if top_k else list(range(V))
            zs = math.log(sum(math.exp(s[v]) for v in keep))
            zt = math.log(sum(math.exp(te[v]) for v in keep))
            p = {v: te[v] - zt for v in keep}  # teacher log-probs
            q = {v: s[v] - zs for v in keep}  # student log-probs
            a, c = (p, q) if direction == "forward" else (q, p)
            total += sum(math.exp(a[v]) * (a[v] - c[v]) for v in keep)
            count += 1
    return total / count * temperature**2


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (2.0, 0), (1.0, 3), (0.5, 4)])
def test_kl_matches_a_naive_loop(direction, temperature, top_k):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 7, generator=g, dtype=torch.float64), torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    got = distill_kl(s, t, mask, direction, temperature, top_k)
    assert got.item() == pytest.approx(naive_kl(s, t, mask, direction, temperature, top_k), rel=1e-6)
    assert got.item() > 0


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("top_k", [0, 5])
def test_kl_into_an_identical_copy_is_zero_with_zero_gradient(direction, top_k):
    torch.manual_seed(0)
    teacher = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, n_routed_experts=4, top_k=2, d_expert=16, aux_loss_coef=0.0), 40)
    student = copy.deepcopy(teacher)
    ids = torch.randint(0, 40, (3, 12))
    mask = torch.rand(3, 12) > 0.3
    with torch.no_grad():
        t_logits = teacher(ids).logits_BTV
    loss = distill_kl(student(ids).logits_BTV, t_logits, mask, direction, 1.0, top_k)
    loss.backward()
    assert abs(loss.item()) < 1e-6
    for name, p in student.named_parameters():
        if p.grad is not None:
            assert p.grad.abs().max() < 1e-6, name


def test_kl_gradient_flows_to_the_student_only():
    s = torch.randn(1, 3, 5, requires_grad=True)
    t = torch.randn(1, 3, 5, requires_grad=True)
    distill_kl(s, t, torch.ones(1, 3, dtype=torch.bool)).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None


def test_vocabulary_mismatch_is_one_line(base_run, tmp_path, capsys):
    tok_file = base_run / "tokenizer.json"
    data = json.loads(tok_file.read_text())
    teacher = tmp_path / "teacher"
    import shutil

    shutil.copytree(base_run, teacher)
    vocab = data["model"]["vocab"]
    a, b = "a", "b"
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, other ids
    (teacher / "tokenizer.json").write_text(json.dumps(data))
    assert main(["distill", "--init", str(base_run), "--distill.teacher", str(teacher), "--distill.mode", "token",
                 "--out", str(tmp_path / "run"), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs one vocabulary" in err and "use distill.mode sequence" in err


def test_missing_teacher_is_one_line(tmp_path, capsys):
    assert main(["distill", "--out", str(tmp_path / "run"), *ARGS]) == 2
    assert "needs a teacher" in capsys.readouterr().err
    assert main(["distill", "--distill.teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), *ARGS]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_token_level_moe_teacher_into_fresh_dense_student(base_run, tmp_path):
    out = tmp_path / "run"
    assert main(["distill", "--distill.teacher", str(base_run), "--distill.mode", "token", "--out", str(out), *ARGS, *DENSE_STUDENT,
                 "--distill.steps", "6", "--distill.prompts_per_step", "3", "--distill.lr", "1e-2", "--distill.sample.max_new_tokens", "24"]) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert len(rows) == 6 and rows[-1]["distill/kl"] < rows[0]["distill/kl"]
    state = json.loads((out / "checkpoints" / "step_6" / "state.json").read_text())["state"]
    assert state["model_config"]["ffn"] == "dense" and state["model_config"]["d_model"] == 16


def test_sequence_level_runs_rejection_sampling_then_sft(base_run, tmp_path, monkeypatch):
    from r1lab.recipes import rejection_sample

    # The tiny teacher rarely solves a chain: accept every well-formed sample instead, so that the
    # SFT half has data (the verification itself is tested in test_rejection_sample.py).
    monkeypatch.setattr(rejection_sample, "accept", lambda texts, ex, task, cap: (list(dict.fromkeys(texts))[: cap or None], len(texts)))
    cfg = build({**TINY, "model": {**TINY["model"], "ffn": "dense"}, "rejection": {"n_prompts": 4, "samples_per_prompt": 2, "sample": {"max_new_tokens": 24}},
                 "sft": {"steps": 3}, "distill": {"teacher": str(base_run)}})
    last = distill.run(cfg, tmp_path / "run", "", base_run)
    assert last == tmp_path / "run" / "checkpoints" / "step_3"
    traces = (tmp_path / "run" / distill.TRACES_FILE).read_text().splitlines()
    assert len(traces) == 8 and "sft/loss" in read_metrics(tmp_path / "run" / "metrics.jsonl")[0]


@pytest.mark.slow  # ~50 s: five r1lab processes
def test_distill_killed_at_random_steps_resumes_bit_identical(base_run, tmp_path):
    from test_resume import KILL_POINTS, survive_kills

    steps = max(12, 4 * KILL_POINTS)
    argv = ["--distill.teacher", str(base_run), "--distill.mode", "token", "--distill.kl", "reverse", "--distill.top_k", "5", *ARGS, *DENSE_STUDENT,
            "--distill.steps", str(steps), "--distill.prompts_per_step", "2", "--distill.sample.max_new_tokens", "16",
            "--save_every", "2", "--keep_checkpoints", "1000"]
    reference = tmp_path / "reference"
    assert main(["distill", "--out", str(reference), *argv]) == 0
    results = survive_kills(["distill", "--out", str(tmp_path / "run"), *argv], tmp_path / "run", reference, steps,
                            [signal.SIGKILL] * KILL_POINTS, tmp_path)
    assert all(results), results


def test_sequence_level_resume_reuses_the_complete_traces(base_run, tmp_path, monkeypatch):
    from r1lab.recipes import rejection_sample

    monkeypatch.setattr(rejection_sample, "accept", lambda texts, ex, task, cap: (list(dict.fromkeys(texts))[: cap or None], len(texts)))
    layers = {**TINY, "model": {**TINY["model"], "ffn": "dense"}, "rejection": {"n_prompts": 4, "samples_per_prompt": 2, "sample": {"max_new_tokens": 24}}}
    distill.run(build({**layers, "sft": {"steps": 2}}), tmp_path / "run", "", base_run)
    traces = (tmp_path / "run" / distill.TRACES_FILE).read_text()

    def no_resampling(*args, **kwargs):
        raise AssertionError("a resumed run must not sample the teacher again")

    monkeypatch.setattr(rejection_sample, "run", no_resampling)
    last = distill.run(build({**layers, "sft": {"steps": 4}, "resume": True}), tmp_path / "run", "", base_run)
    assert last.name == "step_4" and (tmp_path / "run" / distill.TRACES_FILE).read_text() == traces
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4]
