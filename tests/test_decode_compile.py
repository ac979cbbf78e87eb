"""``sample.compile``: the decode step over a fixed-width cache (``decode_step``, ``StaticKVCache``)
against the eager sampler, its fallback when compiling fails, and (slow) the compiled step itself."""

import shutil

import pytest
import torch

from r1lab import rollout
from r1lab.config import ModelConfig, SampleConfig
from r1lab.model.transformer import StaticKVCache, Transformer, decode_step
from r1lab.rollout import left_pad, positions_from_mask, sample


def tiny_model(n_kv: int = 2, ffn: str = "dense") -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(ffn=ffn, d_model=32, n_layers=2, n_heads=4, n_kv_heads=n_kv, d_ff=48, max_seq_len=64, init_std=0.1)
    return Transformer(cfg, vocab_size=50).eval()


PROMPTS = [[1, 5, 6, 7, 8, 9], [1, 10, 11], [1, 12, 13, 14]]


@pytest.fixture
def eager_compile(monkeypatch):
    """``torch.compile`` as the identity: the static path runs ``decode_step`` eagerly."""
    monkeypatch.setattr(rollout, "_compiled_step", None)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)


def test_decode_step_gives_the_cached_forward_logits():
    """Written at a tensor slot, attending over all slots under the mask: the same logits as the
    model's forward over a growing cache (eager, so up to the masked slots' exact zeros)."""
    model = tiny_model()
    ids, mask = left_pad(PROMPTS, pad_id=0)
    B, P = ids.shape
    nxt = torch.randint(3, 50, (B, 4))
    with torch.no_grad():
        ref = model.new_cache(B, P + 4)
        model(ids, positions_from_mask(mask), mask, ref)
        pre = model.new_cache(B, P)
        model(ids, positions_from_mask(mask), mask, pre)
        static = StaticKVCache(pre, 16)
        key_mask, km_S = mask.clone(), torch.zeros(B, 16, dtype=torch.bool)
        km_S[:, :P] = mask
        pos = mask.sum(-1)
        for t in range(4):
            key_mask = torch.cat([key_mask, torch.ones(B, 1, dtype=torch.bool)], 1)
            want = model(nxt[:, t : t + 1], pos[:, None] + t, key_mask, ref).logits_BTV[:, -1]
            km_S[:, P + t] = True
            static.slot_1.fill_(P + t)
            got = decode_step(model, nxt[:, t], pos + t, km_S[:, None, None], static)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("repeats", [1, 3])
def test_static_path_draws_the_eager_samplers_tokens(eager_compile, repeats):
    """The static loop (all rows until all end, rows owning copies of their prompt) draws the same
    tokens as the eager sampler, eos included; log-probs and entropies to float rounding."""
    model = tiny_model()
    eos = 7
    with torch.no_grad():
        model.embed.weight[eos] *= 8  # rows end at different steps
    base = SampleConfig(temperature=1.0, max_new_tokens=12)
    want = sample(model, PROMPTS, base, eos, 0, torch.Generator().manual_seed(3), repeats=repeats)
    got = sample(model, PROMPTS, SampleConfig(temperature=1.0, max_new_tokens=12, compile=True), eos, 0,
                 torch.Generator().manual_seed(3), repeats=repeats)
    assert want.finished.any() and not want.finished.all()
    assert torch.equal(got.tokens, want.tokens) and torch.equal(got.completion_mask, want.completion_mask)
    assert torch.equal(got.attention_mask, want.attention_mask) and torch.equal(got.finished, want.finished)
    torch.testing.assert_close(got.logprobs, want.logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.entropy, want.entropy, rtol=0, atol=1e-5)


def test_moe_and_over_long_batches_decode_eagerly(monkeypatch):
    """Models the compiled step does not serve (MoE), and batches whose prompt plus budget pass
    max_seq_len, take the eager loop: torch.compile is never called."""
    monkeypatch.setattr(rollout, "_compiled_step", None)

    def refuse(fn, **kw):
        raise AssertionError("torch.compile called")

    monkeypatch.setattr(torch, "compile", refuse)
    cfg = SampleConfig(max_new_tokens=6, compile=True)
    want = sample(tiny_model(ffn="moe"), PROMPTS, SampleConfig(max_new_tokens=6), -1, 0, torch.Generator().manual_seed(0))
    got = sample(tiny_model(ffn="moe"), PROMPTS, cfg, -1, 0, torch.Generator().manual_seed(0))
    assert torch.equal(got.tokens, want.tokens)
    long_cfg = SampleConfig(max_new_tokens=62, compile=True)  # 6 + 62 > 64
    ro = sample(tiny_model(), PROMPTS, long_cfg, -1, 0, torch.Generator().manual_seed(0))
    assert int(ro.completion_lengths.max()) == 64 - 3  # the shortest prompt's budget


def test_a_failing_compiler_warns_once_and_decodes_eagerly(monkeypatch, capsys):
    monkeypatch.setattr(rollout, "_compiled_step", None)

    def broken(*args):
        raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)
    model = tiny_model()
    cfg = SampleConfig(max_new_tokens=8, compile=True)
    first = sample(model, PROMPTS, cfg, -1, 0, torch.Generator().manual_seed(1))
    second = sample(model, PROMPTS, cfg, -1, 0, torch.Generator().manual_seed(1))
    out = capsys.readouterr().out
    assert out.count("r1lab: warning: sample.compile: torch.compile failed (RuntimeError: InvalidCxxCompiler") == 1
    assert "more detail" not in out
    want = sample(model, PROMPTS, SampleConfig(max_new_tokens=8), -1, 0, torch.Generator().manual_seed(1))
    assert torch.equal(first.tokens, want.tokens) and torch.equal(second.tokens, want.tokens)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler for inductor (apt-get install build-essential)")
def test_compiled_step_draws_the_eager_tokens_and_compiles_once(monkeypatch):
    """The real torch.compile (a C++ compiler needed; tens of seconds): the same tokens as eager
    on a tiny model, log-probs to float rounding, and a second rollout of the same shape (new
    fused weights, other prompts of the same width) reuses the compiled graph."""
    torch._dynamo.reset()
    monkeypatch.setattr(rollout, "_compiled_step", None)
    model = tiny_model()
    cfg = SampleConfig(temperature=1.0, max_new_tokens=10, compile=True)
    want = sample(model, PROMPTS, SampleConfig(temperature=1.0, max_new_tokens=10), -1, 0, torch.Generator().manual_seed(2))
    got = sample(model, PROMPTS, cfg, -1, 0, torch.Generator().manual_seed(2))
    assert rollout._compiled_step is not rollout.decode_step  # it compiled, no fallback
    assert torch.equal(got.tokens, want.tokens)
    torch.testing.assert_close(got.logprobs, want.logprobs, rtol=0, atol=1e-5)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    other = [[1, 20, 21, 22, 23, 24], [1, 30], [1, 31, 32]]
    sample(model, other, cfg, -1, 0, torch.Generator().manual_seed(4))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames  # no recompilation
