"""Evaluation estimators (pass@k, maj@k, answer diversity) and their aggregation into EvalResult.

pass@k follows Chen et al. 2021 (Codex, arXiv:2107.03374, sec. 2.1): draw n >= k samples per
problem, count the c correct ones, and estimate the probability that at least one of k samples is
correct by 1 - C(n-c, k) / C(n, k), which is unbiased, unlike the "any of the first k" that many
codebases report. maj@k (self-consistency, Wang et al. 2022, arXiv:2203.11171; the cons@64 of
DeepSeek-R1's tables) is computed in the same spirit: the expected accuracy of a majority vote over
k samples drawn without replacement from the n, not the vote of one arbitrary k-subset.

No model code here: the caller samples and scores, this module only counts.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # evaluate.py is a core module: it must not import the task floor at run time
    from r1lab.rewards import Score

PASS_AT_K_ESTIMATOR = "unbiased: 1 - C(n-c,k)/C(n,k) (Chen et al. 2021)"
MAJ_AT_K_ESTIMATOR = "expected majority-vote accuracy over k-subsets of the n samples; ties split"

# Exact maj@k enumerates vote-count vectors (~5 us each); past this many it uses Monte Carlo.
MAJ_EXACT_MAX_VECTORS = 50_000
# Monte-Carlo subsets when exact is too costly: standard error <= 0.5/sqrt(20_000) ~ 0.0035.
MAJ_MC_SAMPLES = 20_000
MAJ_MC_CHUNK = 2_000  # subsets per vectorised batch (bounds memory at chunk * n floats)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), the numerically stable form of the Codex paper
    (no huge binomials, no cancellation)."""
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _vote_winners(counts: list[int], correct: list[bool]) -> tuple[int, int]:
    """(winning answers, correct ones among them) of one vote with counts[j] votes for answer j.
    Zero winners when nobody answered. Credit is correct/winners: a uniformly random tie-break."""
    top = max(counts, default=0)
    if top == 0:  # no sample gave an answer: the vote abstains, which is wrong
        return 0, 0
    winners = [j for j, count in enumerate(counts) if count == top]
    return len(winners), sum(correct[j] for j in winners)


def _n_count_vectors(sizes: list[int], k: int) -> int:
    """How many (x_j) with 0 <= x_j <= sizes[j] and sum x_j = k (a knapsack count)."""
    ways = [1] + [0] * k  # ways[t]: vectors over the groups seen so far with sum t
    for size in sizes:
        ways = [sum(ways[t - x] for x in range(min(size, t) + 1)) for t in range(k + 1)]
    return ways[k]


def maj_at_k(answers: list[str | None], correct: list[bool], k: int, *, seed: int = 0) -> float:
    """Expected accuracy of a majority vote over k of the n samples, drawn without replacement.

    ``answers[i]`` is sample i's extracted answer (None: it gave none), ``correct[i]`` whether it
    is right. Samples with equal answers must agree on correctness (the verifier is a function of
    the answer), else ValueError. None never wins a vote: it abstains; a subset whose k samples all
    abstain scores 0. A tie between answers earns the fraction of tied answers that are correct
    (a uniformly random tie-break, in expectation).

    Exact: the vote depends only on how many samples of each distinct answer the subset holds, so
    the sum runs over those count vectors, each weighted by its number of subsets, prod C(s_j, x_j).
    If there are more than ``MAJ_EXACT_MAX_VECTORS`` of them (many distinct answers and large k),
    the result is a Monte-Carlo mean over ``MAJ_MC_SAMPLES`` random subsets from ``seed``
    (deterministic in ``seed``, standard error below 0.004)."""
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"maj@k: {n} answers but {len(correct)} correctness flags")
    if not 1 <= k <= n:
        raise ValueError(f"maj@k needs 1 <= k <= n, got k={k}, n={n}")
    by_answer: dict[str, bool] = {}
    for answer, ok in zip(answers, correct):
        if answer is not None and by_answer.setdefault(answer, bool(ok)) != bool(ok):
            raise ValueError(f"maj@k: samples answering {answer!r} disagree on correctness")
    distinct = list(by_answer)
    group_correct = [by_answer[a] for a in distinct]
    tally = Counter(answers)
    sizes = [tally[a] for a in distinct] + [tally[None]]  # abstentions last

    if _n_count_vectors(sizes, k) <= MAJ_EXACT_MAX_VECTORS:
        # Depth-first over groups with an explicit stack (n distinct answers would be n frames).
        # Credit is summed as exact integers per number of tied winners: no rounding until the end.
        credit_by_ties: Counter[int] = Counter()  # winners -> sum of weight * correct winners
        last = len(sizes) - 1
        room = [sum(sizes[j:]) for j in range(len(sizes))]  # samples in groups j.. (prunes dead ends)
        stack: list[tuple[int, int, int, tuple[int, ...]]] = [(0, k, 1, ())]  # group, left, weight, counts
        while stack:
            j, left, weight, counts = stack.pop()
            if j == last or left == 0:  # abstentions take what is left; later answers get no votes
                weight *= math.comb(sizes[last], left) if j == last else 1
                winners, right = _vote_winners(list(counts), group_correct)
                credit_by_ties[winners] += weight * right
            else:
                for x in range(max(0, left - room[j + 1]), min(sizes[j], left) + 1):
                    stack.append((j + 1, left - x, weight * math.comb(sizes[j], x), counts + (x,)))
        exact = sum(Fraction(total, winners) for winners, total in credit_by_ties.items() if winners)
        return float(exact / math.comb(n, k))

    # Monte Carlo, vectorised: the first k of a random permutation of each row is a uniform k-subset.
    rng = np.random.default_rng(seed)
    index = {a: j for j, a in enumerate(distinct)}
    abstain = len(distinct)
    group_of = np.array([abstain if a is None else index[a] for a in answers])  # (n,)
    correct_G = np.array(group_correct, dtype=bool)  # (G,)
    credit_sum, done = 0.0, 0
    while done < MAJ_MC_SAMPLES:
        S = min(MAJ_MC_CHUNK, MAJ_MC_SAMPLES - done)
        picks_SK = np.argpartition(rng.random((S, n)), k - 1, axis=1)[:, :k]
        groups_SK = group_of[picks_SK] + (abstain + 1) * np.arange(S)[:, None]
        counts_SG = np.bincount(groups_SK.ravel(), minlength=S * (abstain + 1)).reshape(S, abstain + 1)
        counts_SG = counts_SG[:, :abstain]  # abstentions never win
        top_S = counts_SG.max(axis=1, initial=0)
        winners_SG = (counts_SG == top_S[:, None]) & (top_S[:, None] > 0)
        n_win_S = winners_SG.sum(axis=1)
        right_S = (winners_SG & correct_G).sum(axis=1)
        credit_sum += float(np.sum(right_S / np.maximum(n_win_S, 1)))
        done += S
    return credit_sum / MAJ_MC_SAMPLES


def best_of_k(scores: list[float], correct: list[bool], k: int) -> float:
    """Expected accuracy of best-of-k reranking: draw k of the n samples without replacement and
    keep the highest-scored one (ties broken uniformly at random); ``correct[i]`` says whether
    sample i is right. Exact: the pick lies in the group of samples scored s exactly when the
    subset holds none scored above s and at least one scored s, which has probability
    (C(n - above, k) - C(n - above - size, k)) / C(n, k); within the group every sample is equally
    likely to be the pick, so the credit is the group's fraction of correct samples."""
    n = len(scores)
    if len(correct) != n:
        raise ValueError(f"best_of_k: {n} scores but {len(correct)} correctness flags")
    if not 1 <= k <= n:
        raise ValueError(f"best_of_k needs 1 <= k <= n, got k={k}, n={n}")
    groups: dict[float, list[bool]] = {}
    for score, ok in zip(scores, correct):
        groups.setdefault(score, []).append(bool(ok))
    total, above = Fraction(0), 0
    for score in sorted(groups, reverse=True):
        members = groups[score]
        p = Fraction(math.comb(n - above, k) - math.comb(n - above - len(members), k), math.comb(n, k))
        total += p * Fraction(sum(members), len(members))
        above += len(members)
    return float(total)


@dataclass
class ProblemSamples:
    """The n scored samples of one problem, as the evaluation loop produced them."""

    question: str
    answer: str  # the reference answer
    completions: list[str]
    scores: list[Score]
    answers: list[str | None]  # extracted answers (None: no <answer> block)
    lengths: list[int]  # completion lengths in tokens

    def __post_init__(self) -> None:
        n = len(self.completions)
        if not n == len(self.scores) == len(self.answers) == len(self.lengths):
            raise ValueError(
                f"ProblemSamples: {n} completions, {len(self.scores)} scores, "
                f"{len(self.answers)} answers, {len(self.lengths)} lengths"
            )

    @property
    def solved(self) -> list[bool]:
        """Which samples count as correct: exact correctness (``Score.correct`` is 0 or 1; a
        task's graded ``Score.partial`` credit never counts)."""
        return [s.correct == 1.0 for s in self.scores]


@dataclass
class ProblemRecord:
    """One problem in an EvalResult, for inspection."""

    question: str
    answer: str
    n: int
    c: int
    first_completion: str


@dataclass
class EvalResult:
    """One evaluation of one task split. ``metrics`` keys: ``pass@k`` and ``maj@k`` for each k,
    ``mean_len`` (tokens), ``format_rate``, ``correct_rate`` (means over all samples; exact
    correctness, never partial credit) and
    ``distinct_answers`` (mean over problems of distinct non-None answers / n)."""

    task: str
    split: str
    n_problems: int
    n: int  # samples per problem
    ks: list[int]
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    metrics: dict[str, float]
    problems: list[ProblemRecord] = field(default_factory=list)
    pass_estimator: str = PASS_AT_K_ESTIMATOR
    maj_estimator: str = MAJ_AT_K_ESTIMATOR

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> EvalResult:
        data = json.loads(text)
        data["problems"] = [ProblemRecord(**p) for p in data["problems"]]
        return cls(**data)


def summarize(
    task_name: str,
    split: str,
    per_problem: list[ProblemSamples],
    ks: list[int],
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
) -> EvalResult:
    """Aggregate scored samples into an EvalResult: pass@k and maj@k averaged over problems."""
    if not per_problem:
        raise ValueError("summarize: no problems")
    n = len(per_problem[0].completions)
    if n == 0 or any(len(p.completions) != n for p in per_problem):
        raise ValueError("summarize: every problem needs the same positive number of samples")
    bad = [k for k in ks if not 1 <= k <= n]
    if bad:
        raise ValueError(f"summarize: k={bad} outside [1, n={n}]")

    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"pass@{k}"] = _mean([pass_at_k(n, sum(p.solved), k) for p in per_problem])
        metrics[f"maj@{k}"] = _mean([maj_at_k(p.answers, p.solved, k, seed=seed) for p in per_problem])
    metrics["mean_len"] = _mean([length for p in per_problem for length in p.lengths])
    metrics["format_rate"] = _mean([s.format for p in per_problem for s in p.scores])
    metrics["correct_rate"] = _mean([float(ok) for p in per_problem for ok in p.solved])
    metrics["distinct_answers"] = _mean(
        [len({a for a in p.answers if a is not None}) / n for p in per_problem]
    )
    problems = [
        ProblemRecord(p.question, p.answer, n, sum(p.solved), p.completions[0]) for p in per_problem
    ]
    return EvalResult(
        task=task_name, split=split, n_problems=len(per_problem), n=n, ks=list(ks),
        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
        metrics=metrics, problems=problems,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
