"""Hugging Face interop: logit parity with transformers, export/import round trips, bad folders.

Models are tiny and random, built from transformers configs (tests/hf_fixtures.py)."""

import json

import pytest
import safetensors.torch
import torch

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hf_fixtures import hf_folder  # noqa: E402
from r1lab.config import ModelConfig  # noqa: E402
from r1lab.model import hf  # noqa: E402
from r1lab.model.transformer import Transformer  # noqa: E402
from r1lab.tokenizer import CharTokenizer, JsonTokenizer  # noqa: E402


def _logits_both(folder, ids):
    ours, _, _ = hf.load(folder)
    theirs = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return ours(ids).logits_BTV, theirs(ids).logits


@pytest.mark.parametrize("model_type,tie,kv_heads", [("llama", True, 2), ("llama", False, 2), ("llama", False, 4), ("qwen2", False, 2), ("qwen2", True, 1)])
def test_logits_match_transformers(tmp_path, model_type, tie, kv_heads):
    folder = hf_folder(tmp_path / "m", model_type, tie=tie, kv_heads=kv_heads)
    ids = torch.randint(0, 320, (3, 40), generator=torch.Generator().manual_seed(1))
    ours, theirs = _logits_both(folder, ids)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() < 1e-4
    assert theirs.std() > 0.5  # the models are not near-uniform: a mapping error would show


def test_qwen2_biases_are_imported_and_matter(tmp_path):
    folder = hf_folder(tmp_path / "m", "qwen2")
    model, _, family = hf.load(folder)
    assert family.model_type == "qwen2" and model.cfg.qkv_bias
    assert model.layers[0].attn.wq.bias.abs().sum() > 0


def test_bf16_folder_loads_as_exact_fp32_upcast(tmp_path):
    folder = hf_folder(tmp_path / "m", "llama", dtype=torch.bfloat16)
    model, _, _ = hf.load(folder)
    raw = safetensors.torch.load_file(str(folder / "model.safetensors"))
    assert raw["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert torch.equal(model.embed.weight, raw["model.embed_tokens.weight"].float())


@pytest.mark.parametrize("model_type,tie", [("llama", True), ("qwen2", False)])
def test_hf_to_r1lab_to_hf_is_bit_for_bit(tmp_path, model_type, tie):
    src = hf_folder(tmp_path / "src", model_type, tie=tie)
    model, tok, _ = hf.load(src)
    hf.export(model, tok, tmp_path / "out")
    a = safetensors.torch.load_file(str(src / "model.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    out_cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert out_cfg["model_type"] == model_type and out_cfg["tie_word_embeddings"] == tie


def test_r1lab_to_hf_to_r1lab_is_bit_for_bit_and_transformers_loads_it_cleanly(tmp_path):
    cfg = ModelConfig(ffn="dense", d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, max_seq_len=64, init_std=0.2)
    tok = CharTokenizer.build()
    torch.manual_seed(0)
    model = Transformer(cfg, tok.vocab_size)
    hf.export(model, tok, tmp_path / "out")
    theirs, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    text = "User: 7+5\nAssistant:<think>"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert hf_tok.eos_token_id == tok.eos_id
    back, back_tok, _ = hf.load(tmp_path / "out")
    assert isinstance(back_tok, CharTokenizer)
    assert back.cfg == cfg
    a, b = model.state_dict(), back.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.randint(0, tok.vocab_size, (2, 20))
    with torch.no_grad():
        assert (theirs.eval()(ids).logits - model(ids).logits_BTV).abs().max() < 1e-4


def test_bpe_tokenizer_comes_back_as_json_tokenizer_with_its_special_tokens(tmp_path):
    folder = hf_folder(tmp_path / "m", "qwen2")
    _, tok, _ = hf.load(folder)
    assert isinstance(tok, JsonTokenizer)
    ref = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_id == ref.eos_token_id and tok.bos_id is None and tok.pad_id == ref.pad_token_id
    text = "User: 12+30*2\nAssistant:<think>30*2=60</think><answer>72</answer>"
    assert tok.encode(text) == ref(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(tok.encode(text)) == text  # the R1 tags are plain text here


def test_deepseekmoe_model_cannot_be_exported_and_says_which_field(tmp_path):
    # DeepSeekMoE (GQA, softmax router) has no Hugging Face architecture; V3-style MoE exports as DeepseekV3 (test_hf_v3.py).
    model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, d_expert=16), CharTokenizer.build().vocab_size)
    with pytest.raises(hf.HFFormatError, match="model.attention='gqa' cannot be exported as DeepseekV3"):
        hf.export(model, CharTokenizer.build(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
