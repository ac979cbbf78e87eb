"""Process-reward RL (DeepSeekMath sec. 4.1.3): step rewards -> token advantages against a
hand-computed example and a naive loop, step rewards of hand-written traces mapped to the right
tokens, the CLI with the oracle and with a learned PRM, and kill -9 resume bit-identical."""

from __future__ import annotations

import math
import random
import signal

import pytest
import torch

from conftest import TINY, overrides
from r1lab import rl, rollout
from r1lab.cli import main
from r1lab.recipes.rl import step_rewards
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task
from r1lab.tasks.base import Example
from r1lab.tokenizer import CharTokenizer
from r1lab.tracking import read_metrics
from test_prm import MODEL, chain_rows, write_rows
from test_resume import rows_by_step, survive_kills


def test_process_advantages_hand_computed():
    # One group of G=2 over T=6 columns. Completion 0: steps rewarded 1 then 0, ending at columns
    # 2 and 4; completion 1: one step rewarded 1, ending at column 3. The group's step rewards
    # {1, 0, 1}: mean 2/3, unbiased std sqrt(1/3); normalised 1 -> +1/sqrt(3), 0 -> -2/sqrt(3).
    adv = rl.process_advantages([[1.0, 0.0], [1.0]], [[2, 4], [3]], group_size=2, T=6, eps=0.0)
    up, down = 1 / math.sqrt(3), -2 / math.sqrt(3)
    expected = torch.tensor([[up + down] * 3 + [down] * 2 + [0.0],  # tokens 0-2 see both steps, 3-4 the second, 5 none
                             [up] * 4 + [0.0] * 2])
    torch.testing.assert_close(adv, expected)


def naive(step_rewards, step_ends, G, T, eps):
    out = torch.zeros(len(step_rewards), T)
    for g in range(0, len(step_rewards), G):
        pool = [r for i in range(g, g + G) for r in step_rewards[i]]
        if not pool:
            continue
        mean = sum(pool) / len(pool)
        std = math.sqrt(sum((r - mean) ** 2 for r in pool) / (len(pool) - 1)) if len(pool) > 1 else 0.0
        for i in range(g, g + G):
            for t in range(T):
                out[i, t] = sum((r - mean) / (std + eps) for r, e in zip(step_rewards[i], step_ends[i]) if e >= t)
    return out


def test_process_advantages_match_a_naive_loop():
    rng = random.Random(0)
    G, T = 4, 12
    rewards, ends = [], []
    for i in range(3 * G):
        n = rng.randint(0, 4) if i >= G else 0  # the first group has no steps at all: zero advantages
        rewards.append([rng.random() for _ in range(n)])
        ends.append(sorted(rng.randrange(T) for _ in range(n)))
    adv = rl.process_advantages(rewards, ends, G, T)
    torch.testing.assert_close(adv, naive(rewards, ends, G, T, 1e-4))
    assert adv[:G].abs().sum() == 0


def test_hybrid_and_token_advantages_in_the_loss():
    proc = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, -1.0]])
    torch.testing.assert_close(rl.hybrid_advantages(proc, torch.tensor([1.0, -1.0]), 0.25),
                               torch.tensor([[1.0, 1.25, 0.75], [-0.75, -1.0, -1.0]]))
    # a per-token advantage constant along each row is the per-sequence one
    g = torch.Generator().manual_seed(0)
    logp, old = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    adv = torch.tensor([0.7, -1.3])
    a = rl.policy_loss(logp, old, adv, mask, 0.2)
    b = rl.policy_loss(logp, old, adv[:, None].expand(2, 3), mask, 0.2)
    torch.testing.assert_close(a.loss, b.loss)
    assert a.clip_frac == b.clip_frac


def hand_rollout(tok, question: str, completions: list[str], finished: bool = True) -> rollout.Rollout:
    """A rollout of hand-written completions (left-padded prompt, completion, eos, right padding)."""
    prompts = [tok.prompt_ids(question)] * len(completions)
    comp = [tok.encode(c) + ([tok.eos_id] if finished else []) for c in completions]
    P, C = len(prompts[0]), max(len(c) for c in comp)
    tokens = torch.full((len(comp), P + C), tok.pad_id)
    cmask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, c in enumerate(comp):
        tokens[i, :P] = torch.tensor(prompts[i])
        tokens[i, P:P + len(c)] = torch.tensor(c)
        cmask[i, P:P + len(c)] = True
    amask = cmask.clone()
    amask[:, :P] = True
    return rollout.Rollout(tokens, amask, cmask, torch.zeros(tokens.shape), P, torch.full((len(comp),), finished))


def test_oracle_step_rewards_of_hand_written_traces_land_on_the_step_ends():
    tok, task = CharTokenizer.build(), get_task("chain")
    ex = Example("5+3*7", "56", "5+3=8\n8*7=56")
    texts = ["<think>5+3=8\n8*7=56</think><answer>56</answer>",  # both steps right, answer right
             "<think>5+3=8\n8*7=57</think><answer>57</answer>",  # second step wrong
             "<think>hmm\n5+3=8</think><answer>56</answer>",  # an unreadable line earns nothing
             "<think></think><answer>56</answer>"]  # no steps: the answer step alone
    ro = hand_rollout(tok, ex.question, texts)
    scores = [task.score(t, ex, RewardWeights()) for t in texts]
    out = step_rewards(texts, [ex] * 4, scores, ro, tok, task, None, "")
    assert out.rewards == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0]]
    for i, text in enumerate(texts):
        ids = ro.tokens[i].tolist()
        decoded = [tok.decode(ids[ro.prompt_len:c + 1]) for c in out.ends[i]]
        assert decoded[-1] == text  # the answer step ends at the completion's last token, before eos
    first = tok.decode(ro.tokens[0, ro.prompt_len:out.ends[0][0] + 1].tolist())
    assert first == "<think>5+3=8" and tok.decode(ro.tokens[0, ro.prompt_len:out.ends[0][1] + 1].tolist()).endswith("8*7=56")


# --- the CLI ------------------------------------------------------------------------------------------

ARGS = overrides(TINY)


def test_process_reward_needs_step_checks_or_a_prm(base_run, tmp_path, capsys):
    code = main(["rl", "--init", str(base_run), "--out", str(tmp_path / "r"), *ARGS, "--task", "sort", "--rl.reward", "process"])
    err = capsys.readouterr().err
    assert code == 2 and "has no exact step checks" in err and "--rl.prm" in err
    code = main(["rl", "--init", str(base_run), "--out", str(tmp_path / "r2"), *ARGS, "--rl.reward", "process", "--rl.prm", str(tmp_path / "nothing")])
    assert code == 2 and "rl.prm" in capsys.readouterr().err
    assert main(["rl", "--rl.process_weight", "1.5", "--init", str(base_run)]) == 2


@pytest.fixture(scope="module")
def prm_run(tmp_path_factory):
    """A tiny PRM (2 training steps on exact chain labels): untrained, but its scores vary."""
    d = tmp_path_factory.mktemp("prm")
    data = write_rows(d / "train.jsonl", chain_rows(8, 0))
    assert main(["prm", "train", "--prm.data", data, "--out", str(d / "prm"), *MODEL, "--prm.steps", "2", "--prm.batch_size", "4"]) == 0
    return d / "prm"


def test_process_rl_with_a_learned_prm_trains_on_its_scores(base_run, prm_run, tmp_path):
    out = tmp_path / "rl"
    assert main(["rl", "--init", str(base_run), "--out", str(out), *ARGS, "--rl.reward", "process", "--rl.prm", str(prm_run)]) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert all(0 < r["reward/process_mean"] < 1 for r in rows)  # the PRM's probabilities, not the verifier's 0/1
    assert all(r["monitor/proxy_mean"] == r["reward/process_mean"] for r in rows)  # the monitor watches the proxy trained on
    assert any(r["train/grad_norm"] > 0 for r in rows)  # nonzero token advantages moved the policy


@pytest.mark.slow
def test_process_rl_killed_resumes_bit_identical(base_run, prm_run, tmp_path):
    steps = 10
    argv = ["--init", str(base_run), *ARGS, "--rl.steps", str(steps), "--rl.eval_every", "4", "--save_every", "2", "--keep_checkpoints", "1000",
            "--rl.reward", "hybrid", "--rl.prm", str(prm_run), "--rl.monitor.probe_every", "3", "--rl.monitor.probe_problems", "3"]
    reference = tmp_path / "reference"
    assert main(["rl", "--out", str(reference), *argv]) == 0
    assert any(r["reward/process_mean"] > 0 for r in rows_by_step(reference).values())
    results = survive_kills(["rl", "--out", str(tmp_path / "run"), *argv], tmp_path / "run", reference, steps,
                            [signal.SIGKILL, signal.SIGKILL], tmp_path)
    assert all(results), results
    assert (tmp_path / "run" / "events.jsonl").read_text() == (reference / "events.jsonl").read_text()
