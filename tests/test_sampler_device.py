"""The sampler on the model's device (``--device``): where its tensors live and how it draws.

On the CPU the sampler draws with ``torch.multinomial`` as always (same numbers, checked against
the plain sampler in test_rollout.py). With the model on a GPU and the run's CPU generator it
draws one CPU uniform per row and inverts the row's CDF on the device (``rollout.inverse_cdf``):
that rule is checked here on the CPU; the GPU test runs only where CUDA is available (no GPU was
lent to the session that wrote it: unverified on a GPU).
"""

import pytest
import torch

from r1lab.config import ModelConfig, SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.rollout import draw_tokens, inverse_cdf, sample
from r1lab.tokenizer import CharTokenizer


def test_inverse_cdf_draws_each_token_with_its_probability_and_never_a_cut_one():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3], [0.0, 2.0, 0.0, 2.0]])  # rows need not sum to 1; zeros are top-p cuts
    u = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000  # an even grid over [0, 1)
    counts = [torch.bincount(inverse_cdf(row.expand(1000, 4), u), minlength=4).tolist() for row in probs]
    assert counts == [[100, 0, 600, 300], [0, 500, 0, 500]]
    edge = inverse_cdf(probs, torch.full((2,), 1.0 - 2**-53, dtype=torch.float64))  # the top of the range
    assert edge.tolist() == [3, 3]
    assert inverse_cdf(probs, torch.zeros(2, dtype=torch.float64)).tolist() == [0, 1]  # the first token with mass


def test_a_generator_on_the_probabilities_device_draws_with_multinomial():
    probs = torch.softmax(torch.randn(6, 11, generator=torch.Generator().manual_seed(1)), -1)
    want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(5)).squeeze(-1)
    assert torch.equal(draw_tokens(probs, torch.Generator().manual_seed(5)), want)


def _model():
    tok = CharTokenizer.build()
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64, n_routed_experts=4, top_k=2, d_expert=16, max_seq_len=64)
    return Transformer(cfg, tok.vocab_size).eval(), tok


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampling_on_a_gpu_with_the_runs_cpu_generator_is_reproducible():
    model, tok = _model()
    model.cuda()
    prompts = [tok.prompt_ids("1+2"), tok.prompt_ids("3*4-5")]
    cfg = SampleConfig(max_new_tokens=12, top_p=0.9)
    a = sample(model, prompts, cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0), repeats=3)
    b = sample(model, prompts, cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0), repeats=3)
    for t in (a.tokens, a.attention_mask, a.completion_mask, a.logprobs, a.finished, a.entropy):
        assert t.is_cuda
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)


def test_a_generator_per_prompt_makes_its_rows_independent_of_the_batch():
    """``rl.group_seeds``: a group's completions are the same whichever prompts share its batch (so
    N ranks sample what one process samples), and differ from group to group."""
    model, tok = _model()
    cfg = SampleConfig(max_new_tokens=10)
    prompts = [tok.prompt_ids("1+2"), tok.prompt_ids("3*4-5+6"), tok.prompt_ids("7")]
    gen = lambda i: torch.Generator().manual_seed(100 + i)  # noqa: E731
    both = sample(model, prompts, cfg, tok.eos_id, tok.pad_id, [gen(i) for i in range(3)], repeats=2)
    for i, p in enumerate(prompts):
        alone = sample(model, [p], cfg, tok.eos_id, tok.pad_id, [gen(i)], repeats=2)
        for j in range(2):
            assert both.completion_ids(2 * i + j) == alone.completion_ids(j)
    assert len({tuple(both.completion_ids(r)) for r in range(6)}) > 3
