"""The sampler's speed-ups (prefill once per group, finished rows leave the batch, per-row budgets)
against the plain sampler they replaced: the same tokens from the same seed."""

import torch

from r1lab.config import ModelConfig, SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.rollout import plain_sample, policy_logprobs, sample
from r1lab.tokenizer import CharTokenizer


def eos_happy_model(ffn, max_seq_len=96):
    tok = CharTokenizer.build()
    torch.manual_seed(0)
    cfg = ModelConfig(ffn=ffn, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64, n_routed_experts=4, top_k=2,
                      d_expert=16, max_seq_len=max_seq_len, init_std=0.1)
    model = Transformer(cfg, tok.vocab_size).eval()
    with torch.no_grad():  # make eos likely so that rows end at different steps
        model.embed.weight[tok.eos_id] *= 4
    return model, tok


def test_grouped_compacting_sampler_draws_the_plain_samplers_tokens():
    for ffn in ("dense", "moe"):
        model, tok = eos_happy_model(ffn)
        questions = ["1+2", "71+2*3-4", "9*9"]
        G = 5
        cfg = SampleConfig(max_new_tokens=30)
        want = plain_sample(model, [tok.prompt_ids(q) for q in questions for _ in range(G)], cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(3))
        ro = sample(model, [tok.prompt_ids(q) for q in questions], cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(3), repeats=G)
        assert torch.equal(ro.tokens, want[:, : ro.tokens.shape[1]])
        assert (want[:, ro.tokens.shape[1]:] == tok.pad_id).all()
        assert ro.finished.any() and (~ro.finished).any() or ro.finished.all()
        logp, _ = policy_logprobs(model, ro.tokens, ro.attention_mask, 1.0)
        torch.testing.assert_close(logp[ro.completion_mask], ro.logprobs[ro.completion_mask], rtol=0, atol=1e-4)
        assert (ro.entropy[ro.completion_mask] > 0).all() and (ro.entropy[~ro.completion_mask] == 0).all()


def test_each_row_has_its_own_budget_whatever_the_longest_prompt():
    model, tok = eos_happy_model("dense", max_seq_len=40)
    short, long = tok.prompt_ids("1"), tok.prompt_ids("12345678901234")
    assert len(long) - len(short) == 13
    ro = sample(model, [short, long], SampleConfig(max_new_tokens=30), tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0), repeats=8)
    lengths = ro.completion_lengths.tolist()
    # The short prompt may use min(30, 40 - len) tokens; the long one only what is left after it.
    budgets = [min(30, 40 - len(short))] * 8 + [40 - len(long)] * 8
    for n, b, done in zip(lengths, budgets, ro.finished.tolist()):
        assert n <= b and (done or n == b)
    assert max(lengths[:8]) > budgets[-1]  # the first sampler capped every row at the long prompt's budget
    assert ro.tokens.shape[1] == 40  # rows were shifted into the model's width
    logp, _ = policy_logprobs(model, ro.tokens, ro.attention_mask, 1.0)
    torch.testing.assert_close(logp[ro.completion_mask], ro.logprobs[ro.completion_mask], rtol=0, atol=1e-4)
