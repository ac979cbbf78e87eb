"""LoRA: adapters start at the base model, only they train, disabling them gives the base back
(GRPO's KL reference), merging folds them in; a LoRA GRPO run exports as a plain model."""

import json

import pytest
import safetensors.torch
import torch

from r1lab import lora, rl
from r1lab.config import ModelConfig
from r1lab.model.transformer import Transformer
from r1lab.rollout import policy_logprobs


def _model(qkv_bias=False):
    torch.manual_seed(0)
    return Transformer(ModelConfig(ffn="dense", d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=32, init_std=0.3, qkv_bias=qkv_bias), 29)


def test_adapters_start_at_the_base_train_alone_and_disable_back_to_the_base():
    model = _model(qkv_bias=True)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = torch.randint(0, 29, (4, 9))
    mask = torch.ones(4, 9, dtype=torch.bool)
    with torch.no_grad():
        base_logp, _ = policy_logprobs(model, tokens, mask, 1.0)
    names = lora.apply(model, rank=4, alpha=8.0, targets=["wq", "wv", "w2"])
    assert sorted(names)[:2] == ["layers.0.attn.wq", "layers.0.attn.wv"] and len(names) == 6
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {f"{m}.lora_{x}" for m in names for x in "AB"}
    assert all(k in model.state_dict() for k in base_state)  # r1lab's names are kept
    with torch.no_grad():
        assert torch.equal(policy_logprobs(model, tokens, mask, 1.0)[0], base_logp)  # B starts at zero
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):  # a few GRPO updates with made-up advantages
        logp, _ = policy_logprobs(model, tokens, mask, 1.0)
        out = rl.policy_loss(logp, logp.detach(), torch.tensor([1.0, -1.0, 0.5, -0.5]), mask, 0.2)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base_state.items())  # the base never moved
    with torch.no_grad():
        tuned, _ = policy_logprobs(model, tokens, mask, 1.0)
        with lora.disabled(model):
            ref, _ = policy_logprobs(model, tokens, mask, 1.0)
    assert not torch.allclose(tuned, base_logp, atol=1e-4)
    assert torch.equal(ref, base_logp)  # the KL reference is exactly the base model
    merged = lora.merge(model)
    assert not list(lora.modules(merged)) and set(merged.state_dict()) == set(base_state)
    with torch.no_grad():
        assert torch.allclose(policy_logprobs(merged, tokens, mask, 1.0)[0], tuned, atol=1e-5)


def test_targets_that_match_nothing_are_an_error():
    with pytest.raises(ValueError, match="lora.targets"):
        lora.apply(_model(), 4, 8.0, ["q_proj"])


def test_lora_grpo_run_keeps_the_base_saves_adapters_and_exports_merged(tmp_path):
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from hf_fixtures import hf_folder
    from r1lab import cli
    from r1lab.recipes import common

    qwen = hf_folder(tmp_path / "qwen", "qwen2")
    run = tmp_path / "rl"
    argv = ["rl", "--init", f"hf:{qwen}", "--task", "countdown", "--out", str(run), "--rl.steps", "2", "--rl.prompts_per_step", "2",
            "--rl.group_size", "2", "--rl.eval_every", "0", "--rl.sample.max_new_tokens", "8", "--rl.kl_coef", "0.1",
            "--lora.rank", "4", "--lora.targets", "[wq, wk, wv, wo, w1, w2, w3]", "--threads", "1", "--tensorboard", "false"]
    assert cli.main(argv) == 0
    step = run / "checkpoints" / "step_2"
    saved = safetensors.torch.load_file(str(step / "model.safetensors"))
    assert "layers.0.attn.wq.lora_A" in saved and "ref_model" not in json.loads((step / "state.json").read_text())["extra_models"]
    original = safetensors.torch.load_file(str(qwen / "model.safetensors"))
    assert torch.equal(saved["layers.0.attn.wq.weight"], original["model.layers.0.self_attn.q_proj.weight"])
    assert cli.main(["export", str(run), str(tmp_path / "out")]) == 0
    theirs, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    merged, _ = common.load_model(run)
    ids = torch.randint(0, 320, (2, 12))
    with torch.no_grad():
        assert (theirs.eval()(ids).logits - merged(ids).logits_BTV).abs().max() < 1e-4
