"""format_reward, extract_answer and score: the R1 template's rules at their edges, and the exploit
shapes of issue 7 (several answer blocks, the answer inside <think>, empty answers, unclosed tags,
text after </answer>, a reference that cannot be parsed)."""

from __future__ import annotations

import pytest

from r1lab.rewards import RewardWeights, Score, extract_answer, format_reward, score


@pytest.mark.parametrize(
    "completion",
    [
        "<think>7*3=21</think><answer>21</answer>",
        "  \n<think>a\nb</think>\n\n<answer>\n21\n</answer>\n ",  # white space around blocks
        "<think></think><answer>0</answer>",  # an empty think block is fine
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
        "<think></think><answer></answer>",  # an empty answer is not an answer
        "<think>x</think><answer> \n </answer>",  # nor is white space
        "<think><answer>21</answer></think><answer>21</answer>",  # answer inside think
    ],
)
def test_format_reward_rejects_anything_else(completion):
    assert format_reward(completion) == 0.0


@pytest.mark.parametrize(
    "completion,expected",
    [
        ("<think>x</think><answer>21</answer>", "21"),
        ("<think>x</think><answer>  21 \n</answer>\n", "21"),  # stripped
        ("<think></think><answer>a\nb</answer>", "a\nb"),  # multi-line answers kept inside
        ("<answer>21</answer>", None),  # no think block: no answer (accuracy needs the format)
        ("<think>x</think><answer>1</answer><answer>2</answer>", None),  # several answer blocks
        ("<think>x</think><answer>1</answer> and <answer>2</answer>", None),
        ("<think><answer>1</answer></think>", None),  # the answer inside <think>
        ("<think><answer>1</answer></think><answer>2</answer>", None),
        ("<think>x</think><answer></answer>", None),  # empty
        ("<think>x</think><answer>21</answer> so 21", None),  # text after </answer>
        ("<think>x</think><answer>21", None),  # unclosed answer
        ("<think>x<answer>21</answer>", None),  # unclosed think
        ("21</answer>", None),
        ("no tags at all", None),
        ("", None),
    ],
)
def test_extract_answer_only_from_a_well_formed_completion(completion, expected):
    assert extract_answer(completion) == expected
    assert format_reward(completion) == (0.0 if expected is None else 1.0)


def test_score_combines_format_and_correctness_with_weights():
    check = lambda answer: 1.0 if answer == "21" else 0.0  # noqa: E731
    w = RewardWeights(format=0.1, correct=1.0)
    assert score("<think>x</think><answer>21</answer>", check, w) == Score(1.1, format=1.0, correct=1.0, partial=1.0)
    assert score("<think>x</think><answer>20</answer>", check, w) == Score(0.1, format=1.0, correct=0.0, partial=0.0)
    assert score("", check, w) == Score(reward=0.0, format=0.0, correct=0.0)
    s = score("<think>x</think><answer>21</answer>", check, RewardWeights(format=0.5, correct=2.0))
    assert s.reward == pytest.approx(2.5)


@pytest.mark.parametrize(
    "completion",
    [
        "<answer>21</answer>",  # a bare answer block: correct before issue 7, now nothing
        "<think>x</think><answer>20</answer><answer>21</answer>",  # several blocks, the last right
        "<think>x</think><answer>21</answer><answer>20</answer>",  # several blocks, the first right
        "<think>21 <answer>21</answer></think><answer>20</answer>",  # the right one inside <think>
        "<think>x</think><answer>21</answer> actually 20",  # text after </answer>
        "<think>x</think><answer>21",  # unclosed
        "<think>x</think><answer></answer>",  # empty: paid 0.1 of format before issue 7
    ],
)
def test_exploit_shapes_earn_nothing(completion):
    check = lambda answer: 1.0 if answer == "21" else 0.0  # noqa: E731
    s = score(completion, check, RewardWeights(format=0.1, correct=1.0, partial=0.5))
    assert s == Score(reward=0.0, format=0.0, correct=0.0, partial=0.0)


def test_score_does_not_call_check_without_a_well_formed_answer():
    def check(answer: str) -> float:
        raise AssertionError("check called")

    for completion in ("<think>no answer</think>", "<answer>21</answer>", "<think>x</think><answer> </answer>"):
        assert score(completion, check, RewardWeights()).correct == 0.0


def test_a_graded_check_is_refused_and_partial_credit_is_its_own_component():
    with pytest.raises(ValueError, match="exact correctness"):
        score("<think>x</think><answer>21</answer>", lambda a: 0.92, RewardWeights())
    s = score("<think>x</think><answer>210</answer>", lambda a: 0.0, RewardWeights(partial=0.5), partial=lambda a: 0.92)
    assert (s.correct, s.partial, s.reward) == (0.0, 0.92, pytest.approx(0.1 + 0.5 * 0.92))
    # Off by default: the same graded credit adds nothing to the reward.
    s = score("<think>x</think><answer>210</answer>", lambda a: 0.0, RewardWeights(), partial=lambda a: 0.92)
    assert (s.correct, s.reward) == (0.0, pytest.approx(0.1))
    # A verifier's float sum above 1 is clamped.
    assert score("<think>x</think><answer>a</answer>", lambda a: 0.0, RewardWeights(), partial=lambda a: 1.0000000000000002).partial == 1.0


@pytest.mark.parametrize("name,gold", [("chain", ""), ("chain", "twenty"), ("chain", "21.0x"), ("sort", ""), ("sort", "   "),
                                       ("hops", ""), ("countdown", "")])
def test_a_reference_that_cannot_be_parsed_never_gives_reward_1(name, gold):
    from r1lab.tasks import Example, get_task

    task = get_task(name)
    questions = {"chain": "7+5*2-3", "sort": "Sort: 3 1 2", "hops": "a>b b>a|a3", "countdown": "not a countdown question"}
    ex = Example(question=questions[name], answer=gold)
    for answer in (gold, gold.strip(), "21", "1 2 3", "a", "1+2+3", "x"):
        s = task.score(f"<think>x</think><answer>{answer}</answer>", ex, RewardWeights())
        assert s.correct == 0.0 and s.reward < 1.0, (name, gold, answer)
