"""format_reward, extract_answer and score: the R1 template's rules at their edges."""

from __future__ import annotations

import pytest

from r1lab.rewards import RewardWeights, Score, extract_answer, format_reward, score


@pytest.mark.parametrize(
    "completion",
    [
        "<think>7*3=21</think><answer>21</answer>",
        "  \n<think>a\nb</think>\n\n<answer>\n21\n</answer>\n ",  # white space around blocks
        "<think></think><answer></answer>",  # empty blocks are well-formed (correctness is separate)
        "<think>a < b and c > d</think><answer>x</answer>",  # angle brackets that are not tags
    ],
)
def test_format_reward_accepts_one_think_then_one_answer(completion):
    assert format_reward(completion) == 1.0


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "21",
        "<answer>21</answer>",  # no think block
        "<think>x</think>",  # no answer block
        "<answer>21</answer><think>x</think>",  # wrong order
        "Sure! <think>x</think><answer>21</answer>",  # text before
        "<think>x</think><answer>21</answer> done",  # text after
        "<think>x</think> so <answer>21</answer>",  # text between
        "<think>x</think><answer>1</answer><answer>2</answer>",  # two answer blocks
        "<think>x</think><think>y</think><answer>2</answer>",  # two think blocks
        "<think>x<think>y</think><answer>2</answer>",  # nested/unbalanced think
        "<think>x</think><answer>2<answer>3</answer>",  # tag inside the answer
        "<think>x</think><answer>21",  # unclosed answer
        "<THINK>x</THINK><ANSWER>21</ANSWER>",  # tags are case-sensitive
    ],
)
def test_format_reward_rejects_anything_else(completion):
    assert format_reward(completion) == 0.0


@pytest.mark.parametrize(
    "completion,expected",
    [
        ("<think>x</think><answer>21</answer>", "21"),
        ("<answer>  21 \n</answer>", "21"),  # stripped
        ("<answer>1</answer> and <answer>2</answer>", "2"),  # the last block wins
        ("<answer>a\nb</answer>", "a\nb"),  # multi-line answers kept inside
        ("<answer></answer>", ""),  # empty, not None
        ("<think><answer>1</answer></think>", "1"),  # found even inside a think block
        ("no tags at all", None),
        ("", None),
        ("<answer>21", None),  # unclosed
        ("21</answer>", None),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_score_combines_format_and_correctness_with_weights():
    check = lambda answer: 1.0 if answer == "21" else 0.0  # noqa: E731
    w = RewardWeights(format=0.1, correct=1.0)
    assert score("<think>x</think><answer>21</answer>", check, w) == Score(1.1, format=1.0, correct=1.0)
    assert score("<think>x</think><answer>20</answer>", check, w) == Score(0.1, format=1.0, correct=0.0)
    assert score("<answer>21</answer>", check, w) == Score(reward=1.0, format=0.0, correct=1.0)
    assert score("", check, w) == Score(reward=0.0, format=0.0, correct=0.0)
    s = score("<think>x</think><answer>21</answer>", check, RewardWeights(format=0.5, correct=2.0))
    assert s.reward == pytest.approx(2.5)


def test_score_does_not_call_check_without_an_answer():
    def check(answer: str) -> float:
        raise AssertionError("check called")

    assert score("<think>no answer</think>", check, RewardWeights()).correct == 0.0
