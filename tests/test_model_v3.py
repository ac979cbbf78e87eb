"""The DeepSeek-V3 model options: MLA's latent cache, dense-first blocks, and sampler/trainer
agreement for every attention and router choice."""

import pytest
import torch

from r1lab import config as config_lib
from r1lab.config import ModelConfig, SampleConfig
from r1lab.model.mla import LatentCache
from r1lab.model.moe import MoE, SwiGLU
from r1lab.model.transformer import Transformer
from r1lab.rollout import left_pad, policy_logprobs, positions_from_mask, sample
from r1lab.tokenizer import CharTokenizer

SMALL = dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, n_routed_experts=8, top_k=2, d_expert=16, max_seq_len=96,
             init_std=0.1, kv_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6)
VARIANTS = {
    "gqa-softmax": {},
    "mla-softmax": {"attention": "mla"},
    "mla-qlora-sigmoid-groups": {"attention": "mla", "q_lora_rank": 16, "router": "sigmoid", "n_group": 4, "topk_group": 2,
                                 "routed_scaling_factor": 2.5, "bias_update_speed": 0.001, "first_k_dense_replace": 1},
    "gqa-sigmoid": {"router": "sigmoid", "bias_update_speed": 0.001},
}


def build(variant: str, vocab: int = 50, **kw) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**SMALL, **VARIANTS[variant], **kw}), vocab_size=vocab)
    for m in model.modules():  # a non-zero bias so that it takes part in the choice
        if isinstance(m, MoE) and m.router.bias_E is not None:
            m.router.bias_E.copy_(torch.linspace(-0.05, 0.05, m.router.bias_E.numel()))
    return model.eval()


@pytest.mark.parametrize("variant,absorb", [("mla-softmax", True), ("mla-qlora-sigmoid-groups", True), ("mla-softmax", False)])
def test_mla_cached_decoding_equals_full_forward(variant, absorb):
    model = build(variant)
    for layer in model.layers:
        layer.attn.absorb = absorb
    prompts = [[1, 5, 6, 7, 8, 9], [1, 10, 11], [1, 12, 13, 14]]
    ids, mask = left_pad(prompts, pad_id=0)
    cont = torch.randint(3, 50, (3, 7))
    full_ids = torch.cat([ids, cont], 1)
    full_mask = torch.cat([mask, torch.ones_like(cont, dtype=torch.bool)], 1)
    with torch.no_grad():
        full = model(full_ids, positions_from_mask(full_mask), full_mask).logits_BTV
        cache = model.new_cache(3)
        assert isinstance(cache, LatentCache)
        steps = [model(ids, positions_from_mask(mask), mask, cache).logits_BTV[:, -1]]
        pos, running = mask.sum(-1), mask
        for t in range(cont.shape[1] - 1):
            running = torch.cat([running, torch.ones(3, 1, dtype=torch.bool)], 1)
            steps.append(model(cont[:, t : t + 1], (pos + t)[:, None], running, cache).logits_BTV[:, -1])
    P = ids.shape[1]
    for t, logits in enumerate(steps):
        torch.testing.assert_close(logits, full[:, P - 1 + t], rtol=1e-5, atol=1e-5)


def test_mla_cache_holds_the_latent_and_rope_key_only():
    model = build("mla-softmax")
    cache = model.new_cache(2, 10)
    cfg = model.cfg
    assert cache.bytes_per_token() == cfg.n_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 4
    gqa = build("gqa-softmax").new_cache(2, 10)
    assert gqa.k.shape == (2, 2, 2, 10, 8)  # layers, batch, kv heads, length, head dim


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sampler_logprobs_equal_trainer_logprobs_for_every_attention_and_router(variant):
    tok = CharTokenizer.build()
    model = build(variant, vocab=tok.vocab_size)
    prompts = [tok.prompt_ids("1+2"), tok.prompt_ids("71+2*3-4")] * 4
    bias_before = [m.router.bias_E.clone() for m in model.modules() if isinstance(m, MoE) and m.router.bias_E is not None]
    ro = sample(model, prompts, SampleConfig(temperature=1.0, max_new_tokens=20), tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0))
    model.train()
    logp, _ = policy_logprobs(model, ro.tokens, ro.attention_mask, temperature=1.0)
    torch.testing.assert_close(logp[ro.completion_mask], ro.logprobs[ro.completion_mask], rtol=0, atol=1e-4)
    # sampling never touched the balance state
    bias_after = [m.router.bias_E for m in model.modules() if isinstance(m, MoE) and m.router.bias_E is not None]
    assert all(torch.equal(a, b) for a, b in zip(bias_before, bias_after))


def test_first_k_dense_replace_makes_the_first_blocks_dense():
    model = build("mla-qlora-sigmoid-groups", n_layers=3)
    kinds = [type(layer.ffn) for layer in model.layers]
    assert kinds == [SwiGLU, MoE, MoE]
    out = model.train()(torch.randint(0, 50, (2, 9)))
    assert out.load_LE.shape == (2, 8)


def test_v3_tiny_preset_builds_the_v3_design():
    cfg = config_lib.build(config_lib.load_yaml("v3-tiny"))
    m = cfg.model
    assert (m.attention, m.router, m.mtp_depth, m.first_k_dense_replace) == ("mla", "sigmoid", 1, 1)
    assert m.bias_update_speed == 0.001 and m.seq_aux_loss_coef == 1e-4 and m.aux_loss_coef == 0.0
    # MLA has no key/value heads: n_kv_heads (a GQA setting) does not constrain n_heads there
    assert config_lib.build(config_lib.load_yaml("v3-tiny"), {"model": {"n_heads": 2}}).model.n_heads == 2


@pytest.mark.parametrize("key,value", [("model.n_group", 3), ("model.topk_group", 9), ("model.bias_update_speed", 0.01),
                                       ("model.qk_rope_head_dim", 5), ("model.mtp_depth", 2)])
def test_bad_v3_settings_name_the_key(key, value):
    section, leaf = key.split(".")
    with pytest.raises(config_lib.ConfigError, match=key):
        config_lib.build({section: {leaf: value}})
