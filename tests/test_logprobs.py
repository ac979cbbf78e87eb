"""Chunked log-probs and NLL equal the full (tokens, V) computation, values and gradients."""

import pytest
import torch

from r1lab.logprobs import chunked_nll, token_logprobs
from r1lab.sft import masked_nll


@pytest.mark.parametrize("chunk,temperature", [(1, 1.0), (7, 0.7), (64, 1.3), (1000, 1.0)])
def test_chunked_token_logprobs_match_a_naive_loop_in_value_and_gradient(chunk, temperature):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 11, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 8, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 50, (3, 11), generator=g)
    upstream = torch.randn(3, 11, generator=g, dtype=torch.float64)
    # Naive reference: one token at a time, softmax written out.
    ref = torch.stack([torch.stack([
        (h[b, i] @ w.T / temperature)[t[b, i]] - torch.log(torch.exp(h[b, i] @ w.T / temperature).sum())
        for i in range(11)]) for b in range(3)])
    got = token_logprobs(h, w, t, temperature, chunk)
    assert torch.allclose(got.double(), ref, atol=1e-6)
    gh_ref, gw_ref = torch.autograd.grad((ref * upstream).sum(), (h, w))
    gh, gw = torch.autograd.grad((got.double() * upstream).sum(), (h, w))
    assert torch.allclose(gh, gh_ref, atol=1e-5) and torch.allclose(gw, gw_ref, atol=1e-5)


def test_chunked_nll_equals_masked_nll_of_full_logits():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 9, 16, generator=g, requires_grad=True)
    w = torch.randn(40, 16, generator=g, requires_grad=True)
    t = torch.randint(0, 40, (2, 9), generator=g)
    mask = torch.rand(2, 9, generator=g) > 0.3
    full = masked_nll(h @ w.T, t, mask)
    chunked = chunked_nll(h, w, t, mask, chunk=5)
    assert torch.allclose(full, chunked, atol=1e-5)
    g_full = torch.autograd.grad(full, (h, w))
    g_chunk = torch.autograd.grad(chunked, (h, w))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_full, g_chunk))


def test_policy_logprobs_in_chunks_equal_the_full_pass_with_tied_and_untied_heads():
    from r1lab.config import ModelConfig
    from r1lab.model.transformer import Transformer
    from r1lab.rollout import policy_logprobs

    for tie in (True, False):
        torch.manual_seed(0)
        model = Transformer(ModelConfig(ffn="dense", d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=32, tie_embeddings=tie, init_std=0.3), 37)
        tokens = torch.randint(0, 37, (3, 10))
        mask = torch.ones(3, 10, dtype=torch.bool)
        mask[0, :4] = False  # left padding
        full, _ = policy_logprobs(model, tokens, mask, 0.8)
        g_full = torch.autograd.grad(full.sum(), list(model.parameters()))
        chunked, _ = policy_logprobs(model, tokens, mask, 0.8, chunk=4)
        g_chunk = torch.autograd.grad(chunked.sum(), list(model.parameters()))
        assert torch.allclose(full, chunked, atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_full, g_chunk))
