"""Diversity in evaluation: the pass@k curve against brute-force enumeration of k-subsets, distinct-n
against hand counts, and the eval JSON and plot a user gets from ``r1lab eval``."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction

import pytest

from conftest import TINY, overrides
from r1lab.cli import main
from r1lab.evaluate import EvalResult, ProblemSamples, distinct_n, pass_at_k, pass_at_k_curve, reasoning_text, summarize
from r1lab.rewards import Score


def brute_curve(n: int, c: int) -> list[Fraction]:
    """pass@k for k = 1..n: the fraction of k-subsets of n samples (the first c correct) holding a correct one."""
    out = []
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        out.append(Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets)))
    return out


def test_pass_at_k_curve_equals_brute_force_and_is_monotone():
    for n in range(1, 11):
        for c in range(n + 1):
            curve = pass_at_k_curve(n, c)
            assert len(curve) == n
            assert curve == pytest.approx([float(f) for f in brute_curve(n, c)], abs=1e-12), (n, c)
            assert all(a <= b + 1e-15 for a, b in zip(curve, curve[1:])), (n, c)
            assert curve == pytest.approx([pass_at_k(n, c, k) for k in range(1, n + 1)], abs=1e-12)


def test_pass_at_k_curve_large_n_stays_in_range():
    curve = pass_at_k_curve(128, 3)
    assert curve[0] == pytest.approx(3 / 128)
    assert curve[-1] == 1.0 and curve[125] == 1.0  # k > n - c: every subset holds a correct sample
    assert all(0.0 <= v <= 1.0 for v in curve)
    assert pass_at_k_curve(64, 0) == [0.0] * 64
    with pytest.raises(ValueError):
        pass_at_k_curve(4, 5)


def test_distinct_n_against_hand_counts():
    # words: a b a b | a c -> unigrams a,b,a,b,a,c: 3 distinct of 6; bigrams ab,ba,ab,ac: 3 of 4
    texts = ["a b a b", "a c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(["x y", "x y"], 2) == pytest.approx(1 / 2)  # the same trace twice
    assert distinct_n(["x", ""], 2) is None  # no bigram anywhere
    assert reasoning_text("<think>1+2=3\n3*2=6</think><answer>6</answer>").split() == ["1+2=3", "3*2=6"]


def _problem(answers, correct, completions=None, entropies=()):
    completions = completions or [f"<think>{a}</think><answer>{a}</answer>" for a in answers]
    scores = [Score(1.0 if ok else 0.1, 1.0, 1.0 if ok else 0.0) for ok in correct]
    return ProblemSamples("q", "1", completions, scores, list(answers), [5] * len(answers), list(entropies))


def test_summarize_adds_curve_and_diversity_without_changing_metrics():
    p1 = _problem(["1", "1", "2", None], [True, True, False, False], entropies=[0.5, 0.5, 1.0, 2.0])
    p2 = _problem(["3", "4", "5", "6"], [False, False, False, True], entropies=[1.0, 1.0, 1.0, 1.0])
    res = summarize("t", "test", [p1, p2], [1, 4], temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    assert set(res.metrics) == {"pass@1", "maj@1", "pass@4", "maj@4", "mean_len", "format_rate", "correct_rate", "distinct_answers"}
    expected = [(a + b) / 2 for a, b in zip(pass_at_k_curve(4, 2), pass_at_k_curve(4, 1))]
    assert res.pass_curve == pytest.approx(expected)
    assert res.pass_curve[0] == pytest.approx(res.metrics["pass@1"]) and res.pass_curve[3] == pytest.approx(res.metrics["pass@4"])
    assert res.diversity["distinct_answers_per_problem"] == pytest.approx((2 + 4) / 2)
    assert res.diversity["entropy_mean"] == pytest.approx((0.5 + 0.5 + 1 + 2 + 4) / 8)
    # reasoning words: p1 "1 1 2 None" -> 3 distinct of 4; p2 four distinct of 4
    assert res.diversity["distinct_1"] == pytest.approx((3 / 4 + 1) / 2)
    assert res.diversity["distinct_2"] == 0.0  # one-word traces: no bigram in any problem
    back = EvalResult.from_json(res.to_json())
    assert back.pass_curve == res.pass_curve and back.diversity == res.diversity


def test_old_eval_json_without_diversity_still_loads():
    p = _problem(["1", "2"], [True, False])
    data = json.loads(summarize("t", "test", [p], [1], temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0).to_json())
    del data["pass_curve"], data["diversity"]
    old = EvalResult.from_json(json.dumps(data))
    assert old.pass_curve == [] and old.diversity == {}


def test_eval_cli_writes_curve_diversity_and_plot(base_run, tmp_path, capsys):
    out = tmp_path / "ev"
    args = overrides({k: v for k, v in TINY.items() if k in ("eval", "threads")})
    assert main(["eval", "--init", str(base_run), "--out", str(out), *args, "--eval.n_samples", "6", "--eval.ks", "[1, 6]"]) == 0
    (path,) = out.glob("*.json")
    res = EvalResult.from_json(path.read_text())
    assert len(res.pass_curve) == 6 and res.pass_curve[0] == pytest.approx(res.metrics["pass@1"])
    assert res.pass_curve[-1] == pytest.approx(res.metrics["pass@6"])
    assert res.diversity["entropy_mean"] > 0  # an untrained sampler is far from deterministic
    assert 0 < res.diversity["distinct_answers_per_problem"] <= 6 or res.metrics["format_rate"] == 0
    assert path.with_suffix(".pass_at_k.png").stat().st_size > 1000
    assert "distinct_answers_per_problem" in capsys.readouterr().out
