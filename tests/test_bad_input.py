"""Bad input of every kind ends in a clean error: a ConfigError/ValueError of one line from the
library, and one line on stderr with exit code 2 from the CLI, never a traceback.

Property-based: random nested configs and random dataset files (bytes and JSON rows). The number
of inputs tried and of clean errors is printed (``pytest -s tests/test_bad_input.py``)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY, overrides
from r1lab import config as config_lib
from r1lab.cli import main
from r1lab.config import ConfigError
from r1lab.tasks import get_task
from r1lab.tasks.jsonl import JsonlTask

KEYS = [k for k, _, _ in config_lib.describe()]
SECTIONS = sorted({k.split(".")[0] for k in KEYS if "." in k})
TALLY: dict[str, list[int]] = {}  # test -> [inputs tried, clean errors]


def tally(name: str, clean_error: bool) -> None:
    counts = TALLY.setdefault(name, [0, 0])
    counts[0] += 1
    counts[1] += clean_error


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    for name, (tried, clean) in TALLY.items():
        print(f"\n{name}: {tried} inputs, {clean} clean errors, {tried - clean} accepted")


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["moe", "dense", "test", "1e-4", "nan", ".inf", "chain", "jsonl:/nonexistent"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
# Mostly real keys, so that the examples reach the type and value checks, not just "unknown key".
leaf_keys = st.sampled_from(KEYS) | st.text(max_size=10)
configs = st.dictionaries(leaf_keys, values, max_size=4) | st.dictionaries(st.sampled_from(SECTIONS), st.dictionaries(st.sampled_from([k.split(".", 1)[-1] for k in KEYS]), values, max_size=3), max_size=3)


def nest(flat: dict) -> dict:
    """{'rl.group_size': 1} -> {'rl': {'group_size': 1}} (later keys win on a clash)."""
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".") if isinstance(key, str) else [key]
        node = out
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[leaf] = value
    return out


@settings(max_examples=300, deadline=None)
@given(configs)
def test_random_configs_build_or_raise_config_error(layer):
    try:
        config_lib.build(nest(layer))
    except ConfigError as err:
        assert "\n" not in str(err)
        tally("configs via config.build", True)
    else:
        tally("configs via config.build", False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(KEYS) | st.text(min_size=1, max_size=8), values), max_size=3))
def test_random_command_lines_end_in_one_line_and_exit_2(capsys, pairs):
    # The stage reads --init last, from a folder that does not exist: a valid config still ends in
    # a one-line error (no training), so every example must exit 2.
    argv = ["eval"]
    for key, value in pairs:
        if key in ("init", "config", "debug", "h", "help", "threads"):  # threads: would resize this process's pool
            continue
        argv += [f"--{key}", json.dumps(value, allow_nan=True)]
    code = main([*argv, "--init", "/nonexistent/run"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("r1lab: error: ") and "Traceback" not in err, (argv, err)
    tally("command lines via r1lab eval", True)


def _load(data: bytes, directory: Path):
    path = directory / "rows.jsonl"
    path.write_bytes(data)
    try:
        task = JsonlTask(path)
    except ValueError as err:
        message = str(err)
        assert "\n" not in message and str(path) in message, message
        return None
    return task


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["question", "answer", "solution", "id"]) | st.text(max_size=5), inner, max_size=4),
    max_leaves=6,
)
good_row = st.builds(lambda q, a: {"question": q, "answer": a}, st.text(min_size=1, max_size=10).filter(str.strip), st.text(min_size=1, max_size=4).filter(str.strip))
rows = st.lists(good_row | json_values, min_size=0, max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | rows.map(lambda rs: "\n".join(json.dumps(r) for r in rs).encode()))
def test_random_dataset_files_load_or_raise_one_line_value_error(data):
    with tempfile.TemporaryDirectory() as d:
        task = _load(data, Path(d))
        tally("dataset files via jsonl:<path>", task is None)
        if task is not None:  # whatever was accepted is usable: both splits, exact-match scoring
            ex = task.pool("train")[0]
            assert task.check(f"  {ex.answer} ", ex) == 1.0 and task.pool("test")


def test_dataset_rows_are_split_by_question_and_scored_by_exact_match(tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps({"question": f"{i}+{i}", "answer": str(2 * i), "solution": f"{i}+{i}={2 * i}"}) for i in range(200)]
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    task = get_task(f"jsonl:{path}")
    train, test = task.pool("train"), task.pool("test")
    assert len(train) + len(test) == 200 and 5 <= len(test) <= 40
    assert not {e.question for e in train} & {e.question for e in test}
    path.write_text("\n".join(reversed(lines)), encoding="utf-8")  # order does not move a row's split
    assert {e.question for e in JsonlTask(path).pool("test")} == {e.question for e in test}
    ex = test[0]
    assert task.check(ex.answer, ex) == 1.0 and task.check(ex.answer + "0", ex) == 0.0
    assert ex.solution.endswith(ex.answer)
    # End to end: pretrain on the file's train rows, evaluate on its held-out rows.
    args = [*overrides(TINY), "--task", f"jsonl:{path}", "--pretrain.steps", "2"]
    assert main(["pretrain", "--out", str(tmp_path / "base"), *args]) == 0
    assert main(["eval", "--init", str(tmp_path / "base"), "--out", str(tmp_path / "eval"), *args]) == 0
    (result,) = (tmp_path / "eval").glob("*.json")  # beside it: the evaluated samples (.samples.jsonl)
    assert result.name.startswith("jsonl_") and json.loads(result.read_text())["n"] == 4


BAD_DATASETS = [
    (b"", "is empty"),
    (b"\n  \n", "is empty"),
    (b'{"question": "1+1", "answer": "2"}\n\xff\xfe\n', ":2: not UTF-8"),
    (b'{"question": "1+1", "answer": "2"}\n{"question": "2+2", "answer": 4}\n', ":2: 'answer' must be a non-empty string (got int)"),
    (b'{"question": "1+1", "answer": "2"}\n{"question": "2+2"\n', ":2: not valid JSON"),
    (b'["1+1", "2"]\n', ":1: expected a JSON object"),
    (b'{"answer": "2"}\n', ":1: 'question' must be a non-empty string (missing)"),
    (b'{"question": " ", "answer": "2"}\n', ":1: 'question' must be a non-empty string (empty)"),
    (b'{"question": "1+1", "answer": "2", "solution": 3}\n', ":1: 'solution' must be a string"),
    (b'{"question": "1+1", "answer": "2", "anwser": "2"}\n', ":1: unknown field 'anwser'"),
    (b'{"question": "\\ud800", "answer": "2"}\n', ":1: 'question' holds an invalid Unicode escape"),
    (b'{"question": "1+1", "answer": "2"}\n', "needs at least 2"),
]


@pytest.mark.parametrize("data,needle", BAD_DATASETS)
def test_bad_dataset_is_one_line_naming_file_and_line_exit_2(data, needle, tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    path.write_bytes(data)
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--task", f"jsonl:{path}", *overrides(TINY)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()  # failed before any work


def test_missing_dataset_and_debug_traceback(tmp_path, capsys):
    assert main(["eval", "--task", f"jsonl:{tmp_path}/nope.jsonl", "--init", "x"]) == 2
    assert f"dataset {tmp_path}/nope.jsonl does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError):
        main(["eval", "--task", f"jsonl:{tmp_path}/nope.jsonl", "--init", "x", "--debug"])


def test_checkpoint_of_another_vocabulary_or_truncated_is_one_line(base_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(base_run / "checkpoints" / "step_6", other)
    state = json.loads((other / "state.json").read_text())
    state["state"]["vocab_size"] += 7
    (other / "state.json").write_text(json.dumps(state))
    assert main(["eval", "--init", str(other), *overrides(TINY)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vocabulary size" in err and str(other) in err
    truncated = tmp_path / "truncated"
    shutil.copytree(base_run / "checkpoints" / "step_6", truncated)
    opt = truncated / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:50])
    assert main(["rl", "--out", str(tmp_path / "rl"), "--init", str(truncated), *overrides(TINY)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer.pt is truncated" in err


@pytest.mark.parametrize("argv,needle", [
    (["pretrain", "--max_bad_steps", "0"], "max_bad_steps"),
    (["pretrain", "--pretrain.lr", ".inf"], "pretrain.lr: must be a finite number"),
    (["pretrain", "--rl.clip_eps", "nan"], "rl.clip_eps"),
    (["pretrain", "--model.n_heads", "0"], "model.d_model"),
    (["pretrain", "--model.init_std", "1" + "0" * 400], "model.init_std"),
    (["pretrain", "--threads", "two"], "threads"),
    (["eval", "--init", "x", "--threads", "1000000000"], "threads"),
    (["eval", "--init", "x", "--seed", "-1"], "seed"),
    (["pretrain", "--task", "jsonl:/tmp"], "dataset /tmp cannot be read: Is a directory"),
])
def test_more_impossible_values_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err


def test_absurd_model_size_is_one_line_not_an_allocator_traceback(tmp_path, capsys):
    from r1lab.cli import main

    code = main(["pretrain", "--out", str(tmp_path / "huge"), "--model.d_model", "1000000", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("r1lab: error: model of ") and "GiB" in err and "model.d_model" in err and "Traceback" not in err
    assert not list((tmp_path / "huge").rglob("model.safetensors"))  # nothing trained, nothing saved


@pytest.mark.parametrize("argv,needle", [
    (["pretrain", "--model.n_layers", "100000000"], "model.n_layers: must be between 1 and 1,024"),  # was: building 1e8 blocks hung
    (["pretrain", "--model.max_seq_len", "100000000"], "model.max_seq_len: must be between 8"),  # was: RoPE tables of 1e8 rows
    (["pretrain", "--model.d_expert", "-4"], "model.d_expert: must be positive"),  # was: a negative-dimension traceback
    (["pretrain", "--model.d_ff", "0"], "model.d_ff: must be positive"),
    (["pretrain", "--init", "/nonexistent"], "r1lab pretrain does not read --init"),  # was: ignored, trained from scratch
    (["janus", "--init", "/nonexistent"], "r1lab janus does not read --init"),
    (["zero", "--init", "/nonexistent"], "r1lab zero does not read --init"),
    (["rl", "--init", "/nonexistent", "--rl.group_size", "100000000"], "lower rl.prompts_per_step x rl.group_size"),  # was: sampled for ever
    (["sample", "1+1", "--init", "/nonexistent", "--generate.n", "100000000"], "lower generate.n"),
])
def test_absurd_sizes_and_ignored_paths_are_one_line_before_any_work(argv, needle, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out"), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()  # refused before the run folder was made


@pytest.mark.parametrize("key,needle", [
    ("--model.d_model", "janus model of "),  # was: the VQ stage trained for minutes before the LM's size check
    ("--janus.vq_channels", "VQ tokenizer of "),
])
def test_janus_checks_both_models_sizes_before_training_anything(key, needle, tmp_path, capsys):
    assert main(["janus", "--out", str(tmp_path / "j"), key, "100000000", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"r1lab: error: {needle}") and "GiB" in err and key[2:] in err and err.count("\n") == 1, err
    assert not (tmp_path / "j").exists()


def test_an_allocation_the_machine_refuses_is_one_line_and_other_runtime_errors_keep_their_traceback(monkeypatch, tmp_path, capsys):
    from r1lab import cli
    from r1lab.recipes import report

    (tmp_path / "config.yaml").write_text("task: chain\n")
    # torch's CPU allocator, as `r1lab curate --data.samples 100000000` met it
    alloc = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                         "you tried to allocate 320000000000 bytes. Error code 12 (Cannot allocate memory)")
    monkeypatch.setattr(report, "main", lambda cfg: (_ for _ in ()).throw(alloc))
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "r1lab: error: out of memory: tried to allocate 298.0 GiB; lower the batch, sample counts or model size (--debug shows where)\n"
    with pytest.raises(RuntimeError):  # --debug: the traceback
        cli.main(["report", str(tmp_path), "--debug"])
    monkeypatch.setattr(report, "main", lambda cfg: (_ for _ in ()).throw(RuntimeError("a bug, not the user's input")))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["report", str(tmp_path)])
    monkeypatch.setattr(report, "main", lambda cfg: (_ for _ in ()).throw(MemoryError()))
    assert cli.main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("r1lab: error: out of memory: the allocation failed")


# ---------------------------------------------------------------------------------------------
# Problem counts and sampled batches the task or the machine cannot give: one line, before any work


class _Small:
    """A generator task of 30 distinct test questions that counts its draws."""

    def __new__(cls):
        from r1lab.tasks.base import Example, Task

        class Small(Task):
            name = "small"
            draws = 0

            def sample(self, rng, split):
                self.draws += 1
                return Example(f"q{rng.randrange(30)}", "1")

            def check(self, answer, example):
                return 1.0

        return Small()


def test_examples_beyond_what_a_task_holds_fail_fast():
    task = _Small()
    assert len(task.examples("test", 30, seed=0)) == 30  # the whole space is still reachable
    task.draws = 0
    with pytest.raises(ValueError, match="fewer than 1,000,000 distinct questions \\(30 found\\)"):
        task.examples("test", 10**6, seed=0)
    assert task.draws < 5_000  # it gave up once draws stopped finding new questions (was: 50 x 10^6 draws)
    rows = "\n".join(json.dumps({"question": f"{i}+{i}", "answer": str(2 * i)}) for i in range(100))
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "r.jsonl").write_text(rows)
        pool_task = JsonlTask(Path(d) / "r.jsonl")
        n_test = len(pool_task.pool("test"))
        with pytest.raises(ValueError, match=f"has {n_test} distinct questions, fewer than 1,000,000,000"):
            pool_task.examples("test", 10**9, seed=0)  # at once: a finite pool's size is known


@pytest.mark.parametrize("stage,key", [
    ("eval", "eval.n_problems"), ("zero", "eval.n_problems"), ("zero", "rl.eval_problems"), ("rl", "rl.monitor.probe_problems"),
    ("curate", "data.curate_problems"), ("rejection-sample", "rejection.n_prompts"), ("prm", "prm.n_problems"), ("r1", "r1.cold_start_examples"),
    ("check-task", "check.train_samples"), ("zero", "data.signal_problems"),
])
def test_absurd_problem_counts_are_refused_naming_the_key(stage, key):
    from r1lab.recipes import common

    cfg = config_lib.build(nest({key: 10**9}))
    with pytest.raises(common.StageError, match=rf"^{key.replace('.', '[.]')} 1,000,000,000(| x eval.n_samples 8): holding that many chain problems and samples needs over [\d,.]+ GiB"):
        common.check_problems(stage, cfg, get_task("chain"))
    common.check_problems(stage, config_lib.build({}), get_task("chain"))  # the defaults fit


def test_absurd_eval_sample_count_is_named_beside_the_problem_count():
    from r1lab.recipes import common

    cfg = config_lib.build({"eval": {"n_problems": 2, "n_samples": 10**12, "ks": [1]}})
    with pytest.raises(common.StageError, match=r"^eval.n_problems 2 x eval.n_samples 1,000,000,000,000: .* lower eval.n_problems or eval.n_samples$"):
        common.check_problems("eval", cfg, get_task("chain"), common.load_tokenizer(""))


def test_problem_counts_over_a_finite_pool_are_refused_unless_the_stage_caps_them(tmp_path):
    from r1lab.recipes import common

    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"{i}+{i}", "answer": str(2 * i)}) for i in range(100)))
    task = get_task(f"jsonl:{path}")
    n_test = len(task.pool("test"))
    with pytest.raises(common.StageError, match=f"^eval.n_problems 500: task jsonl:.* test split holds {n_test} distinct problems; lower eval.n_problems"):
        common.check_problems("eval", config_lib.build({"eval": {"n_problems": 500}}), task)
    common.check_problems("curate", config_lib.build({"data": {"curate_problems": 500}}), task)  # curate takes the pool's size


def test_zero_with_more_eval_problems_than_the_task_has_fails_before_pretraining(tmp_path, capsys):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"{i}+{i}", "answer": str(2 * i)}) for i in range(100)))
    code = main(["zero", "--task", f"jsonl:{path}", "--eval.n_problems", "5", "--rl.eval_problems", "90", "--out", str(tmp_path / "z"), "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "rl.eval_problems 90: task jsonl:" in err and "Traceback" not in err, err
    assert not (tmp_path / "z").exists()  # was: 1,800 pretraining steps, then the error at RL's first evaluation


def test_sampling_bound_counts_the_cache_and_logits_the_sampler_allocates():
    import torch

    from r1lab.config import ModelConfig
    from r1lab.model.transformer import Transformer
    from r1lab.recipes import common

    for model_cfg in (ModelConfig(**TINY["model"], max_seq_len=64), ModelConfig(**TINY["model"], max_seq_len=64, attention="mla")):
        model = Transformer(model_cfg, 50)
        rows, tokens = 6, 40
        cache = model.new_cache(rows, tokens)
        cache_bytes = sum(t.numel() * t.element_size() for t in vars(cache).values() if isinstance(t, torch.Tensor))
        outputs = rows * tokens * common.SAMPLED_BYTES_PER_TOKEN
        assert common.sampling_bytes(rows, tokens, model_cfg, 50) == outputs + cache_bytes + rows * 50 * 4
        # a row's budget is what the context leaves after a prompt of one token
        assert common.sampling_bytes(rows, 10**6, model_cfg, 50) == common.sampling_bytes(rows, 63, model_cfg, 50)


def test_rejection_sample_batch_too_large_for_memory_is_refused_with_the_model_counted(base_run, tmp_path, capsys, monkeypatch):
    from r1lab.recipes import common

    # 64 prompts x 64 samples x 64 tokens: 4.5 MB of sampler outputs (the old bound) but ~70 MB
    # with the tiny model's cache and logits; the machine is made to have 20 MB.
    monkeypatch.setattr(common, "available_memory", lambda: 20 * 2**20)
    out = tmp_path / "traces.jsonl"
    code = main(["rejection-sample", "--init", str(base_run), "--out", str(out), "--rejection.n_prompts", "64",
                 "--rejection.prompts_per_batch", "64", "--rejection.samples_per_prompt", "64", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("r1lab: error: sampling 4,096 completions of up to 64 tokens in one batch needs over 0.1 GiB") and "rejection.prompts_per_batch" in err
    assert not out.exists()


@pytest.mark.parametrize("key,value,why", [
    # values the bad-input sweep found accepted, then silently meaning nonsense
    ("pretrain.grad_clip", -1, "must be >= 0 (0: off)"),  # a negative clip flipped every gradient's sign
    ("rl.grad_clip", -1, "must be >= 0 (0: off)"),
    ("sft.grad_clip", -1, "must be >= 0 (0: off)"),
    ("prm.grad_clip", -1, "must be >= 0 (0: off)"),
    ("pretrain.weight_decay", -1, "must be >= 0"),  # grew the weights
    ("rl.weight_decay", -1, "must be >= 0"),
    ("sft.weight_decay", -0.5, "must be >= 0"),
    ("prm.weight_decay", -1, "must be >= 0"),
    ("pretrain.warmup_steps", -1, "must be >= 0"),
    ("rl.warmup_steps", -1, "must be >= 0"),
    ("prm.warmup_steps", -1, "must be >= 0"),
    ("rl.format_weight", -1, "must be >= 0"),  # rewarded breaking the template
    ("rl.correct_weight", -1, "must be >= 0"),
    ("rl.partial_weight", -1, "must be >= 0"),
    ("rl.overlong_weight", -1, "must be >= 0"),
    ("model.aux_loss_coef", -1, "must be >= 0 (0: off)"),
    ("model.norm_eps", 0, "must be positive"),
    ("model.rope_theta", 0, "must be positive"),  # NaN loss at the first step
    ("model.rope_theta", -1, "must be positive"),
    ("model.rope_low_freq_factor", -1, "must be positive"),
    ("pretrain.min_lr_ratio", 2, "must be in [0, 1]"),
    ("pretrain.min_lr_ratio", -1, "must be in [0, 1]"),
    ("rl.monitor.probe_seed", -1, "must be in [0, 2**32)"),
    ("rl.monitor.probe_seed", 10**12, "must be in [0, 2**32)"),
    ("lora.alpha", 0, "must be positive"),  # adapters that never change the model
    ("lora.alpha", -1, "must be positive"),
    ("data.signal_threshold", -1, "must be in [0, 1] (a pass@k)"),
    ("data.signal_threshold", 1e12, "must be in [0, 1] (a pass@k)"),
    ("check.test_samples", 10**12, "must be at most 100,000,000 (hours of drawing)"),  # drew for ever
    ("rl.prm", "runs/prm", "is read only with rl.reward process or hybrid (was: ignored with outcome)"),
    ("distill.data", "jsonl:x.jsonl", "is read only with distill.mode token (was: ignored in sequence mode)"),
    ("lora.targets", ["wq", "abc"], "must name layers among wq, wk, wv, wo, w1, w2, w3"),  # was: accepted while lora.rank is 0
])
def test_values_that_silently_meant_nonsense_are_config_errors(key, value, why):
    with pytest.raises(ConfigError) as err:
        config_lib.build(nest({key: value}))
    assert str(err.value) == f"config key {key}: {why}"


def test_negative_extra_reward_weights_stay_allowed():
    # a length penalty is an extra reward with a negative weight (tests/test_rl_loop.py)
    assert config_lib.build({"rl": {"extra_rewards": ["chars"], "extra_reward_weights": [-0.01]}}).rl.extra_reward_weights == [-0.01]


def test_absurd_sample_counts_of_pass_rate_estimates_are_one_line_before_any_work(tmp_path, capsys):
    assert main(["curate", "--init", "/nonexistent", "--data.samples", "1000000000000", "--out", str(tmp_path / "c.jsonl"), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("r1lab: error: sampling 1,000,000,000,000 completions") and "lower data.samples" in err, err


def test_label_on_a_port_in_use_is_one_line_exit_2(tmp_path, capsys):
    import socket

    traces = tmp_path / "traces.jsonl"
    traces.write_text(json.dumps({"task": "chain", "question": "1+2", "gold": "3", "completion": "<think>1+2=3</think> <answer>3</answer>"}) + "\n")
    with socket.socket() as busy:  # was: werkzeug printed the reason on its own and exited 1
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["label", "--from", str(traces), "--out", str(tmp_path / "labels.jsonl"), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"r1lab: error: label: cannot serve on --host 127.0.0.1 --port {port}: Address already in use\n", err


def test_prm_action_given_as_a_flag_is_refused_not_replaced(capsys):
    assert main(["prm", "label", "--prm.action", "train", "--init", "/nonexistent"]) == 2
    assert capsys.readouterr().err == "r1lab: error: --prm.action: the action is the first word (r1lab prm label ...), not a flag\n"
