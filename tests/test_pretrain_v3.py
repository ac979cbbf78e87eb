"""Pretraining the DeepSeek-V3 design: aux-free balancing works, its state resumes exactly, and
the expert-load contract (expert_load.jsonl, per-layer metrics, heatmap) holds."""

import json

import pytest
from safetensors.torch import load_file

from r1lab.cli import main
from tests.conftest import overrides

V3_TINY = {
    "model": {"d_model": 32, "n_layers": 3, "n_heads": 2, "n_kv_heads": 1, "d_ff": 64, "n_routed_experts": 8, "top_k": 2, "d_expert": 16,
              "router": "sigmoid", "n_group": 2, "topk_group": 1, "aux_loss_coef": 0.0, "seq_aux_loss_coef": 1e-4,
              "bias_update_speed": 0.01, "first_k_dense_replace": 1, "attention": "mla", "kv_lora_rank": 8,
              "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8, "mtp_depth": 1},
    "pretrain": {"steps": 4, "batch_size": 4, "warmup_steps": 2},
    "save_every": 2, "threads": 1, "tensorboard": False,
}


def pretrain(out, cfg, *extra):
    assert main(["pretrain", "--out", str(out), *overrides(cfg), *extra]) == 0


def test_v3_pretraining_logs_the_expert_load_contract_and_resumes_the_bias_exactly(tmp_path):
    pretrain(tmp_path / "full", V3_TINY)
    rows = [json.loads(line) for line in (tmp_path / "full" / "expert_load.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert len(rows[0]["load_LE"]) == 3  # two MoE blocks (the first is dense) + the MTP block
    assert all(abs(sum(layer) - 1) < 1e-4 and len(layer) == 8 for r in rows for layer in r["load_LE"])
    metrics = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    for key in ("moe/load_max_over_mean", "moe/layer0/load_max_over_mean", "moe/layer1/dead_experts", "moe/layer0/bias_norm", "pretrain/mtp_loss"):
        assert key in metrics[-1], key
    assert metrics[-1]["moe/layer0/bias_norm"] > 0
    assert (tmp_path / "full" / "expert_load.png").stat().st_size > 0

    # Two steps, then resume to four: the same weights and the same balancing bias, bit for bit.
    half = {**V3_TINY, "pretrain": {**V3_TINY["pretrain"], "steps": 2}}
    pretrain(tmp_path / "split", half)
    pretrain(tmp_path / "split", V3_TINY, "--resume")
    a = load_file(tmp_path / "full" / "checkpoints" / "step_4" / "model.safetensors")
    b = load_file(tmp_path / "split" / "checkpoints" / "step_4" / "model.safetensors")
    biases = [k for k in a if k.endswith("router.bias_E")]
    assert len(biases) == 3
    for k in a:
        assert (a[k] == b[k]).all(), k
    resumed = [json.loads(line)["step"] for line in (tmp_path / "split" / "expert_load.jsonl").read_text().splitlines()]
    assert resumed == [1, 2, 3, 4]


@pytest.mark.slow
def test_aux_free_balancing_keeps_expert_load_even_on_a_short_run(tmp_path):
    """~30 s: 100 steps with and without the bias; with it, max/mean load ends below 1.5."""
    base = {"model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "n_routed_experts": 8, "top_k": 2, "d_expert": 16,
                      "router": "sigmoid", "aux_loss_coef": 0.0},
            "pretrain": {"steps": 100, "batch_size": 8}, "save_every": 100, "threads": 1, "tensorboard": False}
    ends = {}
    for gamma in (0.0, 0.01):
        cfg = {**base, "model": {**base["model"], "bias_update_speed": gamma}}
        pretrain(tmp_path / str(gamma), cfg)
        rows = [json.loads(line) for line in (tmp_path / str(gamma) / "metrics.jsonl").read_text().splitlines()]
        ends[gamma] = sum(r["moe/load_max_over_mean"] for r in rows[-10:]) / 10
    assert ends[0.01] < 1.5 < ends[0.0]


def test_v3_model_through_rl_and_speculative_sampling(tmp_path, capsys, base_run):
    """RL moves the balancing bias once per optimizer step and logs the load; `r1lab sample
    --generate.speculative` drafts with the MTP module and reports its acceptance rate."""
    base = tmp_path / "base"
    pretrain(base, {**V3_TINY, "pretrain": {**V3_TINY["pretrain"], "steps": 2}})
    rl = {"rl": {"steps": 2, "prompts_per_step": 2, "group_size": 2, "eval_every": 0, "sample": {"max_new_tokens": 8}},
          "save_every": 2, "threads": 1, "tensorboard": False}
    assert main(["rl", "--init", str(base), "--out", str(tmp_path / "rl"), *overrides(rl)]) == 0
    before = load_file(base / "checkpoints" / "step_2" / "model.safetensors")
    after = load_file(tmp_path / "rl" / "checkpoints" / "step_2" / "model.safetensors")
    key = next(k for k in before if k.endswith("router.bias_E"))
    assert not (before[key] == after[key]).all()
    rows = [json.loads(line) for line in (tmp_path / "rl" / "expert_load.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert (tmp_path / "rl" / "expert_load.png").stat().st_size > 0  # the heatmap, as pretraining draws it
    metrics = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert "moe/layer0/load_max_over_mean" in metrics[-1]
    capsys.readouterr()
    assert main(["sample", "1+2", "--init", str(base), "--generate.speculative", "--generate.n", "1", "--threads", "1"]) == 0
    assert "MTP drafts accepted" in capsys.readouterr().out
    # Temperature 0 is greedy with or without drafts (it used to divide by zero in the drafter).
    greedy = ["sample", "1+2", "9*9", "--init", str(base), "--generate.n", "1", "--generate.sample.temperature", "0", "--threads", "1"]
    assert main(greedy) == 0
    plain = capsys.readouterr().out
    assert main([*greedy, "--generate.speculative"]) == 0
    drafted = capsys.readouterr().out
    assert plain.split("\n=== ")[1:] == drafted.split("\n=== ")[1:]
    assert main(["sample", "1+2", "--init", str(base_run), "--generate.speculative", "--threads", "1"]) == 2  # no MTP module
    assert "needs a model with an MTP module" in capsys.readouterr().err
