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
