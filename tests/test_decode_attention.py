"""Decoding attention: the batched-matmul kernel and the shared-prompt cache of a GRPO group
against the plain paths they replace (SDPA over repeated keys, a KV cache holding every row's copy
of its prompt)."""

import pytest
import torch
import torch.nn.functional as F

from r1lab.config import ModelConfig, SampleConfig
from r1lab.model.layers import cached_attention
from r1lab.model.transformer import SharedPrefixCache, Transformer
from r1lab.rollout import left_pad, policy_logprobs, positions_from_mask, sample
from r1lab.tokenizer import CharTokenizer


@pytest.mark.parametrize("H,K,T", [(4, 4, 1), (4, 2, 1), (4, 1, 3)])
def test_cached_attention_equals_sdpa_over_repeated_keys(H, K, T):
    torch.manual_seed(0)
    B, S, d = 3, 9, 8
    q, k, v = torch.randn(B, H, T, d), torch.randn(B, K, S, d), torch.randn(B, K, S, d)
    mask = torch.rand(B, 1, T, S) > 0.4
    mask[..., -1] = True  # every query sees a key
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(H // K, 1), v.repeat_interleave(H // K, 1), attn_mask=mask)
    torch.testing.assert_close(cached_attention(q, k, v, mask), want, rtol=1e-5, atol=1e-6)
    # the cache's strided views (slots past the filled ones) give the same
    buf_k, buf_v = torch.randn(B, K, S + 5, d), torch.randn(B, K, S + 5, d)
    buf_k[:, :, :S], buf_v[:, :, :S] = k, v
    torch.testing.assert_close(cached_attention(q, buf_k[:, :, :S], buf_v[:, :, :S], mask), want, rtol=1e-5, atol=1e-6)


def tiny_model(n_kv: int) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(ffn="dense", d_model=32, n_layers=2, n_heads=4, n_kv_heads=n_kv, d_ff=48, max_seq_len=64, init_std=0.1)
    return Transformer(cfg, vocab_size=50).eval()


@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_shared_prefix_cache_decodes_as_a_cache_of_repeated_prompts(n_kv):
    """G rows per prompt, rows dropped midway, a 2-token step: the same logits as the plain cache."""
    model = tiny_model(n_kv)
    G, steps = 3, 6
    ids, mask = left_pad([[1, 5, 6, 7, 8, 9], [1, 10, 11]], pad_id=0)
    B, P = ids.shape
    cont = torch.randint(3, 50, (B * G, steps + 1))
    with torch.no_grad():
        plain = model.new_cache(B, P + steps + 2)
        model(ids, positions_from_mask(mask), mask, plain)
        plain.keep_rows(torch.arange(B).repeat_interleave(G))
        shared_prefill = model.new_cache(B, P)
        model(ids, positions_from_mask(mask), mask, shared_prefill)
        shared = SharedPrefixCache(shared_prefill, G, steps + 2)
        rows = torch.arange(B * G)
        key_mask, pos = mask.repeat_interleave(G, 0), mask.sum(-1).repeat_interleave(G)
        t = 0
        while t < steps:
            if t == 2:  # rows 1 and 4 end: both caches keep the others
                keep = torch.tensor([0, 2, 3, 5])
                plain.keep_rows(keep), shared.keep_rows(keep)
                rows, key_mask, pos = rows[keep], key_mask[keep], pos[keep]
            T = 2 if t == 4 else 1  # a speculative verification's few queries
            key_mask = torch.cat([key_mask, torch.ones(len(rows), T, dtype=torch.bool)], 1)
            if t == 3:
                key_mask[0, -1] = False  # an own slot later queries must not see (as a finished row's pad)
            positions = pos[:, None] + torch.arange(T)
            tok = cont[rows, t : t + T]
            want = model(tok, positions, key_mask, plain).logits_BTV
            got = model(tok, positions, key_mask, shared).logits_BTV
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            pos, t = pos + T, t + T
        assert shared.length == plain.length == P + steps


def test_per_row_budgets_without_groups_prefill_again_when_the_cache_is_full():
    """repeats=1 keeps the plain cache: a long prompt's rows end first, the short ones' cache is rebuilt."""
    tok = CharTokenizer.build()
    torch.manual_seed(0)
    cfg = ModelConfig(ffn="dense", d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64, max_seq_len=40, init_std=0.1)
    model = Transformer(cfg, tok.vocab_size).eval()
    short, long = tok.prompt_ids("1"), tok.prompt_ids("12345678901234")
    ro = sample(model, [short] * 4 + [long] * 4, SampleConfig(max_new_tokens=30), -1, tok.pad_id, torch.Generator().manual_seed(0))
    assert ro.completion_lengths.tolist() == [min(30, 40 - len(short))] * 4 + [40 - len(long)] * 4  # no eos: every row uses its budget
    logp, _ = policy_logprobs(model, ro.tokens, ro.attention_mask, 1.0)
    torch.testing.assert_close(logp[ro.completion_mask], ro.logprobs[ro.completion_mask], rtol=0, atol=1e-4)
    grouped = sample(model, [short, long], SampleConfig(max_new_tokens=30), -1, tok.pad_id, torch.Generator().manual_seed(0), repeats=4)
    assert torch.equal(grouped.tokens, ro.tokens)  # the shared-prompt cache draws the same tokens


def test_fused_decoding_gives_the_same_floats_and_leaves_training_and_lora_alone():
    from r1lab.lora import LoRALinear

    torch.manual_seed(0)
    cfg = ModelConfig(ffn="dense", d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, max_seq_len=64, init_std=0.1, qkv_bias=True)
    model = Transformer(cfg, vocab_size=50).eval()
    with torch.no_grad():
        for b in model.layers:
            b.attn.wk.bias.normal_()  # Qwen2's biases, non-zero
    ids, mask = left_pad([[1, 5, 6, 7, 8, 9], [1, 10, 11]], pad_id=0)
    pos = positions_from_mask(mask)
    with torch.no_grad():
        want = model(ids, pos, mask).logits_BTV
        with model.fused_decoding():
            assert model.layers[0].attn.fused_qkv is not None
            got = model(ids, pos, mask).logits_BTV
    assert torch.equal(got, want)  # the same floats, not merely close
    assert model.layers[0].attn.fused_qkv is None  # released on exit
    with model.fused_decoding():  # a pass with gradients uses the parameters themselves
        model(ids, pos, mask).logits_BTV.sum().backward()
    assert model.layers[0].attn.wq.weight.grad is not None
    model.layers[0].attn.wq = LoRALinear(model.layers[0].attn.wq, rank=2, alpha=4.0)
    with model.fused_decoding():
        assert model.layers[0].attn.fused_qkv is None and model.layers[1].attn.fused_qkv is not None  # an adapter is not fused away
