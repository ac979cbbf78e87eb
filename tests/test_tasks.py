"""Tasks: seeded determinism, disjoint splits, checkers that accept right answers and nothing else."""

from __future__ import annotations

import random
import re
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1lab.rewards import RewardWeights
from r1lab.tasks import Example, get_task
from r1lab.tasks.countdown import MAX_ANSWER_CHARS, CountdownTask, evaluate_expression, parse_question
from r1lab.tasks.gym import GymTask
from r1lab.tasks.sort import SortTask, selection_sort_steps

NAMES = ["chain", "hops", "countdown", "sort", "gym:basic_arithmetic", "gym:spell_backward"]
_CACHE: dict[str, object] = {}


def task(name: str):
    # Gym tasks generate their pools up front: build each once per test session.
    if name not in _CACHE:
        _CACHE[name] = get_task(name)
    return _CACHE[name]


# ---- every task -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_deterministic_under_seed(name):
    a, b = get_task(name), task(name)  # two instances: nothing may hang on object identity
    for split in ("train", "test"):
        assert a.examples(split, 30, seed=7) == b.examples(split, 30, seed=7)
        ra, rb = random.Random(3), random.Random(3)
        assert [a.sample(ra, split) for _ in range(20)] == [b.sample(rb, split) for _ in range(20)]
    assert task(name).examples("train", 30, seed=7) != task(name).examples("train", 30, seed=8)


@pytest.mark.parametrize("name", NAMES)
def test_train_and_test_questions_are_disjoint(name):
    t, rng = task(name), random.Random(0)
    train = {t.sample(rng, "train").question for _ in range(3000)}
    test = {t.sample(rng, "test").question for _ in range(1000)}
    assert len(test) >= 50  # a real held-out set, not a handful
    assert not train & test


@pytest.mark.parametrize("name", NAMES)
def test_check_accepts_reference_answers_and_rejects_wrong_ones(name):
    t, rng = task(name), random.Random(1)
    examples = [t.sample(rng, split) for split in ("train", "test") for _ in range(100)]
    for ex in examples:
        assert t.check(ex.answer, ex) == 1.0, ex
        if not name.startswith("gym:"):  # (extract_answer strips; gym verifiers need not)
            assert t.check(f"  {ex.answer}\n", ex) == 1.0  # surrounding white space is fine
        for wrong in ("", "   ", "x" * 5000, "</answer>", "__import__('os').system('true')"):
            # reasoning-gym verifiers may give partial credit (spell_backward counts matching
            # letters), so for gym a wrong answer is "not a pass"; ours give exactly 0.
            value = t.check(wrong, ex)
            assert value < 1.0 if name.startswith("gym:") else value == 0.0, (wrong[:20], ex)
    # Another problem's answer is wrong here (for all but a rare coincidence).
    mismatched = [t.check(b.answer, a) == 1.0 for a, b in zip(examples, examples[1:]) if a.answer != b.answer]
    assert sum(mismatched) <= 0.05 * len(mismatched)


@pytest.mark.parametrize("name", NAMES)
def test_score_in_the_r1_template(name):
    t, w = task(name), RewardWeights(format=0.1, correct=1.0)
    ex = t.sample(random.Random(2), "train")
    good = f"<think>{ex.solution or 'thinking'}</think>\n<answer>{ex.answer}</answer>"
    s = t.score(good, ex, w)
    assert (s.format, s.correct, s.reward) == (1.0, 1.0, pytest.approx(1.1))
    s = t.score("", ex, w)
    assert (s.format, s.correct, s.reward) == (0.0, 0.0, 0.0)
    s = t.score(f"the answer is {ex.answer}", ex, w)  # missing tags: nothing to extract
    assert (s.format, s.correct) == (0.0, 0.0)
    # Accuracy needs the format (rewards.py): every malformed shape scores 0, whatever its answer.
    for bad in (f"<answer>{ex.answer}</answer>",  # no think block
                f"<think>a</think><answer>{ex.answer}</answer> trailing",  # text after </answer>
                f"<think>a</think><answer>zzz</answer><answer>{ex.answer}</answer>",  # two answer blocks
                f"<think>a</think><answer>{ex.answer}</answer><answer>zzz</answer>",
                f"<think><answer>{ex.answer}</answer></think><answer>zzz</answer>",  # answer inside think
                f"<think>a</think><answer>{ex.answer}"):  # unclosed
        s = t.score(bad, ex, w)
        assert (s.format, s.correct, s.reward) == (0.0, 0.0, 0.0), bad


def test_unknown_task_and_unknown_gym_dataset_raise_naming_them():
    with pytest.raises(ValueError, match="nosuchtask"):
        get_task("nosuchtask")
    with pytest.raises(ValueError, match="no_such_dataset") as info:
        get_task("gym:no_such_dataset")
    assert "DATASETS" in str(info.value) and "\n" not in str(info.value)


# ---- chain ------------------------------------------------------------------------------------

def test_chain_solution_last_value_is_the_answer():
    t, rng = task("chain"), random.Random(4)
    for _ in range(200):
        ex = t.sample(rng, "train")
        assert ex.solution.splitlines()[-1].split("=")[-1] == ex.answer
        assert t.check(ex.solution.splitlines()[-1].split("=")[-1], ex) == 1.0


def test_chain_steps_apply_the_operations_left_to_right():
    ex = task("chain").sample(random.Random(0), "train")
    value = int(ex.question[0])
    for line, (op, operand) in zip(ex.solution.splitlines(), re.findall(r"([-+*])(\d)", ex.question)):
        value = {"+": value + int(operand), "-": value - int(operand), "*": value * int(operand)}[op]
        assert line.endswith(f"={value}")
    assert str(value) == ex.answer


# ---- hops -------------------------------------------------------------------------------------

def test_hops_follow_one_cycle_through_every_letter():
    t, rng = task("hops"), random.Random(3)
    for _ in range(200):
        ex = t.sample(rng, "train")
        table, query = ex.question.split("|")
        pointer = dict(pair.split(">") for pair in table.split())
        here, seen = query[0], set()
        for _ in range(len(pointer)):
            seen.add(here)
            here = pointer[here]
        assert seen == set(pointer) and here == query[0]  # a single cycle, no shortcut
        here = query[0]
        for line in ex.solution.splitlines():
            assert line == f"{here}>{pointer[here]}"
            here = pointer[here]
        assert here == ex.answer and len(ex.solution.splitlines()) == int(query[1:])


# ---- countdown --------------------------------------------------------------------------------

def _replay(solution: str) -> tuple[list[int], int]:
    """Check every step's arithmetic; return the leaf numbers the steps use and the final value."""
    # A leaf equal to a pending result may be taken for it, but then that result is later taken
    # for a leaf: the multiset of leaves comes out right either way.
    produced: list[int] = []
    leaves: list[int] = []
    value = 0
    for line in solution.splitlines():
        a, op, b, value = re.fullmatch(r"(\d+)([-+*/])(\d+)=(\d+)", line).groups()
        a, b, value = int(a), int(b), int(value)
        assert Fraction(eval_step(a, op, b)) == value, line
        for operand in (a, b):  # an operand is an earlier result if one is pending, else a leaf
            if operand in produced:
                produced.remove(operand)
            else:
                leaves.append(operand)
        produced.append(value)
    assert produced == [value]  # every intermediate result was used once
    return leaves, value


def eval_step(a: int, op: str, b: int) -> Fraction:
    return {"+": Fraction(a + b), "-": Fraction(a - b), "*": Fraction(a * b), "/": Fraction(a, b)}[op]


@pytest.mark.parametrize("n_numbers", [3, 4])
def test_countdown_instances_are_solvable_with_a_worked_solution(n_numbers):
    t, rng = CountdownTask(n_numbers=n_numbers), random.Random(5)
    for _ in range(300):
        ex = t.sample(rng, "train")
        numbers, target = parse_question(ex.question)
        assert len(numbers) == n_numbers and 1 <= target <= 100
        assert t.check(ex.answer, ex) == 1.0 and len(ex.answer) <= MAX_ANSWER_CHARS
        lines = ex.solution.splitlines()
        assert len(lines) == n_numbers - 1  # one step per combination
        leaves, value = _replay(ex.solution)
        assert value == target  # the last line's result is the target
        assert sorted(leaves) == sorted(numbers)  # each given number used exactly once
        assert t.check(str(target), ex) == 0.0  # the bare target does not use the numbers


def test_countdown_question_is_compact_ascii():
    ex = CountdownTask().sample(random.Random(0), "train")
    assert re.fullmatch(r"Use \d+ \d+ \d+ to make \d+", ex.question)
    assert parse_question("Use 3 7 2 to make 23") == ([3, 7, 2], 23)
    with pytest.raises(ValueError):
        parse_question("Use 3 7 2 to make")


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("7*3+2", 1.0),
        (" 2 + 3 * 7 ", 1.0),
        ("(7*3)+2", 1.0),
        ("((2))+7*3", 1.0),
        ("3*7+2=23", 0.0),  # an equation, not an expression
        ("7*3*2", 0.0),  # wrong value
        ("7*3+2+2", 0.0),  # a number reused
        ("7*3", 0.0),  # a number left out
        ("7*3+1+1", 0.0),  # wrong numbers, right value
        ("-(-7*3-2)", 0.0),  # unary signs are not operations on the given numbers
        ("7**1*3+2", 0.0),
        ("7*3+2//1", 0.0),
        ("0x7*3+2", 0.0),
        ("7_0", 0.0),
        ("７*3+2", 0.0),  # full-width digit
        ("7*3+2.0", 0.0),
        ("__import__('os')", 0.0),
        ("(lambda: 23)()", 0.0),
        ("[7*3+2][0]", 0.0),
        ("23", 0.0),
        ("7 3 2", 0.0),
        ("", 0.0),
        ("(" * 40 + "7*3+2" + ")" * 40, 1.0),  # deep but short: parsed fine
        ("(" * 60 + "7*3+2" + ")" * 60, 0.0),  # over the length cap
        ("7*3+2" + " " * 200, 0.0),
    ],
)
def test_countdown_check_parses_safely(answer, expected):
    ex = Example(question="Use 3 7 2 to make 23", answer="7*3+2")
    assert CountdownTask().check(answer, ex) == expected


def test_countdown_check_uses_exact_fractions():
    # 24 from 3 3 8 8 needs a fractional intermediate: 8/(3-8/3) = 8/(1/3) = 24.
    ex = Example(question="Use 3 3 8 8 to make 24", answer="8/(3-8/3)")
    assert CountdownTask(n_numbers=4).check("8/(3-8/3)", ex) == 1.0
    assert CountdownTask(n_numbers=4).check("8/(3-3)*8", ex) == 0.0  # division by zero is wrong
    assert evaluate_expression("1/3+1/3+1/3") == (Fraction(1), [1, 3, 1, 3, 1, 3])
    with pytest.raises(ValueError):
        evaluate_expression("1/(2-2)")


# ---- sort -------------------------------------------------------------------------------------

def test_sort_selection_steps_hand_example():
    # Numeric order, not text order: 9 before 15.
    steps = selection_sort_steps(["15", "2", "9", "1"], int)
    assert steps == ["1 | 15 2 9", "1 2 | 15 9", "1 2 9 | 15", "1 2 9 15"]
    assert selection_sort_steps(["b", "a", "b"], str) == ["a | b b", "a b | b", "a b b"]


def test_sort_examples_are_sorted_and_the_solution_ends_in_the_answer():
    t, rng = SortTask(), random.Random(6)
    kinds = set()
    for _ in range(300):
        ex = t.sample(rng, "train")
        items = ex.question.removeprefix("Sort: ").split()
        assert 4 <= len(items) <= 6
        key = int if items[0].isdigit() else str
        kinds.add(key)
        assert ex.answer.split() == sorted(items, key=key)
        assert ex.solution.splitlines()[-1] == ex.answer
        assert t.check(ex.solution.splitlines()[-1], ex) == 1.0
    assert kinds == {int, str}


def test_sort_check_normalises_white_space_only():
    ex = Example(question="Sort: 5 2 9 1", answer="1 2 5 9")
    t = SortTask()
    assert t.check("1 2 5 9", ex) == 1.0
    assert t.check("  1   2\t5 9 ", ex) == 1.0
    for wrong in ("1,2,5,9", "9 5 2 1", "1 2 5", "1 2 5 9 9", "1 2 9 5", ""):
        assert t.check(wrong, ex) == 0.0, wrong


def test_sort_rejects_bad_configuration():
    with pytest.raises(ValueError):
        SortTask(min_len=5, max_len=4)
    with pytest.raises(ValueError):
        SortTask(kinds=("float",))


# ---- gym --------------------------------------------------------------------------------------

def test_gym_pools_are_disjoint_and_test_split_ignores_the_training_seed():
    a = GymTask("spell_backward", size=300, seed=0, test_size=100)
    b = GymTask("spell_backward", size=300, seed=1, test_size=100)
    train_a = {e.question for e in a.pool("train")}
    test_a = {e.question for e in a.pool("test")}
    assert not train_a & test_a and len(test_a) >= 90
    assert [e.question for e in b.pool("test")] == [e.question for e in a.pool("test")]
    assert not {e.question for e in b.pool("train")} & test_a


def test_gym_check_scores_with_the_dataset_verifier():
    t = task("gym:spell_backward")
    ex = t.sample(random.Random(0), "test")
    assert t.check(ex.answer, ex) == 1.0
    assert t.check(ex.answer[::-1], ex) == 0.0 or ex.answer == ex.answer[::-1]
    assert t.name == "gym:spell_backward"
    with pytest.raises(ValueError, match="not in the task's pool"):
        t.check("x", Example(question="Spell this word backward: zzzz", answer="zzzz"))


def test_gym_rejects_bad_arguments():
    with pytest.raises(ValueError):
        GymTask("spell_backward", size=0)
    with pytest.raises(ValueError, match="overlaps"):
        GymTask("spell_backward", size=10, seed=2**31 - 5)


# ---- any text at all --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789+-*/() x_.=\n"), max_size=120) | st.text(max_size=60))
def test_countdown_check_never_raises_and_agrees_with_fractions(text):
    ex = Example(question="Use 3 7 2 to make 23", answer="7*3+2")
    value = CountdownTask().check(text, ex)
    assert value in (0.0, 1.0)
    if value == 1.0:  # then it really is an expression over 3 7 2 worth 23
        result, literals = evaluate_expression(text)
        assert result == 23 and sorted(literals) == [2, 3, 7]
