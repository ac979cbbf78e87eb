"""DeepSeek-V3 routing and balancing: sigmoid router, group-limited routing, aux-free bias."""

import pytest
import torch
import torch.nn.functional as F

from r1lab.model import moe as moe_lib
from r1lab.model.moe import MoE, bias_update, route, sequence_balance_loss, expert_balance_loss


def v3_moe(**kw) -> MoE:
    torch.manual_seed(0)
    args = dict(d_model=16, n_routed=8, n_shared=1, top_k=3, d_expert=8, aux_loss_coef=0.0, router="sigmoid",
                n_group=4, topk_group=2, routed_scaling_factor=2.5, bias_update_speed=0.01)
    args.update(kw)
    m = MoE(**args)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return m


def naive_v3(m: MoE, x_BTD: torch.Tensor) -> torch.Tensor:
    """Per-token reference written from the paper's equations, one expert at a time."""
    out = torch.zeros_like(x_BTD)
    r = m.router
    w1, w3, w2 = m.experts.w1_EDH, m.experts.w3_EDH, m.experts.w2_EHD
    E, per = r.weight.shape[0], r.weight.shape[0] // r.n_group
    for b in range(x_BTD.shape[0]):
        for t in range(x_BTD.shape[1]):
            x = x_BTD[b, t]
            s = (r.weight.float() @ x.float()).sigmoid()
            c = s + r.bias_E
            group_scores = [sorted(c[g * per:(g + 1) * per].tolist())[-2:] for g in range(r.n_group)]
            keep = sorted(range(r.n_group), key=lambda g: -sum(group_scores[g]))[: r.topk_group]
            eligible = [e for e in range(E) if e // per in keep]
            chosen = sorted(eligible, key=lambda e: -c[e].item())[: r.top_k]
            total = sum(s[e] for e in chosen)
            for e in chosen:
                out[b, t] = out[b, t] + r.routed_scaling_factor * s[e] / total * ((F.silu(x @ w1[e]) * (x @ w3[e])) @ w2[e])
            out[b, t] = out[b, t] + m.shared(x)
    return out


@pytest.mark.parametrize("dispatch", ["grouped_mm", "split"])
def test_sigmoid_group_limited_dispatch_matches_naive_loop_forward_and_backward(dispatch):
    m = v3_moe()
    m.experts.dispatch = dispatch
    m.router.bias_E.copy_(torch.linspace(-0.2, 0.2, 8))
    x = torch.randn(3, 5, 16, requires_grad=True)
    y, _ = m(x)
    y_ref = naive_v3(m, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    params = [p for p in m.parameters()]
    grads = torch.autograd.grad(y, [x, *params], g)
    grads_ref = torch.autograd.grad(y_ref, [x, *params], g)
    for (name, _), a, b in zip([("x", None), *m.named_parameters()], grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"gradient of {name}")


def test_bias_changes_the_choice_but_never_the_weights():
    torch.manual_seed(0)
    logits = torch.randn(50, 8)
    plain = route(logits, 2, "sigmoid")
    bias = torch.zeros(8)
    bias[5] = 10.0  # expert 5 wins every selection
    biased = route(logits, 2, "sigmoid", bias_E=bias)
    assert (biased.experts_NK == 5).any(dim=1).all()
    assert not torch.equal(plain.experts_NK, biased.experts_NK)
    s = logits.sigmoid()
    chosen = s.gather(1, biased.experts_NK)
    torch.testing.assert_close(biased.weights_NK, chosen / chosen.sum(1, keepdim=True))  # unbiased affinities
    torch.testing.assert_close(biased.probs_NE, plain.probs_NE)


def test_group_limited_routing_only_picks_from_the_best_groups():
    # 4 groups of 2; group score = sum of its top-2 affinities. Group 3 has the single best expert
    # but group 1's pair is better, and topk_group 1 keeps only group 1.
    logits = torch.tensor([[0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 3.0, -5.0]])
    out = route(logits, 2, "sigmoid", n_group=4, topk_group=1)
    assert sorted(out.experts_NK[0].tolist()) == [2, 3]
    free = route(logits, 2, "sigmoid")
    assert 6 in free.experts_NK[0].tolist()


def test_routed_scaling_and_norm_topk_prob():
    logits = torch.randn(7, 6)
    raw = route(logits, 2, "softmax", norm_topk_prob=False)
    torch.testing.assert_close(raw.weights_NK, logits.softmax(-1).topk(2).values)  # DeepSeekMoE eq. 5
    scaled = route(logits, 2, "softmax", routed_scaling_factor=2.5)
    torch.testing.assert_close(scaled.weights_NK.sum(-1), torch.full((7,), 2.5))


def test_bias_update_sign_and_centring():
    bias = torch.tensor([0.0, 0.0, 0.0, 0.0])
    load = torch.tensor([10.0, 2.0, 4.0, 4.0])  # mean 5: expert 0 over, 1-3 under
    new = bias_update(bias, load, gamma=0.1)
    # raw step (-0.1, +0.1, +0.1, +0.1), mean 0.05, centred:
    torch.testing.assert_close(new, torch.tensor([-0.15, 0.05, 0.05, 0.05]))
    assert new.sum().abs() < 1e-7


def test_bias_moves_once_per_optimizer_step_from_micro_batches_summed_training_passes_only():
    m = v3_moe(n_group=1, topk_group=1).train()
    x1, x2 = torch.randn(2, 6, 16), torch.randn(3, 4, 16)
    with torch.no_grad():  # a no-grad pass (sampling, reference model) counts for nothing
        m(x1)
    m.eval()
    m(x1)  # neither does an evaluation pass
    m.train()
    assert m.load_acc_E.sum() == 0
    _, s1 = m(x1)
    _, s2 = m(x2, torch.tensor([[True] * 4, [True] * 4, [True, True, False, False]]))
    total = s1.load_E + s2.load_E
    assert total.sum() == (12 + 10) * 3  # padding slots left out
    before = m.router.bias_E.clone()
    load_LE = moe_lib.after_optimizer_step(m, step=1)
    torch.testing.assert_close(load_LE[0], total)
    torch.testing.assert_close(m.router.bias_E, bias_update(before, total, 0.01))
    assert m.load_acc_E.sum() == 0
    # a skipped (non-finite) step drops its load and leaves the bias alone
    m(x1)
    after = m.router.bias_E.clone()
    moe_lib.after_optimizer_step(m, step=2, stepped=False)
    assert torch.equal(m.router.bias_E, after) and m.load_acc_E.sum() == 0
    # gamma falls to 0 after bias_update_stop
    m.bias_update_stop = 2
    m(x1)
    moe_lib.after_optimizer_step(m, step=3)
    assert torch.equal(m.router.bias_E, after)


def test_balance_losses_reach_their_minimum_when_even_and_skip_padding():
    N, E, K = 8, 4, 2
    probs = torch.full((N, E), 1 / E)
    experts = torch.tensor([[0, 1], [2, 3]] * 4)
    assert expert_balance_loss(probs, experts, torch.ones(N)).item() == pytest.approx(1.0)
    seq = sequence_balance_loss(probs.view(2, 4, E), experts.view(2, 4, K), torch.ones(2, 4))
    assert seq.item() == pytest.approx(1.0)
    # a sequence of which only one token is real and routed to experts 0, 1: f = (2, 2, 0, 0)
    real = torch.tensor([[True, False, False, False], [True, True, True, True]])
    seq2 = sequence_balance_loss(probs.view(2, 4, E), experts.view(2, 4, K), real)
    assert seq2.item() == pytest.approx((1.0 + 1.0) / 2)  # sum_i f_i P_i = (2 + 2) / 4 = 1 each
    skewed = torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 4)
    lopsided = sequence_balance_loss(skewed[None], torch.tensor([[[0, 1]] * 4]), torch.ones(1, 4))
    assert lopsided.item() > 1.0


@pytest.mark.parametrize("grouped", [True, False])
def test_gate_before_down_projection_is_the_same_function(grouped):
    """MoE.gate_before_down weights the experts' hidden activations instead of their outputs:
    equal at float error, forward and backward (router included), on both kernels."""
    torch.manual_seed(0)
    m = MoE(64, 16, 1, 4, 32, 0.0, router="sigmoid", n_group=4, topk_group=2)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    m.experts.use_grouped_mm = grouped and m.experts.use_grouped_mm
    x = torch.randn(2, 50, 64, requires_grad=True)
    outs = []
    for flag in (False, True):
        m.gate_before_down = flag
        y, _ = m(x)
        outs.append((y, torch.autograd.grad((y * torch.linspace(-1, 1, 64)).sum(), [x, *m.parameters()])))
    (a, ga), (b, gb) = outs
    assert (a - b).abs().max() < 1e-5
    assert all((u - v).abs().max() < 1e-5 for u, v in zip(ga, gb))
    assert next(m.parameters()) is m.router.weight and ga[1].abs().sum() > 0  # the router learns through the gate


def test_dispatch_rule_takes_grouped_mm_where_it_runs_unless_forced():
    assert moe_lib.use_grouped_mm(True) and moe_lib.use_grouped_mm(True, "grouped_mm")
    assert not moe_lib.use_grouped_mm(True, "split") and not moe_lib.use_grouped_mm(False) and not moe_lib.use_grouped_mm(False, "grouped_mm")


@pytest.mark.parametrize("design", ["zero", "v3-tiny"])
@pytest.mark.parametrize("tokens", [40, 1100])  # 10-20 and 275-550 slots per expert
def test_grouped_mm_and_split_are_bit_identical_at_the_presets_widths(tokens, design):
    """On CPU grouped_mm is a loop of the same mm calls as split + unbind. At the widths of
    `r1lab zero`'s model (D = F = 128, 8 experts, top-2) and v3-tiny's (D = 128, F = 64, 16
    experts, top-4) the outputs and every gradient (input, router, experts, shared expert) are
    equal bit for bit: where grouped_mm does not run, split gives those models the same numbers.
    (At toy widths, D <= 32, MKL rounds the two differently: the naive-loop tests bound both.)"""
    if not moe_lib.grouped_mm_works("cpu", torch.float32):
        pytest.skip("F.grouped_mm does not run on this CPU build")
    if design == "zero":
        torch.manual_seed(0)
        m = MoE(128, 8, 1, 2, 128, aux_loss_coef=0.01)
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.1)
    else:
        m = v3_moe(d_model=128, n_routed=16, n_shared=2, top_k=4, d_expert=64)
        m.router.bias_E.copy_(torch.linspace(-0.3, 0.3, 16))  # uneven load, some experts nearly idle
    x = torch.randn(1, tokens, 128)
    runs = {}
    for dispatch in ("grouped_mm", "split"):
        m.experts.dispatch = dispatch
        xx = x.clone().requires_grad_(True)
        y, _ = m(xx)
        runs[dispatch] = [y, *torch.autograd.grad((y * torch.linspace(-1, 1, 128)).sum(), [xx, *m.parameters()])]
    assert all(torch.equal(a, b) for a, b in zip(runs["grouped_mm"], runs["split"]))


@pytest.mark.slow  # 16 s with two threads on the busy shared 2-core machine
def test_input_gradient_is_reproducible_with_two_threads():
    """The gather's backward sums each token's K slot gradients: with indexing (index_put_ with
    accumulate) that order varied between runs with two threads at this size (4096 tokens,
    top-6, D = 256); index_select's backward does not."""
    torch.set_num_threads(2)  # the autouse fixture restores one thread
    m = v3_moe(d_model=256, n_routed=64, top_k=6, d_expert=8, n_group=8, topk_group=4)
    x = torch.randn(1, 4096, 256)
    grads = []
    for _ in range(3):
        xx = x.clone().requires_grad_(True)
        y, _ = m(xx)
        grads.append(torch.autograd.grad((y * torch.linspace(-1, 1, 256)).sum(), xx)[0])
    assert all(torch.equal(grads[0], g) for g in grads[1:])
