"""Rejection sampling keeps only verified, well-formed, distinct samples (capped per prompt),
writes an SFT dataset that `r1lab sft` reads, and statistics per prompt and per difficulty."""

from __future__ import annotations

import json
import random

import torch

from conftest import TINY, overrides
from r1lab import rollout
from r1lab.cli import main
from r1lab.config import build
from r1lab.recipes import rejection_sample as rs
from r1lab.recipes import sft as sft_recipe
from r1lab.tasks import get_task
from r1lab.tasks.base import Example
from r1lab.tokenizer import CharTokenizer

ARGS = overrides(TINY)


def test_accept_keeps_only_verified_well_formed_distinct_samples():
    task = get_task("chain")
    ex = Example("7+5*2", "24", "7+5=12\n12*2=24")
    right = "<think>7+5=12\n12*2=24</think><answer>24</answer>"
    texts = [
        "<think>x</think><answer>25</answer>",  # wrong answer
        right,
        "<answer>24</answer>",  # right answer, wrong format
        "24",  # no template at all
        right,  # duplicate
        "<think></think><answer>24</answer>",  # right, direct
        "<think>a</think><answer>24</answer>",
    ]
    kept, n_ok = rs.accept(texts, ex, task, cap=0)
    assert n_ok == 4 and kept == [right, "<think></think><answer>24</answer>", "<think>a</think><answer>24</answer>"]
    assert rs.accept(texts, ex, task, cap=2)[0] == kept[:2]


def _fake_sampler(tok, pool_for):
    """A stand-in for rollout.sample: completion j of a prompt is pool_for(question)[j]."""

    def sample(model, prompts, cfg, eos_id, pad_id, gen, repeats=1):
        rows = []
        for p in prompts:
            question = tok.decode(p).split("User: ", 1)[1].rsplit("\nAssistant:", 1)[0]
            texts = pool_for(question)
            rows += [p + tok.encode(texts[j % len(texts)]) + [eos_id] for j in range(repeats)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id)
        comp = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, (r, p) in enumerate(zip(rows, [p for p in prompts for _ in range(repeats)])):
            ids[i, : len(r)] = torch.tensor(r)
            comp[i, len(p) : len(r)] = True
        return rollout.Rollout(ids, ids != pad_id, comp, torch.zeros(ids.shape), 0, torch.ones(len(rows), dtype=torch.bool))

    return sample


def test_run_writes_verified_dataset_and_stats(base_run, tmp_path, monkeypatch):
    task, tok = get_task("chain"), CharTokenizer.build()
    answers = {ex.question: ex.answer for ex in task.examples("train", 6, 0)}

    def pool(question):  # half right (two distinct), one duplicate, one wrong, one malformed
        a = answers[question]
        return [f"<think>1</think><answer>{a}</answer>", f"<think>2</think><answer>{a}</answer>", f"<think>1</think><answer>{a}</answer>",
                f"<think></think><answer>{int(a) + 1}</answer>", f"<answer>{a}</answer>", "??", "", f"<think>3</think><answer>{a}</answer>"]

    monkeypatch.setattr(rs.rollout, "sample", _fake_sampler(tok, pool))
    cfg = build({**TINY, "rejection": {"n_prompts": 6, "samples_per_prompt": 8, "max_per_prompt": 2, "prompts_per_batch": 4}})
    out = tmp_path / "traces.jsonl"
    stats = rs.run(cfg, out, base_run)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12 and stats["kept"] == 12  # 3 distinct right ones per prompt, capped at 2
    for r in records:
        assert task.score(r["completion"], Example(r["prompt"], answers[r["prompt"]]), rs.RewardWeights()).correct == 1.0
    assert stats["accepted"] == 6 * 4 and stats["acceptance_rate"] == 0.5 and stats["complete"]
    assert [p["acceptance_rate"] for p in stats["per_prompt"]] == [0.5] * 6
    assert stats["per_difficulty"] == {"3 ops": {"prompts": 6, "samples": 48, "accepted": 24, "kept": 12, "acceptance_rate": 0.5}}
    assert json.loads(rs.stats_path(out).read_text()) == stats
    # readable by r1lab sft
    assert sft_recipe.read_records(f"jsonl:{out}", tok)[0] == sft_recipe.Record(records[0]["prompt"], records[0]["completion"])


def test_cli_run_from_a_real_checkpoint(base_run, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert main(["rejection-sample", "--init", str(base_run), "--out", str(out), *ARGS,
                 "--rejection.n_prompts", "4", "--rejection.samples_per_prompt", "3", "--rejection.sample.max_new_tokens", "24"]) == 0
    stats = json.loads(rs.stats_path(out).read_text())
    assert stats["prompts"] == 4 and stats["samples"] == 12 and len(stats["per_prompt"]) == 4
    task = get_task("chain")
    pool = {ex.question: ex for ex in task.examples("train", 4, 0)}
    for line in out.read_text().splitlines():  # whatever the tiny model got right is verified
        r = json.loads(line)
        assert task.score(r["completion"], pool[r["prompt"]], rs.RewardWeights()).correct == 1.0
    assert "acceptance_rate" in capsys.readouterr().out


def test_cli_without_init_or_with_a_folder_is_one_line(tmp_path, capsys):
    assert main(["rejection-sample", "--out", str(tmp_path / "x.jsonl"), *ARGS]) == 2
    assert "needs --init" in capsys.readouterr().err
    assert main(["rejection-sample", "--init", str(tmp_path), "--out", str(tmp_path), *ARGS]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_difficulty_labels_of_sort():
    task = get_task("sort")
    ex = task.sample(random.Random(0), "train")
    assert task.difficulty(ex) == f"{len(ex.question.split()) - 1} items"


def test_sigterm_writes_the_prompts_done_so_far(base_run, tmp_path, monkeypatch):
    import os
    import signal

    import pytest

    from r1lab.recipes.common import RunStopped

    tok = CharTokenizer.build()
    fake = _fake_sampler(tok, lambda q: ["<think></think><answer>0</answer>"])
    calls = []

    def sample(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the stop flag notes it; the batch finishes
        return fake(*args, **kwargs)

    monkeypatch.setattr(rs.rollout, "sample", sample)
    cfg = build({**TINY, "rejection": {"n_prompts": 6, "samples_per_prompt": 2, "prompts_per_batch": 2}})
    out = tmp_path / "t.jsonl"
    with pytest.raises(RunStopped, match="after 2 of 6 prompts") as err:
        rs.run(cfg, out, base_run)
    assert err.value.exit_code == 143 and len(calls) == 1
    stats = json.loads(rs.stats_path(out).read_text())
    assert stats["complete"] is False and stats["prompts"] == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_difficulty_labels_of_a_reasoning_gym_dataset():
    from r1lab.tasks.gym import GymTask

    task = GymTask("spell_backward", size=20, test_size=5)
    ex = task.sample(random.Random(0), "train")
    assert task.difficulty(ex) == f"word_len={len(ex.answer)}"
