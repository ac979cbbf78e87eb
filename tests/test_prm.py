"""Process reward models: step segmentation, exact labels of hand-written traces, Math-Shepherd
labels on toy policies with known success probabilities, the reward model's loss, AUC, scoring,
and the `r1lab prm` stages."""

from __future__ import annotations

import math
import random

import pytest

from r1lab.prm import labels as labels_lib
from r1lab.prm import split_steps, step_spans
from r1lab.prm.steps import exact_labels
from r1lab.tasks import Example, get_task

# --- steps ---------------------------------------------------------------------------------------


def test_split_steps_lines_inside_think():
    c = "<think>7+5=12\n12*2=24\n24-3=21</think><answer>21</answer>"
    assert split_steps(c) == ["7+5=12", "12*2=24", "24-3=21"]
    assert [c[s:e] for s, e in step_spans(c)] == split_steps(c)


def test_split_steps_edge_cases():
    assert split_steps("") == []
    assert split_steps("<think></think><answer>21</answer>") == []  # answer only: no step
    assert split_steps("<think>   \n\n </think><answer>2</answer>") == []  # empty think
    assert split_steps("<think>a=1\n\n b=2 \n\n\n</think><answer>2</answer>") == ["a=1", "b=2"]  # blank lines, trailing
    assert split_steps("<think>a=1\nb=2") == ["a=1", "b=2"]  # unclosed think: to the end
    assert split_steps("a=1\nb=2<answer>2</answer>") == ["a=1", "b=2"]  # no think block: before <answer>
    assert split_steps("<answer>5</answer>") == []


def test_split_steps_with_a_marker():
    c = "<think>Step 1: 7+5=12\nso 12 Step 2: 12*2=24 Step 3:</think><answer>24</answer>"
    assert split_steps(c, "Step") == ["1: 7+5=12\nso 12", "2: 12*2=24", "3:"]
    assert split_steps("<think>one line\nanother</think>", "##") == ["one line\nanother"]  # marker absent: one step
    assert split_steps("<think>##a##  ##b##</think>", "##") == ["a", "b"]
    assert split_steps("<think>x\ny</think>", "") == ["x", "y"]  # empty marker: lines


def test_spans_point_into_the_completion():
    c = "<think> 3*4=12 \n12+1=13</think><answer>13</answer>"
    spans = step_spans(c)
    assert spans == [(8, 14), (16, 23)] and c[8:14] == "3*4=12" and c[16:23] == "12+1=13"


# --- exact labels -------------------------------------------------------------------------------


def test_exact_labels_of_hand_written_chain_traces():
    task, ex = get_task("chain"), Example("7+5*2-3", "21")
    right = split_steps("<think>7+5=12\n12*2=24\n24-3=21</think><answer>21</answer>")
    assert exact_labels(task, ex, right) == [True, True, True]
    wrong_middle = split_steps("<think>7+5=12\n12*2=25\n25-3=22</think><answer>22</answer>")
    assert exact_labels(task, ex, wrong_middle) == [True, False, False]  # an error carries over
    chatter = split_steps("<think>first add\n7+5=12\nthen 12*2=24\n12*2=24</think><answer>24</answer>")
    assert exact_labels(task, ex, chatter) == [None, True, None, True]
    assert exact_labels(task, ex, []) == []


def test_exact_labels_of_hand_written_countdown_traces():
    task, ex = get_task("countdown"), Example("Use 3 7 2 to make 23", "7*3+2")
    assert exact_labels(task, ex, ["7*3=21", "21+2=23"]) == [True, True]
    assert exact_labels(task, ex, ["7*3=22", "22+2=24"]) == [False, False]  # 22 never on the table
    assert exact_labels(task, ex, ["7*7=49"]) == [False]  # 7 used twice
    assert exact_labels(get_task("sort"), Example("3 1 2", "1 2 3"), ["x"]) is None  # no exact check


# --- Math-Shepherd labels -----------------------------------------------------------------------


def test_estimate_soft_and_hard():
    lab = labels_lib.estimate([[True, False, False, True], [False] * 4, [True] * 4])
    assert lab.soft == [0.5, 0.0, 1.0] and lab.hard == [True, False, True]
    with pytest.raises(ValueError):
        labels_lib.estimate([[]])


def test_auto_labels_of_a_deterministic_toy_policy_are_its_success_rates():
    # The policy succeeds from the prefix ending at step i in exactly round(p_i * n) of n rollouts.
    c = "<think>a\nb\nc\nd</think><answer>x</answer>"
    p = {"<think>a": 0.75, "<think>a\nb": 0.25, "<think>a\nb\nc": 0.0, "<think>a\nb\nc\nd": 1.0}
    n = 8
    seen = []

    def rollouts(prefixes):
        seen.extend(prefixes)
        return [[j < round(p[q] * n) for j in range(n)] for q in prefixes]

    lab = labels_lib.auto_labels(c, rollouts)
    assert seen == list(p)  # the policy starts right after each step
    assert lab.soft == [0.75, 0.25, 0.0, 1.0] and lab.hard == [True, True, False, True]
    assert labels_lib.auto_labels("<think></think><answer>1</answer>", rollouts).soft == []


def test_auto_labels_of_a_random_toy_policy_match_its_probabilities():
    # Success probabilities known per step; n = 4000 rollouts: fractions within 4 standard errors.
    probs = [0.9, 0.6, 0.3, 0.05]
    c = "<think>" + "\n".join(f"s{i}" for i in range(len(probs))) + "</think>"
    rng, n = random.Random(0), 4000

    def rollouts(prefixes):
        return [[rng.random() < probs[q.count("\n")] for _ in range(n)] for q in prefixes]

    lab = labels_lib.auto_labels(c, rollouts)
    for got, want in zip(lab.soft, probs):
        assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / n)
    assert lab.hard == [True] * 4  # with 4000 tries, even 5% succeeds somewhere


def test_label_quality_against_exact_labels():
    q = labels_lib.label_quality([True, True, False, False, True], [True, False, False, None, True])
    assert q["steps"] == 4 and q["accuracy"] == 0.75
    assert q["precision_good"] == 2 / 3 and q["recall_good"] == 1.0
    assert q["precision_bad"] == 1.0 and q["recall_bad"] == 0.5
    assert math.isnan(labels_lib.label_quality([True], [True])["precision_bad"])
