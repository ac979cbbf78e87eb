"""`r1lab import`, `r1lab export`, `--init hf:PATH` from the command line: greedy decoding equals
transformers' generate, a GRPO run from a tiny Qwen2 exports again, bad folders fail in one line."""

import json
import shutil

import pytest
import safetensors.torch
import torch

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hf_fixtures import hf_folder  # noqa: E402
from r1lab import cli, rollout  # noqa: E402
from r1lab.config import SampleConfig  # noqa: E402
from r1lab.recipes import common  # noqa: E402
from r1lab.recipes import sample as sample_recipe  # noqa: E402

QUESTIONS = ["Using the numbers 3, 5, 7 make 22", "12+30*2-7"]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return hf_folder(tmp_path_factory.mktemp("hf") / "qwen", "qwen2", vocab_pad=12)


def test_import_then_export_round_trips_bit_for_bit(qwen, tmp_path, capsys):
    assert cli.main(["import", str(qwen), str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "checkpoints" / "step_0" / "model.safetensors").is_file()
    assert cli.main(["export", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    a = safetensors.torch.load_file(str(qwen / "model.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    _, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert "Qwen2ForCausalLM" in capsys.readouterr().out


def test_bf16_folder_round_trips_bit_for_bit_when_exported_in_bf16(tmp_path):
    src = hf_folder(tmp_path / "bf16", "llama", tie=True, dtype=torch.bfloat16)
    assert cli.main(["import", str(src), str(tmp_path / "run")]) == 0
    assert cli.main(["export", str(tmp_path / "run"), str(tmp_path / "out"), "--export.dtype", "bfloat16"]) == 0
    a = safetensors.torch.load_file(str(src / "model.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert a.keys() == b.keys() and all(b[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"


@pytest.mark.parametrize("model_type", ["qwen2", "llama"])
def test_greedy_sample_equals_transformers_generate_token_for_token(qwen, tmp_path, model_type):
    src = qwen if model_type == "qwen2" else hf_folder(tmp_path / "llama", "llama", tie=True, kv_heads=1)
    assert cli.main(["import", str(src), str(tmp_path / "run")]) == 0
    assert cli.main(["export", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    theirs, hf_tok = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    model, _ = common.load_model(tmp_path / "run")
    tok = common.load_tokenizer(tmp_path / "run")
    stage, cfg, _ = cli.parse(["sample", *QUESTIONS, "--init", str(tmp_path / "run"), "--generate.n", "1",
                               "--generate.sample.temperature", "0", "--generate.sample.max_new_tokens", "24", "--threads", "1"])
    texts = sample_recipe.main(cfg)
    for question, text in zip(QUESTIONS, texts):
        prompt = tok.prompt_ids(question)
        assert prompt == hf_tok("User: " + question + "\nAssistant:", add_special_tokens=False)["input_ids"]
        ref = theirs.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=24, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
        ref_ids = ref[0, len(prompt):].tolist()
        ro = rollout.sample(model, [prompt], SampleConfig(temperature=0.0, max_new_tokens=24), tok.eos_id, tok.pad_id, torch.Generator())
        assert ro.completion_ids(0) == ref_ids
        assert text == tok.decode_completion(ref_ids)
    assert len(set(texts)) == 2  # the prompts lead somewhere different: not a degenerate model


def test_rl_from_hf_qwen2_runs_grpo_and_its_checkpoint_exports(qwen, tmp_path):
    run = tmp_path / "rl"
    argv = ["rl", "--init", f"hf:{qwen}", "--task", "countdown", "--out", str(run), "--rl.steps", "2", "--rl.prompts_per_step", "2",
            "--rl.group_size", "2", "--rl.eval_every", "0", "--rl.sample.max_new_tokens", "16", "--rl.lr", "1e-2",
            "--rl.weight_decay", "0.1", "--rl.logprob_chunk", "8", "--threads", "1", "--tensorboard", "false"]
    assert cli.main(argv) == 0
    assert json.loads((run / "tokenizer_config.json").read_text())["eos_token"] == "<|endoftext|>"
    assert cli.main(["export", str(run), str(tmp_path / "out")]) == 0
    before = safetensors.torch.load_file(str(qwen / "model.safetensors"))
    after = safetensors.torch.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert before.keys() == after.keys()
    assert not torch.equal(before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"])  # updated (a random model earns no reward, so weight decay is what moves it)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    model, _ = common.load_model(run)
    ids = torch.randint(0, 320, (2, 12))
    with torch.no_grad():
        assert (theirs(ids).logits - model(ids).logits_BTV).abs().max() < 1e-4


def test_eval_from_hf_folder(qwen, tmp_path):
    argv = ["eval", "--init", f"hf:{qwen}", "--task", "countdown", "--out", str(tmp_path / "eval"), "--eval.n_problems", "2",
            "--eval.n_samples", "2", "--eval.ks", "[1, 2]", "--eval.sample.max_new_tokens", "8", "--threads", "1"]
    assert cli.main(argv) == 0
    (result,) = (tmp_path / "eval").glob("*.json")
    assert json.loads(result.read_text())["n"] == 2


def _one_line_exit_2(argv, capsys, needle):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    return err


def _broken(qwen, tmp_path, name):
    bad = tmp_path / name
    shutil.copytree(qwen, bad)
    return bad


def test_bad_hf_folders_fail_in_one_line_naming_file_and_field_and_write_nothing(qwen, tmp_path, capsys):
    out = tmp_path / "out"
    no_config = _broken(qwen, tmp_path, "no_config")
    (no_config / "config.json").unlink()
    _one_line_exit_2(["import", str(no_config), str(out)], capsys, "no config.json")

    other = _broken(qwen, tmp_path, "other_type")
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    _one_line_exit_2(["import", str(other), str(out)], capsys, "model_type='gpt2' is not supported")

    window = _broken(qwen, tmp_path, "window")
    (window / "config.json").write_text(json.dumps({**cfg, "use_sliding_window": True}))
    _one_line_exit_2(["sample", "1+1", "--init", f"hf:{window}"], capsys, "use_sliding_window")

    no_weights = _broken(qwen, tmp_path, "no_weights")
    (no_weights / "model.safetensors").unlink()
    _one_line_exit_2(["import", str(no_weights), str(out)], capsys, "no model.safetensors")

    # Sharded: an index naming a missing shard, and one that puts a tensor in the wrong shard.
    sharded = _broken(qwen, tmp_path, "sharded")
    tensors = safetensors.torch.load_file(str(sharded / "model.safetensors"))
    (sharded / "model.safetensors").unlink()
    names = sorted(tensors)
    half = {n: tensors[n] for n in names[: len(names) // 2]}, {n: tensors[n] for n in names[len(names) // 2 :]}
    for i, part in enumerate(half):
        safetensors.torch.save_file(part, str(sharded / f"model-0000{i + 1}-of-00002.safetensors"), metadata={"format": "pt"})
    weight_map = {n: f"model-0000{1 if n in half[0] else 2}-of-00002.safetensors" for n in names}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert cli.main(["import", str(sharded), str(tmp_path / "sharded_ok")]) == 0  # a good sharded folder imports
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {**weight_map, names[0]: "model-00002-of-00002.safetensors"}}))
    _one_line_exit_2(["import", str(sharded), str(out)], capsys, f"weight_map puts {names[0]} in model-00002-of-00002.safetensors")
    (sharded / "model-00002-of-00002.safetensors").unlink()
    _one_line_exit_2(["import", str(sharded), str(out)], capsys, "shard model-00002-of-00002.safetensors listed in weight_map is missing")

    shape = _broken(qwen, tmp_path, "shape")
    (shape / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 96}))
    _one_line_exit_2(["import", str(shape), str(out)], capsys, "mlp.gate_proj.weight has shape")

    small = _broken(qwen, tmp_path, "small_vocab")
    tensors = safetensors.torch.load_file(str(small / "model.safetensors"))
    tensors = {k: (v[:300] if k in ("model.embed_tokens.weight", "lm_head.weight") else v) for k, v in tensors.items()}
    safetensors.torch.save_file(tensors, str(small / "model.safetensors"), metadata={"format": "pt"})
    (small / "config.json").write_text(json.dumps({**cfg, "vocab_size": 300}))
    _one_line_exit_2(["import", str(small), str(out)], capsys, "tokenizer.json")
    assert not out.exists()


def test_newer_checkpoint_and_unexportable_model_fail_in_one_line(qwen, base_run, tmp_path, capsys):
    assert cli.main(["import", str(qwen), str(tmp_path / "run")]) == 0
    state_file = tmp_path / "run" / "checkpoints" / "step_0" / "state.json"
    meta = json.loads(state_file.read_text())
    meta["state"]["model_config"]["mla_rank"] = 8  # a field from the future
    state_file.write_text(json.dumps(meta))
    err = _one_line_exit_2(["export", str(tmp_path / "run"), str(tmp_path / "out")], capsys, "model_config.mla_rank")
    assert "state.json" in err
    _one_line_exit_2(["export", str(base_run), str(tmp_path / "out")], capsys, "model.attention='gqa' cannot be exported as DeepseekV3")
    assert not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    _one_line_exit_2(["import", str(qwen), str(tmp_path / "full")], capsys, "not an empty folder")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
