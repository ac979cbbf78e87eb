"""DeepseekV3 interop: r1lab's MLA + sigmoid-routed MoE (+ MTP) against transformers'
``DeepseekV3ForCausalLM`` on the same weights; round trips; the RoPE layout; refusals; weights in
``pytorch_model.bin``. Tiny random models built from configs (tests/hf_fixtures.py)."""

import dataclasses
import json

import pytest
import safetensors.torch
import torch

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM  # noqa: E402

from hf_fixtures import v3_folder  # noqa: E402
from r1lab.config import ModelConfig  # noqa: E402
from r1lab.model import hf  # noqa: E402
from r1lab.model.moe import MoE  # noqa: E402
from r1lab.model.transformer import Transformer  # noqa: E402
from r1lab.tokenizer import CharTokenizer  # noqa: E402

class Evil:
    """Not a tensor: a weights_only unpickler must refuse to build it."""


IDS = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(1))


def _logits(model, ids=IDS):
    with torch.no_grad():
        out = model(ids)
    return out.logits_BTV if hasattr(out, "logits_BTV") else out.logits


@pytest.mark.parametrize("q_lora,tie,n_group,topk_group,interleave", [
    (None, False, 4, 2, True),  # MLA without q-LoRA, group-limited routing, DeepSeek's interleaved rotary rows
    (12, True, 4, 2, True),  # with q-LoRA, tied embeddings
    (None, False, 1, 1, True),  # no groups
    (12, False, 2, 1, False),  # rope_interleave false: rotate-half, as r1lab, no permutation
])
def test_logits_match_transformers_deepseek_v3(tmp_path, q_lora, tie, n_group, topk_group, interleave):
    folder = v3_folder(tmp_path / "m", q_lora_rank=q_lora, tie=tie, n_group=n_group, topk_group=topk_group, interleave=interleave)
    ours, _, family = hf.load(folder)
    theirs = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert family.model_type == "deepseek_v3"
    c = ours.cfg
    assert (c.attention, c.router, c.q_lora_rank, c.n_group, c.topk_group, c.first_k_dense_replace, c.routed_scaling_factor) == \
        ("mla", "sigmoid", q_lora or 0, n_group, topk_group, 1, 2.5)
    assert not isinstance(ours.layers[0].ffn, MoE) and isinstance(ours.layers[1].ffn, MoE)
    assert (c.aux_loss_coef, c.seq_aux_loss_coef, c.bias_update_speed) == (0.0, 0.0, 0.0)  # training-only settings off
    a, b = _logits(ours), _logits(theirs)
    assert (a - b).abs().max() < 1e-4
    assert b.std() > 0.5


def test_aux_free_bias_is_imported_and_changes_the_routing(tmp_path):
    folder = v3_folder(tmp_path / "m")
    ours, _, _ = hf.load(folder)
    raw = safetensors.torch.load_file(str(folder / "model.safetensors"))
    bias = ours.layers[1].ffn.router.bias_E
    assert bias.dtype == torch.float32 and torch.equal(bias, raw["model.layers.1.mlp.gate.e_score_correction_bias"].float())
    before = _logits(ours)
    for m in ours.modules():
        if isinstance(m, MoE):
            m.router.bias_E.zero_()
    assert (_logits(ours) - before).abs().max() > 1e-3  # the bias chose other experts


def test_rotary_layout_matters(tmp_path):
    """Reading an interleaved folder as if it were rotate-half breaks parity: the permutation is real."""
    folder = v3_folder(tmp_path / "m")
    ref = _logits(AutoModelForCausalLM.from_pretrained(folder).eval())
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "rope_interleave": False}))
    ours, _, _ = hf.load(folder)
    assert (_logits(ours) - ref).abs().max() > 1e-3


def test_hf_to_r1lab_to_hf_is_bit_for_bit(tmp_path):
    src = v3_folder(tmp_path / "src", q_lora_rank=12)
    model, tok, _ = hf.load(src)
    hf.export(model, tok, tmp_path / "out")
    a = safetensors.torch.load_file(str(src / "model.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert a.keys() == b.keys() and "model.layers.2.mlp.experts.7.down_proj.weight" in a
    assert all(torch.equal(a[k], b[k]) for k in a)


def _v3_model(**kw) -> tuple[Transformer, CharTokenizer]:
    cfg = ModelConfig(d_model=32, n_layers=3, n_heads=4, max_seq_len=64, d_ff=48, attention="mla", kv_lora_rank=16, q_lora_rank=12,
                      qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=8, n_shared_experts=2, top_k=2,
                      d_expert=16, router="sigmoid", n_group=4, topk_group=2, routed_scaling_factor=2.5, first_k_dense_replace=1,
                      aux_loss_coef=0.0, seq_aux_loss_coef=1e-4, bias_update_speed=0.01, mtp_loss_weight=0.1, init_std=0.2, **kw)
    tok = CharTokenizer.build()
    torch.manual_seed(0)
    model = Transformer(cfg, tok.vocab_size)
    for i, m in enumerate(x for x in model.modules() if isinstance(x, MoE)):
        m.router.bias_E.copy_(torch.randn(8, generator=torch.Generator().manual_seed(i)) * 0.3)  # as after aux-free balancing
    return model, tok


def test_r1lab_to_hf_loads_cleanly_matches_and_comes_back_bit_for_bit(tmp_path):
    model, tok = _v3_model(mtp_depth=1)
    hf.export(model, tok, tmp_path / "out")  # the MTP module is dropped
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["model_type"] == "deepseek_v3" and cfg["num_nextn_predict_layers"] == 0 and cfg["rope_interleave"] is True
    theirs, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids = torch.randint(0, tok.vocab_size, (2, 30), generator=torch.Generator().manual_seed(2))
    assert (_logits(theirs.eval(), ids) - _logits(model, ids)).abs().max() < 1e-4
    back, _, _ = hf.load(tmp_path / "out")
    assert back.cfg == dataclasses.replace(model.cfg, mtp_depth=0)  # the training-only settings too (r1lab_training)
    a, b = model.state_dict(), back.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b) and set(a) - set(b) == {k for k in a if k.startswith("mtp.")}


def test_mtp_kept_as_deepseek_stores_it_comes_back_bit_for_bit(tmp_path):
    model, tok = _v3_model(mtp_depth=1)
    hf.export(model, tok, tmp_path / "out", mtp=True)
    raw = safetensors.torch.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert "model.layers.3.eh_proj.weight" in raw and "model.layers.3.mlp.experts.0.gate_proj.weight" in raw
    assert torch.equal(raw["model.layers.3.embed_tokens.weight"], raw["model.embed_tokens.weight"])
    back, _, _ = hf.load(tmp_path / "out")
    assert back.cfg == model.cfg
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    h = torch.randn(2, 5, 32)
    nxt = torch.randint(0, tok.vocab_size, (2, 5))
    with torch.no_grad():
        assert torch.equal(model.mtp_forward(h, nxt).logits_BTV, back.mtp_forward(h, nxt).logits_BTV)


def test_fused_experts_as_transformers_holds_them_load_the_same(tmp_path):
    folder = v3_folder(tmp_path / "m")
    ref = hf.load(folder)[0].state_dict()
    raw = safetensors.torch.load_file(str(folder / "model.safetensors"))
    fused = {k: v for k, v in raw.items() if ".experts." not in k}
    for i in (1, 2):
        p = f"model.layers.{i}.mlp.experts."
        fused[p + "gate_up_proj"] = torch.stack([torch.cat([raw[f"{p}{e}.gate_proj.weight"], raw[f"{p}{e}.up_proj.weight"]]) for e in range(8)])
        fused[p + "down_proj"] = torch.stack([raw[f"{p}{e}.down_proj.weight"] for e in range(8)])
    safetensors.torch.save_file(fused, str(folder / "model.safetensors"))
    got = hf.load(folder)[0].state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize("change,field", [
    ({"router": "softmax"}, "model.router='softmax'"),
    ({"attention": "gqa", "n_kv_heads": 4}, "model.attention='gqa'"),
    ({"n_shared_experts": 0}, "model.n_shared_experts=0"),
])
def test_unexportable_moe_models_name_the_field(tmp_path, change, field):
    base, tok = _v3_model()
    model = Transformer(dataclasses.replace(base.cfg, **change), tok.vocab_size)
    with pytest.raises(hf.HFFormatError, match=field.replace("(", r"\(")):
        hf.export(model, tok, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rope", [{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 10000.0},
                                  {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}])
def test_rope_scaling_is_refused_naming_the_kind(tmp_path, rope):
    folder = v3_folder(tmp_path / "m", rope_parameters=rope)
    with pytest.raises(hf.HFFormatError, match=f"rope_parameters.*{rope['rope_type']}"):
        hf.load(folder)


def test_pytorch_model_bin_loads_with_weights_only(tmp_path):
    folder = v3_folder(tmp_path / "m")
    ref = hf.load(folder)[0].state_dict()
    raw = safetensors.torch.load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(raw, folder / "pytorch_model.bin")
    got = hf.load(folder)[0].state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    # A pickle that would build an arbitrary object is refused, naming the file.
    torch.save({"model.embed_tokens.weight": raw["model.embed_tokens.weight"], "x": Evil()},
               folder / "pytorch_model.bin")
    with pytest.raises(hf.HFFormatError, match="pytorch_model.bin: unreadable PyTorch weights file"):
        hf.load(folder)


# ---------------------------------------------------------------------------------------------
# From the command line: a V3 run (MLA, sigmoid routing with aux-free balancing, MTP) exported


@pytest.fixture(scope="module")
def v3_run(tmp_path_factory):
    from conftest import TINY, overrides
    from r1lab import cli

    out = tmp_path_factory.mktemp("runs") / "v3"
    argv = ["pretrain", "--out", str(out), "--config", "v3-tiny", *overrides(TINY), "--model.n_routed_experts", "8", "--model.n_group", "2", "--model.topk_group", "1",
            "--model.bias_update_speed", "0.01", "--pretrain.steps", "4"]
    assert cli.main(argv) == 0
    return out


def test_v3_run_exports_and_transformers_loads_it_cleanly_with_the_same_logits(v3_run, tmp_path, capsys):
    from r1lab import cli
    from r1lab.recipes import common

    assert cli.main(["export", str(v3_run), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "DeepseekV3ForCausalLM" in printed and "MTP module dropped" in printed
    model, _ = common.load_model(v3_run)
    assert model.cfg.mtp_depth == 1 and any(m.router.bias_E.abs().sum() > 0 for m in model.modules() if isinstance(m, MoE))  # trained bias
    theirs, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    theirs.eval()
    ids = torch.randint(0, model.vocab_size, (2, 30), generator=torch.Generator().manual_seed(3))
    assert (_logits(theirs, ids) - _logits(model, ids)).abs().max() < 1e-4


@pytest.mark.slow
def test_v3_greedy_decoding_equals_transformers_generate(v3_run, tmp_path):
    from r1lab import cli, rollout
    from r1lab.config import SampleConfig
    from r1lab.recipes import common

    assert cli.main(["export", str(v3_run), str(tmp_path / "out")]) == 0
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    model, _ = common.load_model(v3_run)
    tok = common.load_tokenizer(v3_run)
    for question in ["7+5*2-3", "9*9-9"]:
        prompt = tok.prompt_ids(question)
        ref = theirs.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=20, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
        ro = rollout.sample(model, [prompt], SampleConfig(temperature=0.0, max_new_tokens=20), tok.eos_id, tok.pad_id, torch.Generator())
        assert ro.completion_ids(0) == ref[0, len(prompt):].tolist()[: len(ro.completion_ids(0))]


def test_v3_export_with_mtp_imports_back_and_rl_starts_from_it(v3_run, tmp_path, capsys):
    from r1lab import checkpoint, cli

    assert cli.main(["export", str(v3_run), str(tmp_path / "out"), "--export.mtp", "true"]) == 0
    assert "MTP module kept as layer model.layers.2" in capsys.readouterr().out
    assert cli.main(["import", str(tmp_path / "out"), str(tmp_path / "run")]) == 0
    a = checkpoint.load_latest(v3_run).model_state
    b = checkpoint.load_latest(tmp_path / "run").model_state
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the bias and the MTP module included
    from r1lab.recipes import common
    run_cfg = common.load_model(v3_run)[0].cfg
    # aux-free gamma, MTP weight, ... too; n_kv_heads, which MLA does not use, comes back as n_heads
    assert common.load_model(tmp_path / "run")[0].cfg == dataclasses.replace(run_cfg, n_kv_heads=run_cfg.n_heads)
    argv = ["rl", "--init", f"hf:{tmp_path / 'out'}", "--out", str(tmp_path / "rl"), "--rl.steps", "1", "--rl.prompts_per_step", "2",
            "--rl.group_size", "2", "--rl.eval_every", "0", "--rl.sample.max_new_tokens", "8", "--threads", "1", "--tensorboard", "false"]
    assert cli.main(argv) == 0
