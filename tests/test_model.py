"""Model behaviour: MoE dispatch against a per-token loop, KV-cache decoding against a full pass."""

import pytest
import torch
import torch.nn.functional as F

from r1lab.config import ModelConfig, SampleConfig
from r1lab.model.moe import MoE
from r1lab.model.transformer import Transformer, count_parameters
from r1lab.rollout import left_pad, policy_logprobs, positions_from_mask, sample
from r1lab.tokenizer import CharTokenizer


def naive_moe(moe: MoE, x_BTD: torch.Tensor) -> torch.Tensor:
    """Reference: route each token on its own and add its experts' weighted outputs one by one."""
    out = torch.zeros_like(x_BTD)
    w1, w3, w2 = moe.experts.w1_EDH, moe.experts.w3_EDH, moe.experts.w2_EHD
    for b in range(x_BTD.shape[0]):
        for t in range(x_BTD.shape[1]):
            x = x_BTD[b, t]
            probs = (moe.router.weight.float() @ x.float()).softmax(-1)
            top_w, top_e = probs.topk(moe.top_k)
            top_w = top_w / top_w.sum()
            for w, e in zip(top_w, top_e):
                out[b, t] = out[b, t] + w * ((F.silu(x @ w1[e]) * (x @ w3[e])) @ w2[e])
            out[b, t] = out[b, t] + moe.shared(x)
    return out


@pytest.mark.parametrize("dispatch", ["grouped_mm", "split"])
@pytest.mark.parametrize("d_expert", [8, 16])
def test_moe_dispatch_matches_naive_loop_forward_and_backward(d_expert, dispatch):
    torch.manual_seed(0)
    moe = MoE(d_model=16, n_routed=6, n_shared=1, top_k=2, d_expert=d_expert, aux_loss_coef=0.0)
    assert moe.gate_before_down == (d_expert < 16)  # the gate goes on the narrower of H and D: both paths tested
    moe.experts.dispatch = dispatch
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(3, 5, 16, requires_grad=True)
    y, _ = moe(x)
    y_ref = naive_moe(moe, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *moe.parameters()], g)
    grads_ref = torch.autograd.grad(y_ref, [x, *moe.parameters()], g)
    for (name, _), a, b in zip([("x", None), *moe.named_parameters()], grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"gradient of {name}")


def test_moe_load_counts_every_real_slot_and_balance_loss_is_positive():
    torch.manual_seed(0)
    moe = MoE(d_model=8, n_routed=4, n_shared=0, top_k=2, d_expert=4, aux_loss_coef=0.01).train()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 6, 8)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, :2] = False  # padding is routed but not counted
    _, stats = moe(x, mask)
    assert stats.load_E.sum() == 10 * 2
    assert stats.aux_loss > 0
    # A perfectly even router gives the loss's minimum, alpha * 1 (f_i = P_i = uniform).
    torch.nn.init.zeros_(moe.router.weight)
    _, even = moe(x)
    assert even.aux_loss.item() == pytest.approx(0.01, rel=1e-5)


def tiny_model(ffn: str, n_kv_heads: int = 2) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(ffn=ffn, d_model=32, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, d_ff=48, n_routed_experts=4, top_k=2, d_expert=16, max_seq_len=64, init_std=0.1)
    return Transformer(cfg, vocab_size=50).eval()


@pytest.mark.parametrize("ffn,n_kv", [("moe", 2), ("dense", 4), ("dense", 1)])
def test_kv_cache_decoding_equals_full_forward(ffn, n_kv):
    model = tiny_model(ffn, n_kv)
    prompts = [[1, 5, 6, 7, 8, 9], [1, 10, 11], [1, 12, 13, 14]]
    ids, mask = left_pad(prompts, pad_id=0)
    cont = torch.randint(3, 50, (3, 7))
    full_ids = torch.cat([ids, cont], 1)
    full_mask = torch.cat([mask, torch.ones_like(cont, dtype=torch.bool)], 1)
    with torch.no_grad():
        full = model(full_ids, positions_from_mask(full_mask), full_mask).logits_BTV
        cache = model.new_cache(3)
        steps = [model(ids, positions_from_mask(mask), mask, cache).logits_BTV[:, -1]]
        pos = mask.sum(-1)
        running = mask
        for t in range(cont.shape[1] - 1):
            running = torch.cat([running, torch.ones(3, 1, dtype=torch.bool)], 1)
            steps.append(model(cont[:, t : t + 1], (pos + t)[:, None], running, cache).logits_BTV[:, -1])
    P = ids.shape[1]
    for t, logits in enumerate(steps):
        torch.testing.assert_close(logits, full[:, P - 1 + t], rtol=1e-5, atol=1e-5)


def test_left_padding_does_not_change_a_prompts_logits():
    model = tiny_model("moe")
    alone = model(torch.tensor([[1, 10, 11]])).logits_BTV
    ids, mask = left_pad([[1, 5, 6, 7, 8], [1, 10, 11]], pad_id=0)
    padded = model(ids, positions_from_mask(mask), mask).logits_BTV
    torch.testing.assert_close(padded[1, 2:], alone[0], rtol=1e-5, atol=1e-5)


def test_sampler_logprobs_equal_trainer_logprobs_and_stop_at_eos():
    tok = CharTokenizer.build()
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, n_routed_experts=4, top_k=2, d_expert=16, max_seq_len=96, init_std=0.1)
    model = Transformer(cfg, tok.vocab_size)
    with torch.no_grad():  # make eos likely so that rows end at different steps
        model.embed.weight[tok.eos_id] *= 4
    prompts = [tok.prompt_ids("1+2"), tok.prompt_ids("71+2*3-4")] * 8
    ro = sample(model, prompts, SampleConfig(temperature=1.0, max_new_tokens=30), tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0))
    logp, _ = policy_logprobs(model, ro.tokens, ro.attention_mask, temperature=1.0)
    torch.testing.assert_close(logp[ro.completion_mask], ro.logprobs[ro.completion_mask], rtol=0, atol=1e-4)
    assert ro.finished.any() and (ro.completion_lengths < 30).any()
    for i in range(len(prompts)):
        ids = ro.completion_ids(i)
        if ro.finished[i]:
            assert ids[-1] == tok.eos_id and tok.eos_id not in ids[:-1]
        else:
            assert len(ids) == 30 and tok.eos_id not in ids
        after = ro.tokens[i, ro.prompt_len + len(ids):]
        assert (after == tok.pad_id).all()  # nothing is sampled after eos


def test_sampling_is_seeded_and_top_p_restricts_to_the_nucleus():
    model = tiny_model("dense")
    prompts = [[1, 5, 6]] * 64
    cfg = SampleConfig(temperature=1.0, top_p=1e-6, max_new_tokens=3)
    ro = sample(model, prompts, cfg, eos_id=2, pad_id=0, gen=torch.Generator().manual_seed(1))
    first = ro.tokens[:, ro.prompt_len]
    greedy = model(torch.tensor([[1, 5, 6]])).logits_BTV[0, -1].argmax()
    assert (first == greedy).all()  # a vanishing nucleus keeps only the most likely token
    a = sample(model, prompts, SampleConfig(max_new_tokens=5), 2, 0, torch.Generator().manual_seed(7))
    b = sample(model, prompts, SampleConfig(max_new_tokens=5), 2, 0, torch.Generator().manual_seed(7))
    assert torch.equal(a.tokens, b.tokens)
    assert len(set(map(tuple, a.tokens[:, -5:].tolist()))) > 1  # temperature 1 actually samples


def test_active_parameters_count_top_k_of_the_routed_experts():
    model = tiny_model("moe")
    total, active = count_parameters(model)
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    assert total - active == routed // 2  # top_k 2 of 4 experts
