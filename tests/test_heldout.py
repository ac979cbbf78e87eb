"""Held-out means held out (issue 7): one regression test per finding, each with its own idea of
"the same problem" written here, independently of the tasks' ``key`` methods, so that it fails on
the question-hash splits that leaked."""

from __future__ import annotations

import json
import random
import re

import pytest

from conftest import TINY, overrides
from r1lab.cli import main
from r1lab.evaluate import ProblemSamples, summarize
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task
from r1lab.tasks.base import near_duplicate_key


def _twins(task_name: str, same, n_train: int = 6000, n_test: int = 300) -> tuple[int, int, list]:
    """(test problems with a train twin under ``same``, test problems, a few twins)."""
    task = get_task(task_name)
    rng = random.Random(11)
    train = {same(ex): ex for ex in (task.sample(rng, "train") for _ in range(n_train))}
    test = task.examples("test", n_test, seed=5)
    hits = [(ex, train[same(ex)]) for ex in test if same(ex) in train]
    return len(hits), len(test), hits[:3]


def test_code_test_functions_never_occur_in_training():
    # Finding 1: the split hashed the question, whose example calls are random, so the same
    # function (spec line = family + parameters) sat in both splits with the same reference code.
    spec = lambda ex: ex.question.split("\n")[1]  # noqa: E731
    hits, n, some = _twins("code", spec, n_train=4000, n_test=100)
    assert hits == 0, f"{hits}/{n} code test problems share their spec with a train problem, e.g. {some}"
    same_code = lambda ex: ex.answer  # noqa: E731
    assert _twins("code", same_code, n_train=4000, n_test=100)[0] == 0


def test_countdown_test_problems_have_no_permuted_twin_in_training():
    # Finding 2: "Use 3 7 2 to make 23" and "Use 7 2 3 to make 23" were split apart (96.5% leaked).
    def multiset(ex):
        numbers, target = re.fullmatch(r"Use (.*) to make (\d+)", ex.question).groups()
        return tuple(sorted(map(int, numbers.split()))), int(target)

    hits, n, some = _twins("countdown", multiset)
    assert hits == 0, f"{hits}/{n} countdown test problems have a permuted train twin, e.g. {some}"


def test_sort_test_lists_are_no_permutation_of_a_train_list():
    # Finding 2: 12% of test lists were a train list's multiset.
    multiset = lambda ex: tuple(sorted(ex.question.split()[1:]))  # noqa: E731
    hits, n, some = _twins("sort", multiset)
    assert hits == 0, f"{hits}/{n} sort test lists are permutations of train lists, e.g. {some}"


def test_chain_test_problems_have_no_swapped_operand_twin_in_training():
    # Finding 3: 5+7*2-3 and 7+5*2-3 (same later steps, same answer) were split apart.
    def swapped(ex):
        m = re.fullmatch(r"(\d)([-+*])(\d)(.*)", ex.question)
        a, op, b, rest = m.groups()
        if op in "+*":
            a, b = sorted((a, b))
        return a, op, b, rest

    hits, n, some = _twins("chain", swapped)
    assert hits == 0, f"{hits}/{n} chain test problems have a swapped-operand train twin, e.g. {some}"


def test_hops_test_paths_are_never_followed_in_training():
    def path(ex):
        table, query = ex.question.split("|")
        pointer = dict(pair.split(">") for pair in table.split())
        here, out = query[0], [query[0]]
        for _ in range(int(query[1:])):
            here = pointer[here]
            out.append(here)
        return tuple(out)

    assert _twins("hops", path, n_train=3000, n_test=150)[0] == 0


@pytest.mark.parametrize("name", ["chain", "countdown", "sort", "hops", "code"])
def test_no_near_duplicate_twins_either(name):
    # The task-independent key of check-task: exact answer + sorted lower-cased question words.
    hits, n, some = _twins(name, near_duplicate_key, n_train=3000, n_test=100)
    assert hits == 0, some


def test_every_key_lands_in_one_split_only():
    # The split is a function of the key: twins cannot straddle it.
    for name in ("chain", "countdown", "sort", "hops", "code"):
        task, rng = get_task(name), random.Random(3)
        split_of_key: dict[str, str] = {}
        for _ in range(3000):
            ex = task.generate(rng)
            assert split_of_key.setdefault(task.key(ex), task.split_of(ex)) == task.split_of(ex), (name, ex)


def test_humaneval_refuses_the_train_split(capsys, tmp_path):
    # Finding 4: sample() ignored the split, so a run could train on the canonical solutions.
    task = get_task("humaneval")
    with pytest.raises(ValueError, match="no train split"):
        task.sample(random.Random(0), "train")
    assert task.sample(random.Random(0), "test").question in {p["prompt"] for p in task.problems}
    code = main(["pretrain", "--task", "humaneval", "--out", str(tmp_path / "he"), *overrides(TINY)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "humaneval has no train split" in err[0]
    assert not (tmp_path / "he" / "pretrain" / "checkpoints").exists()


GYM_DATASETS = ["basic_arithmetic", "spell_backward", "leg_counting", "chain_sum"]


@pytest.fixture(scope="module")
def gym_tasks():
    return {name: get_task(f"gym:{name}") for name in GYM_DATASETS}


@pytest.mark.parametrize("name", GYM_DATASETS)
def test_gym_partial_credit_is_never_counted_correct(gym_tasks, name):
    # Finding 5: score_answer gives partial credit (0.92 for the gold with a trailing 0, and
    # 1.0000000000000002 for spell_backward's gold plus a letter): none of it may count as correct.
    task = gym_tasks[name]
    examples = task.pool("test")[:40]
    graded = 0
    for ex in examples:
        assert task.check(ex.answer, ex) == 1.0 and task.check(f"  {ex.answer}\n", ex) == 1.0
        for wrong in (ex.answer + "0", ex.answer + "a", f"{ex.answer} {ex.answer}", ex.answer[:-1], "0" + ex.answer):
            if not wrong.strip() or wrong.strip() == ex.answer.strip():
                continue
            assert task.check(wrong, ex) == 0.0, (name, ex.answer, wrong)
            s = task.score(f"<think>x</think><answer>{wrong}</answer>", ex, RewardWeights())
            assert s.correct == 0.0 and s.reward == pytest.approx(0.1)
            graded += s.partial > 0
    assert graded > 0  # the verifier's partial credit is still there, as its own component


def test_gym_partial_credit_does_not_reach_pass_at_k(gym_tasks):
    task = gym_tasks["basic_arithmetic"]
    ex = next(e for e in task.pool("test") if len(e.answer) > 1)
    completions = [f"<think></think><answer>{ex.answer}0</answer>", f"<think></think><answer>{ex.answer} {ex.answer}</answer>"]
    scores = [task.score(c, ex, RewardWeights(partial=1.0)) for c in completions]
    assert scores[0].partial > 0.5  # what score_answer says ...
    ps = ProblemSamples(ex.question, ex.answer, completions, scores, [c[22:-9] for c in completions], [5, 5])
    result = summarize("gym", "test", [ps], [1, 2], temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    assert result.metrics["pass@1"] == 0.0 and result.metrics["pass@2"] == 0.0  # ... is not accuracy
    assert result.metrics["maj@2"] == 0.0 and result.metrics["correct_rate"] == 0.0
    spell = gym_tasks["spell_backward"]
    ex = spell.pool("test")[0]
    s = spell.score(f"<think></think><answer>{ex.answer}x</answer>", ex, RewardWeights())
    assert s.correct == 0.0  # score_answer says 1.0000000000000002 for some words


def test_gym_training_pool_follows_the_seed(monkeypatch, tmp_path):
    # Finding 6: GymTask(name) never received --seed.
    a, b = get_task("gym:spell_backward", seed=0), get_task("gym:spell_backward", seed=1)
    assert a.pool("test") == b.pool("test") and a.pool("train") != b.pool("train")
    seen = []
    import r1lab.recipes.pretrain as pretrain_recipe

    real = pretrain_recipe.get_task
    monkeypatch.setattr(pretrain_recipe, "get_task", lambda name, seed=0: seen.append(seed) or real(name, seed=seed))
    cfg = {**TINY, "pretrain": {**TINY["pretrain"], "steps": 1}}
    assert main(["pretrain", "--task", "gym:spell_backward", "--seed", "7", "--out", str(tmp_path / "g"), *overrides(cfg)]) == 0
    assert seen == [7]


def test_gym_train_pool_holds_no_near_twin_of_a_test_problem(gym_tasks):
    for task in gym_tasks.values():
        test_keys = {near_duplicate_key(ex) for ex in task.pool("test")}
        assert not [ex for ex in task.pool("train") if near_duplicate_key(ex) in test_keys]


def _tiny_zero(tmp_path, *extra):
    cfg = {**TINY, "rl": {**TINY["rl"], "eval_every": 0}}
    return main(["zero", "--out", str(tmp_path / "z"), *overrides(cfg), *extra])


def test_zero_resume_refuses_other_settings_and_redoes_a_stale_evaluation(tmp_path, capsys):
    # Finding 8: --resume reused eval/base.json whatever it was measured with, and overwrote
    # config.yaml without looking at it.
    assert _tiny_zero(tmp_path) == 0
    capsys.readouterr()
    assert _tiny_zero(tmp_path, "--resume", "--eval.n_samples", "2", "--eval.ks", "[1, 2]") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.n_samples (4 -> 2)" in err[0] and "eval.ks" in err[0]
    # Keys that only change logging or speed may differ.
    assert _tiny_zero(tmp_path, "--resume", "--save_every", "3", "--log_every", "3") == 0
    # A base.json measured with other settings (an older run) is measured again, not reused.
    base = tmp_path / "z" / "eval" / "base.json"
    data = json.loads(base.read_text())
    data["n_problems"], data["metrics"]["pass@1"] = 99, 0.123
    base.write_text(json.dumps(data))
    capsys.readouterr()
    assert _tiny_zero(tmp_path, "--resume") == 0
    out = capsys.readouterr().out
    assert "measured with other settings: n_problems (99 -> 3)" in out
    fresh = json.loads(base.read_text())
    assert fresh["n_problems"] == 3 and fresh["metrics"]["pass@1"] != 0.123


def test_zero_never_calls_the_train_split_held_out(tmp_path, capsys):
    assert _tiny_zero(tmp_path, "--eval.split", "train") == 0
    out = capsys.readouterr().out
    assert "held-out" not in out.replace("held-out pass@1", "")  # the RL curve evaluates the test split
    assert "train split (NOT held out" in out


def test_check_task_passes_a_clean_task_and_flags_a_leaky_split(monkeypatch, capsys):
    small = ["--check.train_samples", "3000", "--check.test_samples", "300", "--check.corpus_steps", "10",
             "--pretrain.batch_size", "8", "--rl.steps", "5", "--eval.n_problems", "50", "--threads", "1"]
    assert main(["check-task", "countdown", *small]) == 0
    out = capsys.readouterr().out
    assert re.search(r"pretraining corpus\s+\d+\s+\d+\s+0\s+0\s+0\s+0", out), out
    assert "no test problem has a twin" in out
    # The split as it was before issue 7 (a hash of the question text) leaks permuted twins.
    from r1lab.tasks.base import ProceduralTask, stable_hash
    from r1lab.tasks.countdown import CountdownTask

    monkeypatch.setattr(CountdownTask, "split_of", lambda self, ex: "test" if stable_hash(ex.question) % 10 == 0 else "train")
    assert main(["check-task", "countdown", *small]) == 1
    captured = capsys.readouterr()
    assert "LEAK" in captured.err and "twin: test 'Use" in captured.out
    assert issubclass(CountdownTask, ProceduralTask)


def test_check_task_catches_near_duplicates_in_a_user_file(tmp_path, capsys):
    from r1lab.tasks.base import stable_hash

    # Two rows that differ only in case and word order, with the same answer, in different splits.
    rows, i = [], 0
    while len(rows) < 2:
        q = f"what is {i} plus one"
        twin = f"What is one plus {i}"
        if (stable_hash(q) % 10_000 < 1000) != (stable_hash(twin) % 10_000 < 1000):
            rows = [{"question": q, "answer": str(i + 1)}, {"question": twin, "answer": str(i + 1)}]
        i += 1
    rows += [{"question": f"filler {j}", "answer": "x"} for j in range(30)]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code = main(["check-task", f"jsonl:{path}", "--check.train_samples", "500", "--check.test_samples", "200",
                 "--check.corpus_steps", "2", "--rl.steps", "2", "--eval.n_problems", "1"])
    captured = capsys.readouterr()
    assert code == 1 and "LEAK" in captured.err
    assert re.search(r"train split\s+500\s+\d+\s+0\s+0(?:\.0*)?\s+1\s", captured.out), captured.out


def test_check_task_reports_humaneval_without_a_train_split(capsys):
    assert main(["check-task", "humaneval", "--check.test_samples", "3000", "--eval.n_problems", "10"]) == 0
    out = capsys.readouterr().out
    assert "164 distinct test problems" in out and "refused" in out
