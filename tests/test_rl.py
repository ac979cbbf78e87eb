"""GRPO maths against hand-computed values and a plain-loop reference."""

import math

import pytest
import torch

from r1lab.rl import group_advantages, policy_loss


def loop_advantages(rewards, G, scale):
    out = []
    for g in range(0, len(rewards), G):
        group = rewards[g : g + G]
        mean = sum(group) / G
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (G - 1))
        out += [(r - mean) / (std + 1e-4) if scale else r - mean for r in group]
    return out


@pytest.mark.parametrize("scale", [True, False])
def test_group_advantages_match_a_loop(scale):
    torch.manual_seed(0)
    rewards = torch.randint(0, 3, (24,)).float() / 2
    got = group_advantages(rewards, 6, scale=scale)
    torch.testing.assert_close(got, torch.tensor(loop_advantages(rewards.tolist(), 6, scale)))


def test_group_advantages_hand_computed():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 2.0, 2.0, 2.0]), 3)
    # group 1: mean 1/3, std sqrt(1/3); group 2: constant, no signal.
    s = math.sqrt(1 / 3) + 1e-4
    expected = [(2 / 3) / s, (-1 / 3) / s, (-1 / 3) / s, 0.0, 0.0, 0.0]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)


def test_policy_loss_on_policy_is_minus_mean_advantage_and_gradient_is_reinforce():
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([1.0, -2.0])
    out = policy_loss(logp, logp.detach(), adv, mask, clip_eps=0.2)
    # ratio 1 everywhere: loss = -(1 + 1 - 2) / 3 tokens
    assert out.loss.item() == pytest.approx(0.0)
    assert out.clip_frac == 0.0 and out.ratio_mean == pytest.approx(1.0)
    out.loss.backward()
    # d loss / d logp = -adv / n_tokens on masked tokens, 0 elsewhere
    assert logp.grad.flatten().tolist() == pytest.approx([-1 / 3, -1 / 3, 0.0, 2 / 3, 0.0, 0.0])


def test_policy_loss_clips_ratio_in_the_direction_of_the_advantage():
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.5, 0.5]])).requires_grad_()  # ratios 1.5 and 0.5
    mask = torch.ones(1, 2, dtype=torch.bool)
    pos = policy_loss(logp, old, torch.tensor([1.0]), mask, clip_eps=0.2)
    # A > 0: min(1.5, 1.2) = 1.2 (clipped, no gradient); min(0.5, 0.8) = 0.5 (unclipped)
    assert pos.loss.item() == pytest.approx(-(1.2 + 0.5) / 2)
    assert pos.clip_frac == pytest.approx(0.5)
    pos.loss.backward()
    assert logp.grad[0, 0] == 0.0 and logp.grad[0, 1] == pytest.approx(-0.5 / 2)
    neg = policy_loss(logp.detach(), old, torch.tensor([-1.0]), mask, clip_eps=0.2)
    # A < 0: min(-1.5, -1.2) = -1.5; min(-0.5, -0.8) = -0.8 (clipped)
    assert neg.loss.item() == pytest.approx((1.5 + 0.8) / 2)


def test_k3_kl_is_zero_at_the_reference_and_matches_its_formula():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    same = policy_loss(logp, logp, torch.zeros(1), mask, 0.2, ref_logp_NT=logp, kl_coef=0.1)
    assert same.kl == 0.0 and same.loss.item() == 0.0
    out = policy_loss(logp, logp, torch.zeros(1), mask, 0.2, ref_logp_NT=ref, kl_coef=0.1)
    k3 = [math.exp(d) - d - 1 for d in (-0.5, 1.0)]
    assert out.kl == pytest.approx(sum(k3) / 2)
    assert out.loss.item() == pytest.approx(0.1 * sum(k3) / 2)


# ---------------------------------------------------------------------------------------------
# The GRPO family against plain-loop references

from r1lab import rl  # noqa: E402


def loop_family(rewards, G, estimator, scale, eps=1e-4):
    """Advantages written out one completion at a time, straight from the papers."""
    def std(xs):
        m = sum(xs) / len(xs)
        return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))

    batch_mean = sum(rewards) / len(rewards)
    out = []
    for i, r in enumerate(rewards):
        g = i // G
        group = rewards[g * G:(g + 1) * G]
        if estimator in ("grpo", "dr_grpo"):
            base = sum(group) / G
        elif estimator == "rloo":
            others = group[:i - g * G] + group[i - g * G + 1:]
            base = sum(others) / (G - 1)
        else:
            base = batch_mean
        a = r - base
        if scale == "group":
            a /= std(group) + eps
        elif scale == "batch":
            a /= std(rewards) + eps
        out.append(a)
    return out


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo", "reinforce_pp"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_every_advantage_estimator_matches_its_loop(estimator, scale):
    torch.manual_seed(1)
    rewards = torch.rand(20) * (torch.rand(20) > 0.3)
    got = rl.advantages(rewards, 5, estimator, scale)
    torch.testing.assert_close(got, torch.tensor(loop_family(rewards.tolist(), 5, estimator, scale)))


def test_rloo_hand_computed_and_reinforce_pp_has_no_group_baseline():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    # RLOO, group [1, 0, 0]: 1 - 0 = 1; 0 - 1/2; 0 - 1/2. Constant group: 0.
    assert rl.advantages(r, 3, "rloo", "none").tolist() == pytest.approx([1.0, -0.5, -0.5, 0, 0, 0])
    # REINFORCE++: batch mean 2/3, so an all-correct group still gets a positive advantage.
    assert rl.advantages(r, 3, "reinforce_pp", "none").tolist() == pytest.approx([1 / 3, -2 / 3, -2 / 3, 1 / 3, 1 / 3, 1 / 3])
    assert rl.zero_variance_groups(r, 3).tolist() == [False, True]
    # The first API still gives GRPO's numbers.
    torch.testing.assert_close(rl.group_advantages(r, 3), rl.advantages(r, 3, "grpo", "group"))


def loop_token_loss(logp, old, adv, s):
    """One token's loss, each surrogate written from its paper (values only)."""
    r = math.exp(logp - old)
    lo, hi = 1 - s.eps_low, 1 + s.eps_high
    if s.loss_type == "ppo":
        loss = -min(r * adv, min(max(r, lo), hi) * adv)
        if s.dual_clip > 0 and adv < 0:
            loss = min(loss, -s.dual_clip * adv)
        return loss
    if s.loss_type == "cispo":
        return -min(max(r, lo), hi) * adv * logp
    if s.loss_type == "sapo":
        tau = s.sapo_tau_pos if adv > 0 else s.sapo_tau_neg
        return -(4 / tau) / (1 + math.exp(-tau * (r - 1))) * adv
    raise AssertionError


@pytest.mark.parametrize("settings", [
    rl.LossSettings("ppo", 0.2, 0.28),
    rl.LossSettings("ppo", 0.2, 0.28, dual_clip=3.0),
    rl.LossSettings("cispo", 1.0, 4.0),
    rl.LossSettings("sapo", 0.2, 0.2, sapo_tau_pos=1.0, sapo_tau_neg=1.05),
])
def test_token_losses_match_the_loop(settings):
    torch.manual_seed(2)
    old = -torch.rand(6, 5) * 2
    logp = old + torch.randn(6, 5) * 0.8  # ratios from ~0.1 to ~10: every clip region is hit
    adv = torch.tensor([1.5, -1.0, 0.5, -2.0, 0.0, 1.0])
    mask = torch.ones(6, 5, dtype=torch.bool)
    got = rl.token_losses(logp, old, adv, mask, settings).per_token_NT
    want = [[loop_token_loss(logp[i, t].item(), old[i, t].item(), adv[i].item(), settings) for t in range(5)] for i in range(6)]
    torch.testing.assert_close(got, torch.tensor(want))


def test_clip_higher_is_asymmetric_and_fractions_are_split():
    old = torch.zeros(2, 2)
    logp = torch.log(torch.tensor([[1.25, 1.3], [0.75, 0.85]]))
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2, dtype=torch.bool)
    out = rl.policy_loss(logp, old, adv, mask, 0.2, settings=rl.LossSettings("ppo", eps_low=0.2, eps_high=0.28))
    # A > 0: 1.25 is inside (1.28), 1.3 clipped high; A < 0: 0.75 clipped low (< 0.8), 0.85 inside.
    assert (out.clip_high_frac, out.clip_low_frac, out.clip_frac) == (0.25, 0.25, 0.5)
    assert out.loss.item() == pytest.approx(-(1.25 + 1.28 - 0.8 - 0.85) / 4)


def test_dual_clip_caps_the_loss_of_a_huge_ratio_with_negative_advantage():
    logp = torch.log(torch.tensor([[10.0]])).requires_grad_()
    plain = rl.policy_loss(logp, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1, dtype=torch.bool), 0.2)
    dual = rl.policy_loss(logp, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1, dtype=torch.bool), 0.2,
                          settings=rl.LossSettings("ppo", 0.2, 0.2, dual_clip=3.0))
    assert plain.loss.item() == pytest.approx(10.0) and dual.loss.item() == pytest.approx(3.0)
    dual.loss.backward()
    assert logp.grad.item() == 0.0


def test_gspo_uses_one_length_normalised_ratio_per_sequence():
    old = torch.zeros(2, 3)
    logp = torch.tensor([[0.3, 0.2, 0.4], [0.2, 0.0, 9.0]]).requires_grad_()
    mask = torch.tensor([[True, True, True], [True, True, False]])
    s = rl.LossSettings("gspo", 0.2, 0.2, aggregation="seq_mean_token_mean")
    tl = rl.token_losses(logp, old, torch.tensor([1.0, -1.0]), mask, s)
    s0, s1 = math.exp(0.3), math.exp(0.1)  # masked 9.0 is ignored
    assert tl.ratio_NT[0].tolist() == pytest.approx([s0] * 3) and tl.ratio_NT[1, :2].tolist() == pytest.approx([s1] * 2)
    out = rl.policy_loss(logp, old, torch.tensor([1.0, -1.0]), mask, 0.2, settings=s)
    # Sequence 0: min(s0, 1.2) = 1.2 (clipped high), sequence 1: -(-s1) = s1 in range.
    assert out.loss.item() == pytest.approx((-1.2 + s1) / 2)
    out.loss.backward()
    # Sequence-level gradient: d/d logp_t of s1 / 2 is s1 / 2 / |y| for each real token.
    assert logp.grad[1].tolist() == pytest.approx([s1 / 4, s1 / 4, 0.0])
    assert logp.grad[0].abs().sum() == 0.0  # clipped sequence: no gradient


def test_cispo_keeps_the_gradient_of_clipped_tokens():
    logp = torch.log(torch.tensor([[2.0]])).requires_grad_()
    out = rl.policy_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1, dtype=torch.bool), 0.2,
                         settings=rl.LossSettings("cispo", 0.2, 0.28))
    out.loss.backward()
    assert logp.grad.item() == pytest.approx(-1.28)  # PPO would give 0 here


def test_sapo_gate_has_the_plain_gradient_on_policy():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    out = rl.policy_loss(logp, logp.detach(), torch.tensor([2.0]), torch.ones(1, 2, dtype=torch.bool), 0.2,
                         settings=rl.LossSettings("sapo"))
    out.loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-1.0, -1.0])  # d/dr 4/tau sigmoid(tau (r-1)) = 1 at r = 1


def loop_aggregate(per_token, mask, mode, norm_len):
    seqs = []
    for row, m in zip(per_token.tolist(), mask.tolist()):
        vals = [v for v, k in zip(row, m) if k]
        seqs.append(vals)
    if mode == "token_mean":
        return sum(sum(v) for v in seqs) / sum(len(v) for v in seqs)
    if mode == "seq_mean_token_mean":
        return sum(sum(v) / len(v) for v in seqs) / len(seqs)
    return sum(sum(v) / norm_len for v in seqs) / len(seqs)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_aggregations_match_the_loop_and_micro_batches_add_up(mode):
    torch.manual_seed(3)
    per_token = torch.randn(32, 7)
    lengths = torch.randint(1, 8, (32,))
    mask = torch.arange(7)[None] < lengths[:, None]
    whole = rl.aggregate(per_token, mask, mode, float(mask.sum()), 32.0, norm_len=7)
    assert whole.item() == pytest.approx(loop_aggregate(per_token, mask, mode, 7), rel=1e-5)
    parts = sum(rl.aggregate(per_token[i:i + 8], mask[i:i + 8], mode, float(mask.sum()), 32.0, norm_len=7) for i in range(0, 32, 8))
    assert parts.item() == pytest.approx(whole.item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_estimators_match_their_formulas(kind):
    logp, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -1.0, -0.5])
    d = (logp - ref).tolist()
    want = {"k1": d, "k2": [x * x / 2 for x in d], "k3": [math.exp(-x) + x - 1 for x in d]}[kind]
    assert rl.kl_estimate(logp, ref, kind).tolist() == pytest.approx(want)


def test_kl_estimators_are_unbiased_or_not_as_documented():
    # Samples from p; KL(p || q) exactly known for two categoricals.
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    true_kl = float((p * (p / q).log()).sum())
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, ref = p.log()[x], q.log()[x]
    assert rl.kl_estimate(logp, ref, "k1").mean().item() == pytest.approx(true_kl, abs=3e-3)
    assert rl.kl_estimate(logp, ref, "k3").mean().item() == pytest.approx(true_kl, abs=3e-3)
    assert (rl.kl_estimate(logp, ref, "k3") >= 0).all()


def test_entropy_bonus_lowers_the_loss_and_importance_weights_scale_it():
    logp = torch.tensor([[-1.0, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    ent = torch.tensor([[0.5, 1.5]])
    base = rl.policy_loss(logp, logp, torch.tensor([1.0]), mask, 0.2)
    bonus = rl.policy_loss(logp, logp, torch.tensor([1.0]), mask, 0.2, entropy_NT=ent, entropy_coef=0.1)
    assert bonus.entropy == pytest.approx(1.0) and bonus.loss.item() == pytest.approx(base.loss.item() - 0.1)
    weighted = rl.policy_loss(logp, logp, torch.tensor([1.0]), mask, 0.2, is_weight_NT=torch.tensor([[0.5, 1.0]]))
    assert weighted.loss.item() == pytest.approx(-(0.5 + 1.0) / 2)


def test_entropy_from_logits_uniform_and_peaked():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    assert rl.entropy_from_logits(logits)[0].tolist() == pytest.approx([math.log(4), 0.0], abs=1e-6)


def test_soft_overlong_penalty_is_dapo_eq_13():
    lengths = torch.tensor([10, 16, 18, 20, 25])
    # max 20, cache 4: free up to 16, then -(l - 16) / 4, -1 beyond 20.
    assert rl.soft_overlong_penalty(lengths, 20, 4).tolist() == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])
