"""Any reasoning-gym task end to end: context sizing and early validation, whole pretraining
documents, the pre-RL signal warning, worked solutions from metadata, the curriculum rule,
pass-rate curation, and curated sets round-tripping through ``jsonl:``."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from conftest import TINY, overrides
from r1lab import curriculum
from r1lab import config as config_lib
from r1lab.cli import main
from r1lab.config import Config
from r1lab.recipes import context, pretrain, prompts
from r1lab.tasks import Example, get_task
from r1lab.tasks.base import parse_step
from r1lab.tasks.gym_solutions import SOLVERS
from r1lab.tasks.jsonl import JsonlTask
from r1lab.tokenizer import CharTokenizer

TOK = CharTokenizer.build()


# --- context sizing and early validation ------------------------------------------------------


def test_default_task_keeps_its_context():
    """chain needs 25 + 64 tokens: r1lab zero's default model keeps max_seq_len 128 (same numbers)."""
    n, m = context.size(Config(), get_task("chain"), TOK)
    assert n == 128 and m.prompt + 64 <= 128


def test_long_prompt_task_sizes_itself():
    task = get_task("gym:letter_counting")
    n, m = context.size(Config(), task, TOK)
    longest = max(len(TOK.prompt_ids(ex.question)) for split in ("train", "test") for ex in task.pool(split))
    need = max(longest + 64, m.document)  # worked solutions: the longest corpus document must fit whole too
    assert m.prompt == longest > 128 and m.document > 0 and n % context.ROUND == 0 and need <= n < need + context.ROUND


def test_explicit_short_context_fails_before_training(tmp_path, capsys):
    out = tmp_path / "p"
    code = main(["pretrain", "--task", "gym:basic_arithmetic", "--out", str(out), *overrides(TINY), "--model.max_seq_len", "96"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "model.max_seq_len is 96" in err and "max_new_tokens=24" in err and "--model.max_seq_len 256" in err
    assert not (out / "checkpoints").exists()  # nothing trained


@pytest.mark.slow
def test_cli_sizes_unset_context_and_records_it(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["pretrain", "--task", "gym:basic_arithmetic", "--out", str(out), *overrides(TINY), "--pretrain.steps", "1"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())["model"]["max_seq_len"]
    expected, _ = context.size(config_lib.build(TINY), get_task("gym:basic_arithmetic"), TOK)
    assert saved == expected > 128 and "sized from gym:basic_arithmetic" in capsys.readouterr().out


def test_loaded_model_too_short_fails_before_sampling(base_run, capsys):
    """eval of a 128-token model on a task whose prompts need more: one line, exit 2."""
    code = main(["eval", "--init", str(base_run), "--task", "gym:letter_counting", *overrides({"eval": TINY["eval"]})])
    err = capsys.readouterr().err
    assert code == 2 and "eval.sample.max_new_tokens=24" in err and "model.max_seq_len is 128" in err


def test_pretraining_never_cuts_a_document(tmp_path):
    """A document longer than a row is skipped, never truncated: every row is whole documents."""
    rows = [{"question": "q" * 150, "answer": "1"}] + [{"question": f"{i}+{i}", "answer": str(2 * i)} for i in range(30)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = JsonlTask(path)
    ids, mask = pretrain.batch(TOK, task, random.Random(0), rows=20, worked_fraction=0.0, seq_len=64)
    for r in range(ids.shape[0]):
        row = ids[r][mask[r]].tolist()
        assert row[0] == TOK.bos_id and row[-1] == TOK.eos_id  # starts and ends on a document boundary
        assert row.count(TOK.bos_id) == row.count(TOK.eos_id)
        assert "qqqq" not in TOK.decode(row)
    only_long = tmp_path / "long.jsonl"
    only_long.write_text("".join(json.dumps({"question": "q" * 150 + str(i), "answer": "1"}) + "\n" for i in range(3)))
    with pytest.raises(Exception, match="longer than model.max_seq_len=64"):
        pretrain.batch(TOK, JsonlTask(only_long), random.Random(0), rows=2, worked_fraction=0.0, seq_len=64)


# --- the pre-RL signal warning --------------------------------------------------------------


class ToyJudge:
    """A policy with known per-question pass rates: a problem of rate r is right in round(r*n) of n."""

    rates: dict[str, float] = {}

    def __init__(self, *args, **kwargs):
        self.samples = self.tokens = 0

    def __call__(self, examples, n):
        self.samples += len(examples) * n
        return [[j < round(self.rates.get(ex.question, 0.0) * n) for j in range(n)] for ex in examples]


@pytest.mark.parametrize("rate, fires", [(0.0, True), (0.25, False)])
def test_signal_warning_fires_only_when_base_is_never_right(monkeypatch, capsys, rate, fires):
    task = get_task("chain")
    cfg = config_lib.build({"data": {"signal_problems": 20}})
    monkeypatch.setattr(ToyJudge, "rates", {ex.question: rate for ex in task.examples("train", 20, seed=cfg.eval.seed + 1)})
    monkeypatch.setattr(prompts, "ModelJudge", ToyJudge)
    report = prompts.signal_check(cfg, None, TOK, task, "zero")
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and report["low_signal"] is fires and ("warning" in out) is fires
    assert report["pass@8"] == pytest.approx(0.0 if fires else 1.0)
    if fires:
        assert all(lever in out for lever in ("curriculum", "curation", "worked solutions", "budget"))


def test_rl_flag_warns_on_a_never_right_base(base_run, tmp_path, capsys):
    """A 6-step base is never right: `r1lab rl --data.signal_check` says so before training."""
    args = ["rl", "--init", str(base_run), "--out", str(tmp_path / "rl"), *overrides(TINY), "--rl.steps", "0",
            "--data.signal_check", "--data.signal_problems", "4"]
    assert main(args) == 0
    assert "warning: RL has little to select" in capsys.readouterr().out
    assert json.loads((tmp_path / "rl" / "signal.json").read_text())["pass@8"] == 0.0


# --- dataset options (gym:NAME@key=value,...) ----------------------------------------------


def test_options_make_a_harder_variant_for_both_splits():
    default, hard = get_task("gym:letter_counting"), get_task("gym:letter_counting@min_words=30,max_words=38")
    words = lambda ex: len(ex.question.split('"')[-2].split())  # noqa: E731 - the quoted text
    assert max(words(ex) for ex in default.pool("train")) <= 15
    for split in ("train", "test"):
        assert all(30 <= words(ex) <= 38 for ex in hard.pool(split))
    assert hard.name == "gym:letter_counting@min_words=30,max_words=38" and hard.options == {"min_words": 30, "max_words": 38}
    ex = hard.pool("test")[0]
    assert hard.check(ex.answer, ex) == 1.0 and ex.solution  # scored by its own entry; worked solutions still written
    assert not {hard.key(e) for e in hard.pool("test")} & {hard.key(e) for e in hard.pool("train")}


def test_option_values_are_typed():
    from r1lab.tasks.gym import parse_spec

    assert parse_spec("chain_sum@max_terms=3,allow_negation=true") == ("chain_sum", {"max_terms": 3, "allow_negation": True})
    assert parse_spec("gcd") == ("gcd", {})


@pytest.mark.parametrize("spec, message", [
    ("letter_counting@colour=3", "unknown option 'colour'; its reasoning-gym config has max_words, min_words"),
    ("letter_counting@min_words=30,max_words=3", "reasoning-gym rejects the options: max_words must be >= min_words"),
    ("letter_counting@min_words", "option 'min_words' is not key=value"),
])
def test_bad_options_are_one_line_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        get_task(f"gym:{spec}")


def test_bad_option_on_the_cli_exits_2_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--task", "gym:letter_counting@colour=3", "--out", str(out), *overrides(TINY)]) == 2
    err = capsys.readouterr().err
    assert "unknown option 'colour'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# --- worked solutions -----------------------------------------------------------------------


@pytest.mark.parametrize("dataset", sorted(SOLVERS))
def test_worked_solutions_lead_to_the_answer(dataset):
    task = get_task(f"gym:{dataset}")
    pool = task.pool("train")[:100]
    with_solution = [ex for ex in pool if ex.solution]
    assert len(with_solution) >= 90
    for ex in with_solution:
        last = parse_step(ex.solution.splitlines()[-1].split(": ")[-1])
        if dataset in ("basic_arithmetic", "chain_sum", "leg_counting") and last is not None:
            assert str(last[3]) == ex.answer or ex.answer.startswith("-")  # parse_step reads non-negative operands only
    assert not get_task("gym:spell_backward").pool("train")[0].solution  # no solver: no solution


# --- curriculum -----------------------------------------------------------------------------


def test_curriculum_moves_up_and_down_on_a_scripted_sequence():
    c = curriculum.Curriculum(max_level=2, up=0.7, down=0.1, window=2)
    script = [0.8, 0.6, 0.9, 0.8, 0.9, 0.9, 0.9, 0.9, 0.0, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0]
    levels = [c.observe(r) for r in script]
    # window (0.8, 0.6) mean 0.7 -> up; (0.9, 0.8) -> up; at the top it stays; two lows -> down, down, floor
    assert levels == [0, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0]
    restored = curriculum.Curriculum(max_level=2, up=0.7, down=0.1, window=2)
    restored.load(json.loads(json.dumps(c.state())))
    assert restored == c


def test_curriculum_levels_of_a_gym_dataset_are_harder_and_held_out():
    task = get_task("gym:chain_sum")
    easy, hard = task.level_pool(0), task.level_pool(task.levels())
    terms = lambda ex: ex.question.count(" + ") + ex.question.count(" - ")  # noqa: E731
    assert max(map(terms, easy)) == 1 and sum(map(terms, hard)) / len(hard) > 3  # level 0: two terms; the top: up to 12
    test_keys = {task.key(ex) for ex in task.pool("test")}
    assert not test_keys & {task.key(ex) for ex in easy + hard}
    assert task.check(hard[0].answer, hard[0]) == 1.0  # scored by the dataset's own entry


def test_a_level_pool_does_not_depend_on_the_levels_generated_before_it():
    # A run resumed at level 1 has not generated levels 2 and 3 as the uninterrupted run did.
    walked, direct = get_task("gym:chain_sum"), get_task("gym:chain_sum")
    for level in (3, 2):
        walked.level_pool(level, size=200)
    assert walked.level_pool(1, size=200) == direct.level_pool(1, size=200)


# --- pass-rate curation ---------------------------------------------------------------------


def test_curation_keeps_only_prompts_in_the_band(monkeypatch):
    task = get_task("chain")
    cfg = config_lib.build({"data": {"prompts": "pass_rate", "candidates": 40, "band_low": 0.2, "band_high": 0.8}})
    rng = random.Random(cfg.seed + 17)
    candidates = [task.sample(rng, "train") for _ in range(40)]
    rates = {ex.question: [0.0, 0.125, 0.25, 0.5, 0.75, 0.875, 1.0][i % 7] for i, ex in enumerate(candidates)}
    monkeypatch.setattr(ToyJudge, "rates", rates)
    monkeypatch.setattr(prompts, "ModelJudge", ToyJudge)
    source = prompts.make_source(cfg, task, TOK, 128)
    source.before_step(0, policy=None)
    assert source.pool and all(0.2 <= rates[ex.question] <= 0.8 for ex in source.pool)
    assert {ex.question for ex in source.pool} == {q for q, r in rates.items() if 0.2 <= r <= 0.8}
    m = source.metrics()
    assert m["curation/estimate_samples"] == len(set(rates)) * 8 and m["curation/refreshes"] == 1
    source.before_step(5, policy=None)  # not due: no new estimate
    assert source.metrics()["curation/refreshes"] == 1
    drawn = source.draw(random.Random(0), 50)
    assert all(0.2 <= rates[ex.question] <= 0.8 for ex in drawn)


@pytest.mark.slow
def test_curated_set_round_trips_through_jsonl(base_run, tmp_path, capsys):
    out = tmp_path / "curated.jsonl"
    args = ["curate", "--init", str(base_run), "--task", "chain", "--out", str(out), "--data.curate_problems", "6",
            "--data.samples", "2", "--data.band_low", "0", "--data.band_high", "1", "--rl.sample.max_new_tokens", "16", "--threads", "1"]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    source = {ex.question: ex for ex in get_task("chain").examples("train", 6, seed=0)}
    assert len(rows) == 6 and all(r["question"] in source and r["answer"] == source[r["question"]].answer for r in rows)
    assert all(r["stats"]["samples"] == 2 and 0 <= r["stats"]["pass_rate"] <= 1 for r in rows)
    task = get_task(f"jsonl:{out}")
    back = {ex.question: ex for split in ("train", "test") for ex in task.pool(split)}
    assert back == {q: Example(q, source[q].answer, source[q].solution) for q in back} and len(back) == 6
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["kept"] == 6 and summary["estimate_samples"] == 12
    assert main(["eval", "--init", str(base_run), "--task", f"jsonl:{out}", "--out", str(tmp_path / "ev"), *overrides({"eval": TINY["eval"]}),
                 "--eval.n_problems", "1"]) == 0


# --- resume: the source's state rides in the checkpoint -------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("prompts_mode, extra", [("curriculum", ["--data.start_level", "2", "--data.level_down", "0", "--data.window", "2"]),
                                                 ("pass_rate", ["--data.candidates", "3", "--data.samples", "2", "--data.refresh_every", "3"])])
def test_rl_with_a_prompt_source_resumes_bit_identically(base_run, tmp_path, prompts_mode, extra):
    from test_resume import rows_by_step, same_checkpoint

    # No periodic evaluation and no monitor probe: both also run at a run's last step, which moves
    # when a 2-step run is resumed to 4 steps; the prompt source's state is what is under test.
    args = ["rl", "--init", str(base_run), "--task", "gym:chain_sum", *overrides(TINY), "--rl.eval_every", "0", "--rl.monitor.enabled", "false",
            "--rl.sample.max_new_tokens", "8", "--data.prompts", prompts_mode, *extra, "--keep_checkpoints", "10"]
    assert main([*args, "--out", str(tmp_path / "whole"), "--rl.steps", "4"]) == 0
    assert main([*args, "--out", str(tmp_path / "cut"), "--rl.steps", "2"]) == 0
    assert main([*args, "--out", str(tmp_path / "cut"), "--rl.steps", "4", "--resume"]) == 0
    whole, cut = rows_by_step(tmp_path / "whole"), rows_by_step(tmp_path / "cut")
    assert whole == cut
    assert same_checkpoint(tmp_path / "whole" / "checkpoints" / "step_4", tmp_path / "cut" / "checkpoints" / "step_4")
    if prompts_mode == "curriculum":  # never right: down a level after each window of two steps
        assert [whole[s]["curriculum/level"] for s in (1, 2, 3, 4)] == [2, 1, 1, 0]
    else:  # a refresh at steps 0 and 3, each paid for
        assert [whole[s]["curation/refreshes"] for s in (1, 2, 3, 4)] == [1, 1, 1, 2]


@pytest.mark.parametrize("args, culprit", [
    (["rl", "--task", "chain", "--data.prompts", "curriculum"], "has none"),
    (["rl", "--task", "gym:chain_sum", "--data.prompts", "curriculum", "--data.start_level", "99"], "data.start_level 99"),
    (["curate", "--task", "chain"], "--out FILE.jsonl"),
])
def test_bad_data_settings_fail_in_one_line(base_run, tmp_path, capsys, args, culprit):
    budgets = ["--rl.sample.max_new_tokens", "8", "--eval.sample.max_new_tokens", "8"]
    code = main([args[0], "--init", str(base_run), "--out", str(tmp_path / "x"), *args[1:], *budgets, "--threads", "1"]) if args[0] == "rl" else \
        main([*args, "--init", str(base_run)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and culprit in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("prompts_mode, extra", [("curriculum", ["--data.start_level", "4", "--data.level_down", "0", "--data.window", "2"]),
                                                 ("pass_rate", ["--data.candidates", "3", "--data.samples", "2", "--data.refresh_every", "3"])])
def test_rl_with_a_prompt_source_killed_at_random_steps_resumes_bit_identical(base_run, tmp_path, prompts_mode, extra):
    """SIGKILL mid-run (tests/test_resume.py's kill points), --resume: rows and final weights,
    optimizer, RNG and the source's state (curriculum level and window, curated pool) equal an
    uninterrupted run's."""
    import signal

    from test_resume import KILL_POINTS, RL_STEPS, rows_by_step, survive_kills

    argv = ["--init", str(base_run), "--task", "gym:chain_sum", *overrides(TINY), "--rl.steps", str(RL_STEPS), "--rl.eval_every", "4",
            "--rl.sample.max_new_tokens", "8", "--eval.sample.max_new_tokens", "8", "--save_every", "2", "--keep_checkpoints", "1000", "--data.prompts", prompts_mode, *extra]
    reference = tmp_path / "reference"
    assert main(["rl", "--out", str(reference), *argv]) == 0
    ref = rows_by_step(reference)
    if prompts_mode == "curriculum":  # the level moves across the kill points: state that must survive them
        assert len({ref[s]["curriculum/level"] for s in ref}) >= 3
    else:
        assert ref[RL_STEPS]["curation/refreshes"] == (RL_STEPS - 1) // 3 + 1
    results = survive_kills(["rl", "--out", str(tmp_path / "run"), *argv], tmp_path / "run", reference, RL_STEPS,
                            [signal.SIGKILL] * KILL_POINTS, tmp_path)
    assert all(results), results
