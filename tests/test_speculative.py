"""MTP self-speculative decoding: greedy output equals plain greedy decoding, sampled output
follows the main model's distribution, and its log-probs are the trainer's."""

import pytest
import torch

from r1lab import speculative
from r1lab.config import ModelConfig, SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.rollout import policy_logprobs

BASE = dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, n_routed_experts=4, top_k=2, d_expert=16, max_seq_len=64,
            mtp_depth=1, kv_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8)


def model_for(attention: str, init_std: float = 0.3, vocab: int = 20) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(**BASE, attention=attention, init_std=init_std), vocab_size=vocab).eval()


def plain_greedy(model: Transformer, prompt: list[int], n: int, eos: int) -> list[int]:
    """Reference: recompute the whole sequence each step (no cache), take the argmax."""
    seq = list(prompt)
    for _ in range(n):
        t = int(model(torch.tensor([seq])).logits_BTV[0, -1].argmax())
        seq.append(t)
        if t == eos:
            break
    return seq[len(prompt):]


@pytest.mark.parametrize("attention", ["gqa", "mla"])
def test_speculative_greedy_equals_plain_greedy(attention):
    model = model_for(attention)
    prompts = [[1, 5, 6, 7], [1, 9], [1, 3, 4, 8, 10, 11]]
    ro, stats = speculative.sample(model, prompts, SampleConfig(max_new_tokens=12), eos_id=2, pad_id=0,
                                   gen=torch.Generator().manual_seed(0), greedy=True)
    for i, p in enumerate(prompts):
        assert ro.completion_ids(i) == plain_greedy(model, p, 12, eos=2), i
    assert stats.drafts > 0 and 0 <= stats.acceptance_rate <= 1
    assert stats.forward_passes < 12  # accepted drafts saved passes


def exact_pair_distribution(model: Transformer, prompt: list[int], V: int, via_mtp: bool = False) -> torch.Tensor:
    """P(first two completion tokens) under the main model, computed exactly; with ``via_mtp`` the
    second token comes from the MTP draft instead (what an always-accepting sampler would do)."""
    with torch.no_grad():
        out = model(torch.tensor([prompt]))
        p_a = out.logits_BTV[0, -1].softmax(-1)  # (V,)
        joint = torch.zeros(V, V)
        for a in range(V):
            if via_mtp:
                q = model.mtp_forward(out.hidden_BTD, torch.tensor([prompt[1:] + [a]])).logits_BTV[0, -1].softmax(-1)
            else:
                q = model(torch.tensor([prompt + [a]])).logits_BTV[0, -1].softmax(-1)
            joint[a] = p_a[a] * q
    return joint.reshape(-1)


def test_speculative_sampling_follows_the_main_models_distribution_and_logprobs_match_the_trainer():
    V = 12
    model = model_for("mla", init_std=0.6, vocab=V)
    n, cfg = 3000, SampleConfig(temperature=1.0, max_new_tokens=3)
    prompt = [1, 5, 6]
    ro, stats = speculative.sample(model, [prompt] * n, cfg, eos_id=2, pad_id=0, gen=torch.Generator().manual_seed(1))
    a, b = ro.tokens[:, ro.prompt_len], ro.tokens[:, ro.prompt_len + 1]
    finished_first = a == 2  # eos first: no second token (pad 0); count it as (eos, 0)
    hist = torch.bincount(a * V + torch.where(finished_first, 0, b), minlength=V * V).float() / n
    exact = exact_pair_distribution(model, prompt, V)
    exact_eos = exact.view(V, V)
    exact_eos[2] = torch.nn.functional.one_hot(torch.tensor(0), V) * exact_eos[2].sum()
    tv = 0.5 * (hist - exact_eos.reshape(-1)).abs().sum()
    wrong = exact_pair_distribution(model, prompt, V, via_mtp=True)
    tv_wrong = 0.5 * (wrong - exact).abs().sum()
    assert 0 < stats.acceptance_rate < 0.9
    assert tv < 0.08, f"total variation {tv:.3f} between speculative samples and the main model"
    assert tv_wrong > 0.25  # the check has power: keeping every draft would fail it
    # Sampler log-probs equal the trainer's (one full forward pass) at float error.
    model.train()
    sub = slice(0, 64)
    logp, _ = policy_logprobs(model, ro.tokens[sub], ro.attention_mask[sub], 1.0)
    m = ro.completion_mask[sub]
    torch.testing.assert_close(logp[m], ro.logprobs[sub][m], rtol=0, atol=1e-4)
