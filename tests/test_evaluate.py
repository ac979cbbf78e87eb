"""pass@k and maj@k against brute-force enumeration of k-subsets; EvalResult aggregation and JSON."""

from __future__ import annotations

import itertools
import json
import math
import random
from fractions import Fraction

import pytest

import r1lab.evaluate as ev
from r1lab.evaluate import EvalResult, ProblemSamples, maj_at_k, pass_at_k, summarize
from r1lab.rewards import Score


def brute_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Fraction of k-subsets of n samples (the first c correct) holding a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


def brute_maj_at_k(answers: list[str | None], correct: list[bool], k: int) -> Fraction:
    """Mean over every k-subset of the majority vote's credit (ties split, None abstains)."""
    total, subsets = Fraction(0), list(itertools.combinations(range(len(answers)), k))
    for s in subsets:
        votes: dict[str, int] = {}
        for i in s:
            if answers[i] is not None:
                votes[answers[i]] = votes.get(answers[i], 0) + 1
        if not votes:
            continue
        top = max(votes.values())
        winners = [a for a, v in votes.items() if v == top]
        right = sum(correct[answers.index(a)] for a in winners)
        total += Fraction(right, len(winners))
    return total / len(subsets)


# ---- pass@k -----------------------------------------------------------------------------------

def test_pass_at_k_matches_brute_force_for_every_small_case():
    for n in range(1, 11):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = float(brute_pass_at_k(n, c, k))
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 5) == 0.0  # nothing correct
    assert pass_at_k(10, 10, 1) == 1.0  # everything correct
    assert pass_at_k(10, 1, 10) == 1.0  # k = n: the subset is all samples
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # hand: only {wrong, wrong} of 6 fails


def test_pass_at_k_is_stable_for_large_n():
    # Exact value from integer binomials, which would overflow a float division.
    n, c, k = 1000, 7, 300
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(10_000, 1, 1) == pytest.approx(1e-4, rel=1e-12)


@pytest.mark.parametrize("n,c,k", [(5, 2, 6), (5, 2, 0), (5, 2, -1), (5, -1, 2), (5, 6, 2), (0, 0, 1)])
def test_pass_at_k_rejects_invalid_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# ---- maj@k ------------------------------------------------------------------------------------

def test_maj_at_k_hand_computed_tie():
    # Subsets of 2 from a a b c ('a' right): {a,a} 1, four {a,b}/{a,c} ties 1/2 each, {b,c} tie of
    # two wrong answers 0: (1 + 4/2) / 6 = 1/2.
    assert maj_at_k(["a", "a", "b", "c"], [True, True, False, False], 2) == pytest.approx(0.5)


def test_maj_at_k_hand_computed_with_abstentions():
    # a N b N, 'b' right, k=2: {a,N} x2 -> 0, {b,N} x2 -> 1, {a,b} tie -> 1/2, {N,N} abstains -> 0.
    assert maj_at_k(["a", None, "b", None], [False, False, True, False], 2) == pytest.approx(2.5 / 6)


def test_maj_at_k_special_values_of_k():
    answers = ["3", "3", "4", None, "5"]
    correct = [True, True, False, False, False]
    assert maj_at_k(answers, correct, 1) == pytest.approx(2 / 5)  # maj@1 is pass@1
    assert maj_at_k(answers, correct, 5) == 1.0  # one vote over all: "3" has 2 votes, wins
    assert maj_at_k([None] * 4, [False] * 4, 2) == 0.0  # every vote abstains: wrong
    assert maj_at_k(["x", "y"], [False, True], 2) == pytest.approx(0.5)  # a two-way tie


def test_maj_at_k_matches_brute_force_on_random_cases():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 9)
        pool = [None, "a", "b", "c", "d"][: rng.randint(2, 5)]
        answers = [rng.choice(pool) for _ in range(n)]
        right = rng.choice(pool)
        correct = [a is not None and a == right for a in answers]
        k = rng.randint(1, n)
        expected = float(brute_maj_at_k(answers, correct, k))
        assert maj_at_k(answers, correct, k) == pytest.approx(expected, abs=1e-12), (answers, correct, k)


def test_maj_at_k_monte_carlo_fallback_is_close_and_deterministic(monkeypatch):
    monkeypatch.setattr(ev, "MAJ_EXACT_MAX_VECTORS", 0)  # force the Monte-Carlo path
    answers = ["a", "a", "b", "b", "b", None, "c", "a", "b", "c"]
    correct = [a == "a" for a in answers]
    exact = float(brute_maj_at_k(answers, correct, 4))
    estimate = maj_at_k(answers, correct, 4, seed=3)
    assert estimate == pytest.approx(exact, abs=0.02)  # 5 standard errors
    assert maj_at_k(answers, correct, 4, seed=3) == estimate


def test_maj_at_k_is_exact_for_many_samples_with_few_answers():
    # C(64, 32) subsets, but only a few hundred count vectors: still exact. With equal groups of
    # 16, the right answer wins or ties by symmetry: the four answers share the credit equally.
    answers = [str(i % 4) for i in range(64)]
    assert maj_at_k(answers, [a == "0" for a in answers], 32) == pytest.approx(0.25, abs=1e-12)


def test_maj_at_k_rejects_invalid_input():
    with pytest.raises(ValueError):
        maj_at_k(["a", "b"], [True, False], 3)
    with pytest.raises(ValueError):
        maj_at_k(["a", "b"], [True, False], 0)
    with pytest.raises(ValueError):
        maj_at_k(["a", "b"], [True], 1)
    with pytest.raises(ValueError, match="disagree"):
        maj_at_k(["a", "a"], [True, False], 1)


# ---- summarize / EvalResult -------------------------------------------------------------------

def _problem(question: str, reference: str, answers: list[str | None], right: str) -> ProblemSamples:
    completions, scores = [], []
    for a in answers:
        if a is None:
            completions.append("<think>hm")
            scores.append(Score(reward=0.0, format=0.0, correct=0.0))
        else:
            completions.append(f"<think>x</think><answer>{a}</answer>")
            ok = 1.0 if a == right else 0.0
            scores.append(Score(reward=0.1 + ok, format=1.0, correct=ok))
    return ProblemSamples(question, reference, completions, scores, answers, [len(c) for c in completions])


def test_summarize_hand_computed_metrics():
    p1 = _problem("q1", "4", ["4", "4", "5", None], right="4")  # c=2
    p2 = _problem("q2", "7", ["1", "2", "2", "2"], right="7")  # c=0
    result = summarize("chain", "test", [p1, p2], [1, 2],
                       temperature=1.0, top_p=0.95, max_new_tokens=64, seed=5)
    m = result.metrics
    assert m["pass@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["pass@2"] == pytest.approx((1 - 1 / 6 + 0.0) / 2)
    # p1 maj@2: {4,4} 1, {4,5} x2 1/2, {4,N} x2 1, {5,N} 0 -> 4/6; p2 never right.
    assert m["maj@2"] == pytest.approx((4 / 6 + 0.0) / 2)
    assert m["format_rate"] == pytest.approx(7 / 8)
    assert m["correct_rate"] == pytest.approx(2 / 8)
    assert m["distinct_answers"] == pytest.approx((2 / 4 + 2 / 4) / 2)
    lengths = [len(c) for c in p1.completions + p2.completions]
    assert m["mean_len"] == pytest.approx(sum(lengths) / 8)
    assert (result.n_problems, result.n, result.ks) == (2, 4, [1, 2])
    records = [(p.question, p.answer, p.n, p.c) for p in result.problems]
    assert records == [("q1", "4", 4, 2), ("q2", "7", 4, 0)]
    assert result.problems[0].first_completion == p1.completions[0]


def test_summarize_counts_partial_credit_as_not_solved():
    p = ProblemSamples("q", "a", ["x", "y"], [Score(0.5, 1.0, 0.5), Score(1.1, 1.0, 1.0)], ["b", "a"], [3, 3])
    result = summarize("gym:x", "test", [p], [1], temperature=0.0, top_p=1.0, max_new_tokens=8, seed=0)
    assert result.problems[0].c == 1
    # correct_rate is exact too (issue 7): the half-credit sample is not half correct.
    assert result.metrics["correct_rate"] == pytest.approx(0.5)


def test_eval_result_json_round_trip_records_sampling_settings():
    p = _problem("q1", "4", ["4", "5"], right="4")
    result = summarize("sort", "test", [p], [1, 2], temperature=0.7, top_p=0.9, max_new_tokens=32, seed=1)
    text = result.to_json()
    data = json.loads(text)
    assert (data["n"], data["ks"], data["temperature"], data["split"]) == (2, [1, 2], 0.7, "test")
    assert "Chen" in data["pass_estimator"]
    assert EvalResult.from_json(text) == result


def test_summarize_rejects_bad_input():
    p = _problem("q", "1", ["1", "2"], right="1")
    with pytest.raises(ValueError):
        summarize("t", "test", [p], [3], temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    with pytest.raises(ValueError):
        summarize("t", "test", [], [1], temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    q = _problem("q", "1", ["1", "2", "3"], right="1")
    with pytest.raises(ValueError):
        summarize("t", "test", [p, q], [1], temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    with pytest.raises(ValueError):
        ProblemSamples("q", "1", ["a", "b"], [Score(0, 0, 0)], ["a", "b"], [1, 1])
