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


def test_token_step_ends_land_on_the_last_token_of_each_step():
    from r1lab.prm import token_step_ends
    from r1lab.tokenizer import CharTokenizer

    tok = CharTokenizer.build()
    c = "<think>7+5=12\n12*2=24</think><answer>24</answer>"
    ids = tok.encode(c) + [tok.eos_id, tok.pad_id]
    ends = token_step_ends(tok, ids)
    assert [tok.decode(ids[: j + 1]) for j in ends] == ["<think>7+5=12", "<think>7+5=12\n12*2=24"]
    assert ends == [6, 14]  # <think> is one token
    assert token_step_ends(tok, tok.encode("<think></think><answer>1</answer>")) == []
    assert token_step_ends(tok, []) == []


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


# --- the reward model ---------------------------------------------------------------------------

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from itertools import product  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from conftest import TINY, overrides  # noqa: E402
from r1lab.cli import main  # noqa: E402
from r1lab.prm import load_scorer  # noqa: E402
from r1lab.prm.model import aggregate, auc, bce_at, encode  # noqa: E402
from r1lab.tokenizer import CharTokenizer  # noqa: E402
from r1lab.tracking import read_metrics  # noqa: E402

MODEL = overrides({"model": TINY["model"], "threads": 1, "tensorboard": False})


def test_bce_at_is_the_mean_over_labelled_positions():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.5, 3.0]])
    target = torch.tensor([[0.0, 1.0, 0.25], [0.0, 0.0, 1.0]])
    weight = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    by_hand = []
    for (b, t) in [(0, 1), (0, 2), (1, 0)]:
        p = 1 / (1 + math.exp(-logits[b, t].item()))
        y = target[b, t].item()
        by_hand.append(-(y * math.log(p) + (1 - y) * math.log(1 - p)))
    assert bce_at(logits, target, weight).item() == pytest.approx(sum(by_hand) / 3, rel=1e-6)
    assert bce_at(logits, target, torch.zeros_like(weight)).item() == 0.0


def test_auc_matches_the_pairwise_definition():
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(2, 12)
        scores = [rng.choice([0.1, 0.2, 0.5, 0.7, 0.9]) for _ in range(n)]  # ties on purpose
        labels = [rng.random() < 0.5 for _ in range(n)]
        pos = [s for s, y in zip(scores, labels) if y]
        neg = [s for s, y in zip(scores, labels) if not y]
        if not pos or not neg:
            assert math.isnan(auc(scores, labels))
            continue
        naive = sum((p > q) + 0.5 * (p == q) for p, q in product(pos, neg)) / (len(pos) * len(neg))
        assert auc(scores, labels) == pytest.approx(naive)
    assert auc([0.1, 0.9], [False, True]) == 1.0 and auc([0.9, 0.1], [False, True]) == 0.0


def test_grouped_auc_counts_pairs_within_a_group_only():
    from r1lab.prm.model import grouped_auc

    # Group a is easy (high scores), group b hard: a global AUC rewards that, a grouped one does not.
    scores = [0.9, 0.8, 0.2, 0.1]
    labels = [True, False, True, False]
    assert auc(scores, labels) == 0.75
    assert grouped_auc(scores, labels, ["a", "a", "b", "b"]) == 1.0
    assert grouped_auc([0.8, 0.9, 0.1, 0.2, 0.5], labels + [True], ["a", "a", "b", "b", "c"]) == 0.0
    rng = random.Random(2)
    for _ in range(30):  # against the pairwise definition
        n = rng.randint(2, 10)
        s = [rng.choice([0.1, 0.5, 0.9]) for _ in range(n)]
        y = [rng.random() < 0.5 for _ in range(n)]
        g = [rng.randint(0, 2) for _ in range(n)]
        pairs = [(s[i] > s[j]) + 0.5 * (s[i] == s[j]) for i in range(n) for j in range(n) if y[i] and not y[j] and g[i] == g[j]]
        got = grouped_auc(s, y, g)
        assert (math.isnan(got) and not pairs) or got == pytest.approx(sum(pairs) / len(pairs))


def test_aggregate():
    assert aggregate([0.9, 0.4, 0.8], 0.7, "min") == 0.4
    assert aggregate([0.5, 0.5], 0.5, "product") == pytest.approx(0.125)
    assert aggregate([0.1], 0.7, "last") == 0.7
    assert aggregate([], 0.3, "min") == 0.3  # an answer-only completion: its answer step
    with pytest.raises(ValueError):
        aggregate([0.1], 0.2, "max")


def test_encode_marks_the_last_token_of_each_step():
    tok = CharTokenizer.build()
    c = "<think>7+5=12\n12*2=24</think><answer>24</answer>"
    e = encode(tok, "7+5*2", c)
    text = [tok.decode([i]) for i in e.ids]
    assert [text[i] for i in e.step_ends] == ["2", "4"] and text[e.final] == "</answer>"
    assert tok.decode(e.ids[: e.step_ends[0] + 1]).endswith("<think>7+5=12")
    assert e.ids == tok.prompt_ids("7+5*2") + tok.encode(c)  # cutting at step ends changes nothing here
    assert encode(tok, "q", "<think></think><answer>1</answer>").step_ends == []


def chain_rows(n: int, seed: int, split: str = "train") -> list[dict]:
    """Hand-made label rows: worked chain solutions, half with one step corrupted (+1), labelled by
    the exact check; hard = soft = exact, so a PRM can learn the rule from the data."""
    task, rng = get_task("chain"), random.Random(seed)
    rows = []
    for ex in task.examples(split, n, seed):
        steps = ex.solution.split("\n")
        answer = ex.answer
        if rng.random() < 0.5:
            k = rng.randrange(len(steps))
            lhs, value = steps[k].split("=")
            steps[k] = f"{lhs}={int(value) + 1}"
            answer = str(int(answer) + 1) if k == len(steps) - 1 else answer
        completion = f"<think>{chr(10).join(steps)}</think><answer>{answer}</answer>"
        exact = exact_labels(task, ex, steps)
        rows.append({"task": "chain", "split": split, "question": ex.question, "gold": ex.answer, "completion": completion,
                     "steps": steps, "correct": task.check(answer, ex) == 1.0, "exact": exact, "hard": exact,
                     "soft": [float(x) for x in exact], "rollouts": 0, "marker": ""})
    return rows


def write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_prm_train_lowers_the_loss_and_the_scorer_reads_it(tmp_path):
    data = write_rows(tmp_path / "train.jsonl", chain_rows(24, 0))
    run = tmp_path / "prm"
    argv = ["prm", "train", "--prm.data", data, "--out", str(run), *MODEL, "--prm.steps", "40", "--prm.lr", "3e-3",
            "--prm.batch_size", "8", "--prm.warmup_steps", "2", "--save_every", "40"]
    assert main(argv) == 0
    losses = [r["prm/loss"] for r in read_metrics(run)]
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    scorer = load_scorer(run)
    c = "<think>7+5=12\n12*2=24\n24-3=21</think><answer>21</answer>"
    scores = scorer("7+5*2-3", c)
    assert len(scores) == 3 and all(0 < s < 1 for s in scores)
    steps, final = scorer.score_batch([("7+5*2-3", c)])[0]
    assert steps == pytest.approx(scores) and 0 < final < 1
    assert scorer("1+1", "<think></think><answer>2</answer>") == []
    # eval on held-out rows writes its metrics
    held = write_rows(tmp_path / "test.jsonl", chain_rows(8, 1, "test"))
    assert main(["prm", "eval", "--init", str(run), "--prm.data", held, "--threads", "1"]) == 0
    result = json.loads((run / "eval" / "prm-test.json").read_text())
    assert result["steps_judged"] == sum(len(r["steps"]) for r in chain_rows(8, 1, "test"))
    assert 0.0 <= result["step_accuracy"] <= 1.0 and 0.0 <= result["step_auc"] <= 1.0


def test_orm_trains_on_the_outcome_only(tmp_path):
    data = write_rows(tmp_path / "train.jsonl", chain_rows(6, 0))
    run = tmp_path / "orm"
    assert main(["prm", "train", "--prm.data", data, "--prm.kind", "orm", "--out", str(run), *MODEL, "--prm.steps", "2"]) == 0
    assert [r["prm/labelled_positions"] for r in read_metrics(run)] == [6, 6]  # one label per completion
    assert load_scorer(run).kind == "orm"


def test_prm_bad_input_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1", "completion": "<think>1+1=2</think><answer>2</answer>", "correct": true, "hard": [true, false]}\n')
    cases = [
        (["prm"], "needs an action"),
        (["prm", "fit"], "needs an action"),
        (["prm", "train", "--out", str(tmp_path / "r")], "--prm.data"),
        (["prm", "train", "--prm.data", str(bad), "--out", str(tmp_path / "r")], f"{bad}:1: \"hard\" must be null or a list of 1"),
        (["prm", "train", "--prm.data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "r")], "no such file"),
        (["prm", "eval", "--prm.data", str(bad)], "--init"),
        (["prm", "eval", "--init", str(tmp_path), "--prm.data", write_rows(tmp_path / "ok.jsonl", chain_rows(2, 0))], "no checkpoint"),
        (["prm", "label", "--out", "x.jsonl"], "--init"),
        (["prm", "train", "--prm.labels", "fuzzy"], "prm.labels"),
        (["eval", "--eval.rerank", "best:x"], "eval.rerank"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    rows = chain_rows(2, 0)
    rows[0]["hard"] = None
    data = write_rows(tmp_path / "nohard.jsonl", rows)
    assert main(["prm", "train", "--prm.data", data, "--out", str(tmp_path / "r2"), *MODEL]) == 2
    assert "no \"hard\" labels" in capsys.readouterr().err


@pytest.mark.slow  # five r1lab processes: ~90 s on the shared 2-core machine
def test_prm_train_killed_at_random_steps_resumes_bit_identical(tmp_path):
    import signal

    from test_resume import KILL_POINTS, survive_kills

    data = write_rows(tmp_path / "train.jsonl", chain_rows(12, 0))
    total = max(12, 3 * KILL_POINTS + 4)
    argv = ["--prm.data", data, *MODEL, "--prm.steps", str(total), "--prm.batch_size", "4", "--save_every", "2", "--keep_checkpoints", "1000"]
    reference = tmp_path / "reference"
    assert main(["prm", "train", "--out", str(reference), *argv]) == 0
    results = survive_kills(["prm", "train", "--out", str(tmp_path / "run"), *argv], tmp_path / "run", reference, total,
                            [signal.SIGKILL] * KILL_POINTS, tmp_path)
    assert all(results), results


# --- best-of-N reranking ------------------------------------------------------------------------


def test_best_of_k_matches_enumerating_every_subset():
    from itertools import combinations

    from r1lab.evaluate import best_of_k

    rng = random.Random(3)
    for _ in range(60):
        n = rng.randint(1, 7)
        scores = [rng.choice([0.1, 0.4, 0.4, 0.8]) for _ in range(n)]
        correct = [rng.random() < 0.4 for _ in range(n)]
        for k in range(1, n + 1):
            credit = []
            for subset in combinations(range(n), k):
                top = max(scores[i] for i in subset)
                tied = [correct[i] for i in subset if scores[i] == top]
                credit.append(sum(tied) / len(tied))  # a uniformly random tie-break
            assert best_of_k(scores, correct, k) == pytest.approx(sum(credit) / len(credit))
    assert best_of_k([0.9, 0.1, 0.5], [True, False, False], 3) == 1.0
    assert best_of_k([0.9, 0.1, 0.5], [True, False, False], 1) == pytest.approx(1 / 3)  # k = 1: pass@1


def test_eval_rerank_adds_metrics_and_leaves_the_others_unchanged(base_run, tmp_path, capsys):
    data = write_rows(tmp_path / "train.jsonl", chain_rows(6, 0))
    run = tmp_path / "prm"
    assert main(["prm", "train", "--init", str(base_run), "--prm.data", data, "--out", str(run), *MODEL, "--prm.steps", "2"]) == 0
    ev = overrides({"eval": TINY["eval"], "threads": 1})
    plain, ranked = tmp_path / "plain", tmp_path / "ranked"
    assert main(["eval", "--init", str(base_run), "--out", str(plain), *ev]) == 0
    assert main(["eval", "--init", str(base_run), "--out", str(ranked), *ev, "--eval.rerank", f"prm:{run}", "--eval.rerank_aggregate", "product"]) == 0
    a = json.loads(next(plain.glob("*.json")).read_text())
    b = json.loads(next(ranked.glob("*.json")).read_text())
    extra = {k: v for k, v in b["metrics"].items() if k not in a["metrics"]}
    assert sorted(extra) == ["rerank_prm_product@1", "rerank_prm_product@4"]
    assert {k: b["metrics"][k] for k in a["metrics"]} == a["metrics"]  # off or on, the same samples and numbers
    assert extra["rerank_prm_product@1"] == pytest.approx(a["metrics"]["pass@1"])  # best of one sample is pass@1
    assert 0.0 <= extra["rerank_prm_product@4"] <= a["metrics"]["pass@4"] + 1e-12  # never beats the oracle
    capsys.readouterr()
    assert main(["eval", "--init", str(base_run), "--out", str(ranked), *ev, "--eval.rerank", f"orm:{run}"]) == 2
    assert "holds a prm reward model, not orm" in capsys.readouterr().err


def test_prm_label_writes_consistent_rows(base_run, tmp_path, capsys):
    out = tmp_path / "labels.jsonl"
    argv = ["prm", "label", "--init", str(base_run), "--out", str(out), "--threads", "1", "--prm.n_problems", "3",
            "--prm.traces_per_problem", "2", "--prm.rollouts", "3", "--prm.sample.max_new_tokens", "24"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and len({r["question"] for r in rows}) == 3
    for r in rows:
        assert r["steps"] == split_steps(r["completion"]) and len(r["exact"]) == len(r["steps"])
        assert len(r["soft"]) == len(r["hard"]) == len(r["steps"])
        assert all(s in (0, 1 / 3, 2 / 3, 1) or abs(3 * s - round(3 * s)) < 1e-9 for s in r["soft"])
        assert r["hard"] == [s > 0 for s in r["soft"]]
    assert "wrote" in capsys.readouterr().out
    again = tmp_path / "again.jsonl"
    assert main([*argv[:5], str(again), *argv[6:]]) == 0
    assert again.read_text() == out.read_text()  # seeded
    exact_only = tmp_path / "exact.jsonl"
    assert main([*argv[:5], str(exact_only), *argv[6:], "--prm.rollouts", "0", "--prm.split", "test"]) == 0
    rows = [json.loads(line) for line in exact_only.read_text().splitlines()]
    assert all(r["hard"] is None and r["soft"] is None and r["split"] == "test" for r in rows)
