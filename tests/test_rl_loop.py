"""The RL loop's plumbing: gradient accumulation that adds up, every algorithm runnable from the
CLI with its metrics, dynamic sampling, the reference model only when KL is on."""


import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, overrides
from r1lab.cli import main
from r1lab.config import ModelConfig, RLConfig, SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.recipes.rl import REWARDS, backward_minibatch, loss_settings
from r1lab.rollout import sample
from r1lab.tokenizer import CharTokenizer
from r1lab.tracking import read_metrics

ARGS = overrides(TINY)


def _batch_of_32():
    tok = CharTokenizer.build()
    torch.manual_seed(0)
    cfg = ModelConfig(ffn="dense", d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64, max_seq_len=64, init_std=0.1)
    model = Transformer(cfg, tok.vocab_size)
    with torch.no_grad():
        model.embed.weight[tok.eos_id] *= 4  # completions of many lengths
    prompts = [tok.prompt_ids(q) for q in ("1+2", "3*4-5", "6", "7+8*9", "10-1", "2*2*2", "5+5", "9-3*2")]
    ro = sample(model, prompts, SampleConfig(max_new_tokens=20), tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0), repeats=4)
    adv = torch.randn(32, generator=torch.Generator().manual_seed(1))
    return model, ro, adv


def _grads(model, ro, adv, r):
    model.zero_grad(set_to_none=True)
    stats = dict.fromkeys(("clip_low", "clip_high", "kl", "ratio", "entropy", "tokens"), 0.0)
    old = ro.logprobs - 0.05 * torch.rand(ro.logprobs.shape, generator=torch.Generator().manual_seed(2))  # ratios != 1: clipping active
    loss, _ = backward_minibatch(model, ro, torch.arange(32), ro.completion_mask, old, adv, None, None, r, loss_settings(r), stats)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
@pytest.mark.parametrize("loss_type", ["ppo", "gspo"])
def test_four_micro_batches_of_8_equal_one_batch_of_32(aggregation, loss_type):
    model, ro, adv = _batch_of_32()
    whole = RLConfig(aggregation=aggregation, loss_type=loss_type, entropy_coef=0.01)
    parts = RLConfig(aggregation=aggregation, loss_type=loss_type, entropy_coef=0.01, micro_batch_size=8)
    loss_a, a = _grads(model, ro, adv, whole)
    loss_b, b = _grads(model, ro, adv, parts)
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-5, abs=1e-7)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in a.values())


def test_overlong_mask_removes_truncated_rows_from_the_gradient():
    model, ro, adv = _batch_of_32()
    r = RLConfig()
    stats = dict.fromkeys(("clip_low", "clip_high", "kl", "ratio", "entropy", "tokens"), 0.0)
    none = ro.completion_mask & False
    model.zero_grad(set_to_none=True)
    backward_minibatch(model, ro, torch.arange(32), none, ro.logprobs, adv, None, None, r, loss_settings(r), stats)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())


def test_extra_rewards_are_plain_functions():
    from r1lab.tasks.base import Example

    ex = Example("1+1", "2")
    assert REWARDS["think_present"]("<think>1+1=2</think><answer>2</answer>", ex) == 1.0
    assert REWARDS["think_present"]("<think></think><answer>2</answer>", ex) == 0.0
    assert REWARDS["chars"]("x" * 50, ex) == 0.5


EVERYTHING = ["--rl.loss_type", "ppo", "--rl.clip_eps_high", "0.28", "--rl.dual_clip", "3", "--rl.aggregation", "token_mean",
              "--rl.updates_per_batch", "2", "--rl.mini_batches", "2", "--rl.micro_batch_size", "4", "--rl.tis_cap", "2",
              "--rl.kl_coef", "0.01", "--rl.kl_estimator", "k2", "--rl.entropy_coef", "0.001", "--rl.dynamic_sampling",
              "--rl.max_sample_rounds", "3", "--rl.overlong", "soft", "--rl.extra_rewards", '["think_present", "chars"]',
              "--rl.extra_reward_weights", "[0.1, -0.01]", "--rl.format_weight", "1.0"]


def test_every_switch_at_once_runs_logs_and_learns(base_run, tmp_path):
    out = tmp_path / "all"
    assert main(["rl", "--init", str(base_run), "--out", str(out), *ARGS, *EVERYTHING]) == 0
    rows = read_metrics(out / "metrics.jsonl")
    for key in ("reward/task_mean", "reward/format_mean", "reward/correct_mean", "reward/overlong_mean", "reward/think_present_mean", "reward/chars_std",
                "train/clip_low_frac", "train/clip_high_frac", "train/kl", "rollout/entropy", "train/entropy", "rollout/max_len",
                "rollout/truncated_frac", "rollout/tokens_per_s", "train/tokens_per_s", "rollout/logp_mismatch_max",
                "rollout/groups_drawn_per_kept", "time/prefill_s", "time/decode_s", "time/forward_backward_s", "time/optimizer_s"):
        assert key in rows[0], key
    for row in rows:
        assert row["train/optimizer_steps"] in (2 * min(2, row["rollout/groups_kept"]), 0) or row["rollout/groups_kept"] == 0
        assert row["rollout/groups_drawn_per_kept"] >= 1.0 and row["rollout/sample_rounds"] <= 3
        if row["rollout/groups_kept"] == 2:  # a full batch holds only groups with a learning signal
            assert row["rollout/zero_var_group_frac"] == 0.0
        assert row["rollout/logp_mismatch_max"] < 1e-3
        parts = sum(row[f"reward/{k}_mean"] for k in ("task", "overlong", "think_present", "chars"))
        assert row["rollout/reward_mean"] == pytest.approx(parts, abs=1e-5)
    ckpt = out / "checkpoints" / "step_3"
    assert (ckpt / "ref_model.safetensors").is_file()  # KL on: the frozen reference is state
    before = load_file(base_run / "checkpoints" / "step_6" / "model.safetensors")
    after = load_file(ckpt / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("preset", ["grpo", "dr_grpo", "dapo", "gspo", "cispo", "sapo", "rloo", "reinforce_pp"])
def test_each_preset_runs_one_step(base_run, tmp_path, preset):
    out = tmp_path / preset
    # The preset first, then the tiny shapes (later layers win).
    assert main(["rl", "--config", preset, "--init", str(base_run), "--out", str(out), *ARGS, "--rl.steps", "1", "--rl.eval_every", "0"]) == 0
    has_ref = (out / "checkpoints" / "step_1" / "ref_model.safetensors").exists()
    assert has_ref == (preset == "grpo")  # the reference model exists only where KL is on (DeepSeekMath beta 0.04)
    assert read_metrics(out / "metrics.jsonl")[0]["rollout/logp_mismatch_max"] < 1e-3


@pytest.mark.parametrize("argv, key", [
    (["--rl.advantage", "dr_grpo"], "rl.scale_rewards"),
    (["--rl.dual_clip", "0.5"], "rl.dual_clip"),
    (["--rl.mini_batches", "0"], "rl.mini_batches"),
    (["--rl.kl_in_reward"], "rl.kl_in_reward"),
    (["--rl.extra_rewards", '["chars"]'], "rl.extra_reward_weights"),
    (["--rl.loss_type", "trpo"], "rl.loss_type"),
])
def test_impossible_settings_fail_in_one_line(base_run, tmp_path, capsys, argv, key):
    assert main(["rl", "--init", str(base_run), "--out", str(tmp_path / "x"), *ARGS, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]


def test_unknown_extra_reward_is_named(base_run, tmp_path, capsys):
    assert main(["rl", "--init", str(base_run), "--out", str(tmp_path / "x"), *ARGS, "--rl.extra_rewards", '["nope"]', "--rl.extra_reward_weights", "[1]"]) == 2
    assert "nope" in capsys.readouterr().err


def test_resume_with_mini_batches_and_dynamic_sampling_reaches_the_same_weights(base_run, tmp_path):
    import shutil

    extra = ["--rl.dynamic_sampling", "--rl.mini_batches", "2", "--rl.updates_per_batch", "2", "--rl.format_weight", "1.0", "--save_every", "1"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["rl", "--init", str(base_run), "--out", str(full), *ARGS, *extra]) == 0
    assert main(["rl", "--init", str(base_run), "--out", str(part), *ARGS, *extra, "--rl.steps", "2"]) == 0
    shutil.rmtree(part / "checkpoints" / "step_2")  # as if killed after saving step 1
    assert main(["rl", "--init", str(base_run), "--out", str(part), *ARGS, *extra, "--resume"]) == 0
    a = load_file(full / "checkpoints" / "step_3" / "model.safetensors")
    b = load_file(part / "checkpoints" / "step_3" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
