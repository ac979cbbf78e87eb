"""GRPO on images (``r1lab rl --init <janus run> --task scenes:*``, r1lab.recipes.janus_rl): the
log-probs it trains on equal the stage losses' own, the rewards on hand-made images, the command
end to end with its bad input in one line, and kill -9 resume bit-identical."""

from __future__ import annotations

import json
import random
import signal

import numpy as np
import pytest
import torch

from test_janus import ARGS, mixed_rows, tiny_model
from test_resume import KILL_SEED, interrupt, rows_by_step, same_checkpoint
from r1lab import checkpoint
from r1lab.cli import main
from r1lab.config import RLConfig
from r1lab.janus import digits, scenes
from r1lab.janus import sequence as S
from r1lab.recipes import janus, janus_rl

RL_ARGS = ["--rl.prompts_per_step", "4", "--rl.group_size", "3", "--rl.eval_problems", "4", "--rl.eval_every", "3",
           "--threads", "1", "--tensorboard", "false", "--keep_checkpoints", "1000", "--save_every", "2"]


@pytest.fixture(scope="module")
def janus_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("janus") / "run"
    assert main(["janus", "--out", str(out), *ARGS]) == 0
    return out


def test_target_logprobs_are_the_losses_own_log_likelihoods():
    model, tok = tiny_model()
    batch = S.assemble(model, mixed_rows(tok, 6, seed=0), tok.pad_id)
    with torch.no_grad():
        ref = S.losses(model, batch)
        logp, mask = S.target_logprobs(model, batch)
        t, c = batch.text_tgt_BT >= 0, batch.code_tgt_BT >= 0
        assert torch.equal(mask, t | c)
        assert torch.allclose(-logp[t].mean(), ref.text, atol=1e-5)
        assert torch.allclose(-logp[c].mean(), ref.code, atol=1e-5)
        hot, _ = S.target_logprobs(model, batch, text_temperature=2.0, code_temperature=0.5)
        assert not torch.allclose(hot[t], logp[t]) and not torch.allclose(hot[c], logp[c])
        assert (logp[~mask] == 0).all()


def test_rewards_of_hand_made_answers_and_images():
    r = RLConfig(partial_weight=0.5)
    tok = tiny_model()[1]
    scene = scenes.Scene((scenes.Obj(0, "red", "square", "big"), scenes.Obj(3, "blue", "circle", "small")))
    item = janus.Item(scenes.render(scene), scene.caption(), scenes.generation_prompt(scene), "how many red?", "1", "scene", scene=scene)
    rew, correct = janus_rl.rewards_und(tok, ["<think></think><answer>1</answer>", "<think></think><answer>2</answer>", "1"], [item] * 3, r)
    assert correct == [1.0, 0.0, 0.0] and rew == [r.format_weight + r.correct_weight, r.format_weight, 0.0]
    wrong = scenes.render(scenes.Scene((scenes.Obj(0, "red", "square", "big"), scenes.Obj(3, "green", "circle", "small"))))
    px, label = digits.sample(random.Random(1), "test")
    d_item = janus.Item(px, "", digits.generation_prompt(label), digits.QUESTION, str(label), "digit", label=label)
    assert digits.classifier().predict(px[None])[0] == label
    rew, verdict, cells = janus_rl.rewards_gen(np.stack([item.pixels, wrong, np.zeros_like(wrong), px]), [item, item, item, d_item], r)
    assert verdict == [1.0, 0.0, 0.0, 1.0] and cells == [1.0, 0.75, 0.5, 1.0]
    assert rew == [1.5, 0.375, 0.25, 1.5]


def test_cell_agreement_counts_unreadable_cells_as_wrong():
    scene = scenes.Scene((scenes.Obj(1, "yellow", "triangle", "big"),))
    img = scenes.render(scene)
    assert scenes.cell_agreement(img, scene) == 1.0 and scenes.detect(img) == scene
    img[:, 0:3, 0:16] = 1.0  # a white bar top left: no template matches it
    assert scenes.read_cells(img)[0] == scenes.UNREADABLE and scenes.detect(img) is None
    assert scenes.cell_agreement(img, scene) == 0.75


def test_rl_on_images_end_to_end_and_bad_input_is_one_line(janus_run, tmp_path, capsys):
    out = tmp_path / "rl"
    assert main(["rl", "--init", str(janus_run), "--task", "scenes:both", "--out", str(out), "--rl.steps", "3", *RL_ARGS]) == 0
    result = json.loads((out / "eval" / "janus_rl.json").read_text())
    assert result["mode"] == "both" and set(result["before"]) == set(result["after"]) and "und_pass@1" in result["after"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {"rl/und_correct", "rl/gen_correct", "rl/gen_cells", "rl/reward_mean"} <= set(rows[0])
    assert "eval/und_pass@1" in rows[2]
    # The policy moved, and only where a group's rewards differed would it move; the weights differ from the start's.
    start = checkpoint.load(janus_rl.start_checkpoint(janus_run)).model_state
    end = checkpoint.load(checkpoint.checkpoints_dir(out) / "step_3").model_state
    assert any(not torch.equal(start[k], end[k]) for k in start) == any(r["rl/zero_var_group_frac"] < 1 for r in rows)
    capsys.readouterr()
    for argv, culprit in ((["--task", "scenes:paint"], "scenes:paint"), (["--task", "chain"], "scenes:und"),
                          (["--task", "scenes:und", "--rl.dynamic_sampling", "true"], "rl.dynamic_sampling")):
        assert main(["rl", "--init", str(janus_run), "--out", str(tmp_path / "bad"), "--rl.steps", "1", *argv]) == 2
        err = capsys.readouterr().err
        assert culprit in err and len(err.strip().splitlines()) == 1
    assert main(["rl", "--init", str(tmp_path), "--task", "scenes:gen", "--out", str(tmp_path / "bad2")]) == 2
    assert "janus" in capsys.readouterr().err
    assert main(["pretrain", "--task", "scenes:und", "--out", str(tmp_path / "bad3"), "--pretrain.steps", "1"]) == 2


@pytest.mark.slow  # ~15 s idle, ~45 s on the loaded machine: two RL runs of 8 steps and a resume
def test_rl_on_images_killed_resumes_bit_identical(janus_run, tmp_path):
    argv = ["rl", "--init", str(janus_run), "--task", "scenes:both", "--rl.steps", "8", "--rl.kl_coef", "0.05", *RL_ARGS]
    ref = tmp_path / "ref"
    assert main([*argv, "--out", str(ref)]) == 0
    run, rng = tmp_path / "run", random.Random(KILL_SEED)
    cmd = [*argv, "--out", str(run)]
    assert interrupt(cmd, run, rng.randint(1, 6), signal.SIGKILL, rng, tmp_path / "a.txt").returncode == -9
    assert main([*cmd, "--resume"]) == 0
    assert rows_by_step(run) == rows_by_step(ref)
    for step in (2, 4, 6, 8):
        assert same_checkpoint(checkpoint.checkpoints_dir(run) / f"step_{step}", checkpoint.checkpoints_dir(ref) / f"step_{step}")
    assert json.loads((run / "eval" / "janus_rl.json").read_text()) == json.loads((ref / "eval" / "janus_rl.json").read_text())
