"""Import and export Hugging Face checkpoints from and to local folders (no hub access).

A Hugging Face folder holds ``config.json``, weights in ``model.safetensors`` (or shards listed
in ``model.safetensors.index.json``; ``pytorch_model.bin`` is read too, unpickled with
``weights_only=True``), ``tokenizer.json`` and ``tokenizer_config.json``.

- r1lab's dense model is the LLaMA block (pre-norm RMSNorm, rotate-half RoPE, GQA, SwiGLU), so
  LLaMA (Touvron et al., arXiv:2302.13971) and Qwen2 (arXiv:2407.10671: LLaMA plus q/k/v biases)
  map onto it name for name; weights are copied, never transformed.
- DeepSeek-V3 (arXiv:2412.19437; transformers' ``DeepseekV3ForCausalLM``) maps onto r1lab's MLA +
  sigmoid-routed MoE: q/kv LoRA ranks and the nope/rope head split name for name, the aux-free
  bias is ``e_score_correction_bias``, the stacked routed experts are stored per expert
  (``mlp.experts.{e}.gate_proj.weight`` = w1[e]^T, as transformers saves them; its fused
  in-memory form ``gate_up_proj`` is read too), and the first ``first_k_dense_replace`` blocks are
  dense. DeepSeek rotates interleaved pairs (x_2i, x_2i+1) of the rotary dims (``rope_interleave``,
  default true) where r1lab rotates halves: the rotary rows of the query projection and of the
  shared rotary key are permuted (evens then odds) on import and back on export, which leaves
  every attention score unchanged. The MTP module is written only on request (``mtp``), as
  DeepSeek's checkpoints hold it: one more layer ``model.layers.{n_layers}`` (enorm, hnorm,
  eh_proj over [embedding; hidden] -- r1lab concatenates [hidden; embedding] --, shared_head.norm
  and copies of the embedding and head); transformers does not load it, r1lab reads it back.

Every transform is a permutation or a transpose, so round trips are bit for bit. One ``Family``
per Hugging Face ``model_type`` in ``FAMILIES``: how to read its config into a ``ModelConfig``
(refusing, field by field, what r1lab cannot compute), how to write one back, and its tensor map.

RoPE: plain, linear position interpolation and Llama 3.1's ``llama3`` scaling are read and
written (``model.rope_scaling``). Departures: other RoPE scalings (``dynamic``, ``longrope``,
``yarn``, which DeepSeek-V3's own checkpoints use), sliding-window attention, attention output or
MLP biases and a ``head_dim`` other than ``hidden_size / num_attention_heads`` are refused with an
error naming the field, not approximated. DeepSeekMoE models (softmax router, GQA) have no
Hugging Face architecture.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import safetensors
import safetensors.torch
import torch

from r1lab.checkpoint import atomic_folder
from r1lab.config import ModelConfig
from r1lab.model.layers import rope_tables
from r1lab.model.transformer import Transformer, rope_table_args
from r1lab.tokenizer import BaseTokenizer, TokenizerError
from r1lab.tokenizer import load as load_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX_FILE = "pytorch_model.bin.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"


class HFFormatError(ValueError):
    """A Hugging Face folder or an r1lab model that cannot be converted; one line naming the file
    (or config key) and the field."""


# ---------------------------------------------------------------------------------------------
# Families: config and tensor-name maps


def dense_names(cfg: ModelConfig) -> dict[str, str]:
    """r1lab parameter name -> Hugging Face LLaMA/Qwen2 tensor name."""
    names = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not cfg.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    per_layer = [("attn_norm.weight", "input_layernorm.weight"), ("ffn_norm.weight", "post_attention_layernorm.weight"),
                 ("attn.wq.weight", "self_attn.q_proj.weight"), ("attn.wk.weight", "self_attn.k_proj.weight"),
                 ("attn.wv.weight", "self_attn.v_proj.weight"), ("attn.wo.weight", "self_attn.o_proj.weight"),
                 ("ffn.w1.weight", "mlp.gate_proj.weight"), ("ffn.w3.weight", "mlp.up_proj.weight"), ("ffn.w2.weight", "mlp.down_proj.weight")]
    if cfg.qkv_bias:
        per_layer += [("attn.wq.bias", "self_attn.q_proj.bias"), ("attn.wk.bias", "self_attn.k_proj.bias"), ("attn.wv.bias", "self_attn.v_proj.bias")]
    for i in range(cfg.n_layers):
        names.update({f"layers.{i}.{ours}": f"model.layers.{i}.{theirs}" for ours, theirs in per_layer})
    return names


class _Fields:
    """Reads fields of one config.json, naming the file and field in every error."""

    def __init__(self, data: dict, path: Path):
        self.data, self.path = data, path

    def get(self, key: str, kind: type, default: Any = dataclasses.MISSING) -> Any:
        value = self.data.get(key, default)
        if value is None and default is None:
            return None
        if value is dataclasses.MISSING:
            raise HFFormatError(f"{self.path}: field {key} is missing")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise HFFormatError(f"{self.path}: field {key} is {value!r}, expected {kind.__name__}")
        return value

    def refuse(self, key: str, ok: bool, why: str) -> None:
        if not ok:
            raise HFFormatError(f"{self.path}: field {key}={self.data.get(key)!r} is not supported: {why}")


ROPE_KINDS = {"default": "none", "linear": "linear", "llama3": "llama3"}
"Hugging Face rope_type -> r1lab model.rope_scaling; every other kind (dynamic, yarn, longrope, ...) is refused"


def _rope_fields(f: _Fields) -> dict[str, Any]:
    """The ModelConfig RoPE fields (base, scaling) from transformers 5's ``rope_parameters`` or the
    older ``rope_theta`` + ``rope_scaling``; a kind r1lab does not implement is refused, naming it."""
    params = f.data.get("rope_parameters")
    key = "rope_parameters"
    if not isinstance(params, dict):
        key, params = "rope_scaling", f.data.get("rope_scaling") or {}
        if not isinstance(params, dict):
            raise HFFormatError(f"{f.path}: field rope_scaling={params!r} is not an object")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ROPE_KINDS:
        raise HFFormatError(f"{f.path}: field {key}.rope_type={kind!r} is not supported: r1lab implements {', '.join(ROPE_KINDS)}")
    theta = params.get("rope_theta", f.data.get("rope_theta", 10000.0))
    out: dict[str, Any] = {"rope_theta": float(theta), "rope_scaling": ROPE_KINDS[kind]}
    wanted = {"linear": {"factor": "rope_factor"},
              "llama3": {"factor": "rope_factor", "low_freq_factor": "rope_low_freq_factor", "high_freq_factor": "rope_high_freq_factor",
                         "original_max_position_embeddings": "rope_original_max_len"}}.get(kind, {})
    for theirs, ours in wanted.items():
        if theirs not in params:
            raise HFFormatError(f"{f.path}: field {key}.{theirs} is missing (rope_type {kind})")
        out[ours] = int(params[theirs]) if ours == "rope_original_max_len" else float(params[theirs])
    return out


def _rope_hf(cfg: ModelConfig) -> dict:
    """``rope_parameters`` (transformers 5) and ``rope_theta`` (4.x) of an r1lab config."""
    kind = {v: k for k, v in ROPE_KINDS.items()}[cfg.rope_scaling]
    params: dict[str, Any] = {"rope_type": kind, "rope_theta": cfg.rope_theta}
    if kind in ("linear", "llama3"):
        params["factor"] = cfg.rope_factor
    if kind == "llama3":
        params.update(low_freq_factor=cfg.rope_low_freq_factor, high_freq_factor=cfg.rope_high_freq_factor,
                      original_max_position_embeddings=cfg.rope_original_max_len)
    return {"rope_parameters": params, "rope_theta": cfg.rope_theta}


def _dense_config(f: _Fields, qkv_bias: bool) -> tuple[ModelConfig, int]:
    hidden, heads = f.get("hidden_size", int), f.get("num_attention_heads", int)
    f.refuse("hidden_act", f.data.get("hidden_act", "silu") == "silu", "r1lab's SwiGLU uses silu")
    f.refuse("head_dim", f.data.get("head_dim") in (None, hidden // heads), "head_dim must equal hidden_size / num_attention_heads")
    f.refuse("mlp_bias", not f.data.get("mlp_bias", False), "r1lab's MLP has no biases")
    cfg = ModelConfig(
        ffn="dense",
        d_model=hidden,
        n_layers=f.get("num_hidden_layers", int),
        n_heads=heads,
        n_kv_heads=f.get("num_key_value_heads", int, heads),
        max_seq_len=f.get("max_position_embeddings", int),
        d_ff=f.get("intermediate_size", int),
        **_rope_fields(f),
        init_std=f.get("initializer_range", float, 0.02),
        qkv_bias=qkv_bias,
        tie_embeddings=f.get("tie_word_embeddings", bool, False),
        norm_eps=f.get("rms_norm_eps", float, 1e-6),
    )
    return cfg, f.get("vocab_size", int)


def _llama_config(f: _Fields) -> tuple[ModelConfig, int]:
    f.refuse("attention_bias", not f.data.get("attention_bias", False), "r1lab's attention has no output-projection bias (Qwen2-style q/k/v biases are)")
    return _dense_config(f, qkv_bias=False)


def _qwen2_config(f: _Fields) -> tuple[ModelConfig, int]:
    f.refuse("use_sliding_window", not f.data.get("use_sliding_window", False), "sliding-window attention is not implemented")
    layer_types = f.data.get("layer_types") or []
    f.refuse("layer_types", all(t == "full_attention" for t in layer_types), "only full attention is implemented")
    return _dense_config(f, qkv_bias=True)  # Qwen2 always has q/k/v biases


def _dense_hf_config(cfg: ModelConfig, vocab_size: int) -> dict:
    return {
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.d_model // cfg.n_heads,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        **_rope_hf(cfg),  # rope_theta is what transformers 4.x reads
        "hidden_act": "silu",
        "initializer_range": cfg.init_std,
        "tie_word_embeddings": cfg.tie_embeddings,
        "vocab_size": vocab_size,
        "use_cache": True,
    }


# ---------------------------------------------------------------------------------------------
# DeepseekV3: MLA + sigmoid-routed MoE (+ MTP)


TRAINING_KEY = "r1lab_training"
"config.json key of an exported DeepseekV3 folder holding r1lab's training-only model settings"
TRAINING_FIELDS = ("aux_loss_coef", "seq_aux_loss_coef", "bias_update_speed", "bias_update_stop", "mtp_loss_weight")


def _training_fields(f: _Fields) -> dict[str, Any]:
    """The training-only settings an r1lab export wrote (``TRAINING_KEY``); off when absent."""
    saved = f.data.get(TRAINING_KEY)
    if saved is None:
        return {"aux_loss_coef": 0.0}
    if not isinstance(saved, dict):
        raise HFFormatError(f"{f.path}: field {TRAINING_KEY} is {saved!r}, expected an object")
    sub = _Fields(saved, f.path)
    defaults = {name: getattr(ModelConfig(), name) for name in TRAINING_FIELDS}
    return {name: sub.get(name, type(default), default) for name, default in defaults.items()}


def _v3_config(f: _Fields) -> tuple[ModelConfig, int]:
    heads = f.get("num_attention_heads", int)
    f.refuse("hidden_act", f.data.get("hidden_act", "silu") == "silu", "r1lab's SwiGLU uses silu")
    f.refuse("attention_bias", not f.data.get("attention_bias", False), "r1lab's MLA has no projection biases")
    f.refuse("num_key_value_heads", f.data.get("num_key_value_heads") in (None, heads), "MLA expands its latent to every query head")
    f.refuse("topk_method", f.data.get("topk_method", "noaux_tc") == "noaux_tc", "r1lab routes as DeepSeek-V3 (noaux_tc: sigmoid, group-limited, bias for selection)")
    f.refuse("scoring_func", f.data.get("scoring_func", "sigmoid") == "sigmoid", "transformers' DeepseekV3 router is sigmoid")
    experts, n_group = f.get("n_routed_experts", int), f.get("n_group", int, None) or 1
    f.refuse("n_group", experts % n_group == 0 and (n_group == 1 or experts // n_group >= 2), "n_routed_experts must split into groups of at least 2 experts")
    f.refuse("n_shared_experts", f.get("n_shared_experts", int, 1) >= 1, "r1lab's MoE needs at least one shared expert to map onto DeepseekV3's")
    cfg = ModelConfig(
        ffn="moe", attention="mla", router="sigmoid",
        d_model=f.get("hidden_size", int), n_layers=f.get("num_hidden_layers", int), n_heads=heads, n_kv_heads=heads,
        max_seq_len=f.get("max_position_embeddings", int), d_ff=f.get("intermediate_size", int),
        n_routed_experts=experts, n_shared_experts=f.get("n_shared_experts", int, 1), top_k=f.get("num_experts_per_tok", int),
        d_expert=f.get("moe_intermediate_size", int), routed_scaling_factor=f.get("routed_scaling_factor", float, 1.0),
        norm_topk_prob=f.get("norm_topk_prob", bool, True), n_group=n_group, topk_group=f.get("topk_group", int, None) or 1,
        first_k_dense_replace=min(f.get("first_k_dense_replace", int, None) or 0, f.get("num_hidden_layers", int)),
        kv_lora_rank=f.get("kv_lora_rank", int), q_lora_rank=f.get("q_lora_rank", int, None) or 0,
        qk_nope_head_dim=f.get("qk_nope_head_dim", int), qk_rope_head_dim=f.get("qk_rope_head_dim", int), v_head_dim=f.get("v_head_dim", int),
        **_rope_fields(f), init_std=f.get("initializer_range", float, 0.02),
        tie_embeddings=f.get("tie_word_embeddings", bool, False), norm_eps=f.get("rms_norm_eps", float, 1e-6),
        # Training-only settings HF does not store are off (no balance loss; the aux-free bias
        # stays where the checkpoint left it, as transformers holds it) unless r1lab wrote them.
        **_training_fields(f),
    )
    return cfg, f.get("vocab_size", int)


def _v3_hf_config(cfg: ModelConfig, vocab_size: int, mtp: bool) -> dict:
    return {
        "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff, "moe_intermediate_size": cfg.d_expert,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_heads,
        "n_routed_experts": cfg.n_routed_experts, "n_shared_experts": cfg.n_shared_experts, "num_experts_per_tok": cfg.top_k,
        "routed_scaling_factor": cfg.routed_scaling_factor, "norm_topk_prob": cfg.norm_topk_prob,
        "n_group": cfg.n_group, "topk_group": cfg.topk_group, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
        "first_k_dense_replace": min(cfg.first_k_dense_replace, cfg.n_layers),
        "kv_lora_rank": cfg.kv_lora_rank, "q_lora_rank": cfg.q_lora_rank or None, "qk_nope_head_dim": cfg.qk_nope_head_dim,
        "qk_rope_head_dim": cfg.qk_rope_head_dim, "v_head_dim": cfg.v_head_dim, "head_dim": cfg.qk_rope_head_dim,
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
        **_rope_hf(cfg),
        "rope_interleave": True,  # DeepSeek's layout, which vLLM and SGLang assume; the rotary rows are permuted to it
        "hidden_act": "silu", "attention_bias": False, "initializer_range": cfg.init_std,
        "tie_word_embeddings": cfg.tie_embeddings, "vocab_size": vocab_size, "use_cache": True,
        "num_nextn_predict_layers": 1 if mtp else 0,
        # r1lab's training-only settings, which transformers keeps as an unknown key and ignores;
        # importing the folder restores them, so r1lab -> HF -> r1lab keeps the whole config.
        TRAINING_KEY: {name: getattr(cfg, name) for name in TRAINING_FIELDS},
    }


def _v3_check_exportable(cfg: ModelConfig) -> None:
    why = {"attention": (cfg.attention == "mla", "DeepseekV3 attention is MLA"),
           "router": (cfg.router == "sigmoid", "transformers' DeepseekV3 router is sigmoid"),
           "n_shared_experts": (cfg.n_shared_experts >= 1, "DeepseekV3 always has shared experts"),
           "n_group": (cfg.n_group == 1 or cfg.n_routed_experts // cfg.n_group >= 2, "DeepseekV3 scores a group by its top-2 experts"),
           "qkv_bias": (not cfg.qkv_bias, "DeepseekV3 has no q/k/v biases")}
    for field, (ok, reason) in why.items():
        if not ok:
            raise HFFormatError(f"model.{field}={getattr(cfg, field)!r} cannot be exported as DeepseekV3: {reason}")


def _rope_perm(dim: int) -> torch.Tensor:
    """r1lab rotates halves (x_i, x_{i+d/2}); DeepSeek's interleaved layout rotates (x_2i, x_2i+1).
    ``ours = theirs[perm]`` turns interleaved rows into halves: the evens, then the odds."""
    return torch.cat([torch.arange(0, dim, 2), torch.arange(1, dim, 2)])


def _permute_rope_rows(w: torch.Tensor, block: int, dr: int, to_hf: bool) -> torch.Tensor:
    """Permute the last ``dr`` rows of every ``block`` rows of ``w`` (the rotary rows of a query
    head, or of the shared rotary key) between r1lab's halves and DeepSeek's interleaved pairs."""
    perm = _rope_perm(dr)
    if to_hf:
        perm = perm.argsort()
    rows = w.reshape(-1, block, *w.shape[1:])
    rows = torch.cat([rows[:, : block - dr], rows[:, block - dr:][:, perm.to(w.device)]], dim=1)
    return rows.reshape(w.shape)


@dataclass(frozen=True)
class Layout:
    """How a folder lays out what its config does not say in r1lab's terms."""

    mtp: bool = False
    "the MTP module is stored (DeepseekV3: as layer model.layers.{n_layers}, as DeepSeek's checkpoints)"
    rope_interleave: bool = True
    "DeepseekV3's rotary rows are in interleaved pairs (config.json rope_interleave, DeepSeek's layout)"


@dataclass(frozen=True)
class TensorMap:
    """One r1lab tensor and the Hugging Face tensor(s) it is: a rename, optionally through an
    exact, invertible transform (a permutation, a transpose), or (``stacked``) one r1lab (E, ...)
    tensor stored as E per-expert Hugging Face tensors named by ``theirs.format(e=...)``."""

    ours: str
    theirs: str
    to_hf: Callable[[torch.Tensor], torch.Tensor] | None = None
    from_hf: Callable[[torch.Tensor], torch.Tensor] | None = None
    stacked: int = 0


def _v3_layer_maps(cfg: ModelConfig, ours: str, theirs: str, moe: bool, interleave: bool) -> list[TensorMap]:
    dn, dr, r = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.kv_lora_rank
    q_rows = dict(to_hf=lambda w: _permute_rope_rows(w, dn + dr, dr, True), from_hf=lambda w: _permute_rope_rows(w, dn + dr, dr, False)) if interleave else {}
    kv_rows = dict(to_hf=lambda w: _permute_rope_rows(w, r + dr, dr, True), from_hf=lambda w: _permute_rope_rows(w, r + dr, dr, False)) if interleave else {}
    a, t = ours, theirs
    maps = [TensorMap(a + "attn_norm.weight", t + "input_layernorm.weight"), TensorMap(a + "ffn_norm.weight", t + "post_attention_layernorm.weight"),
            TensorMap(a + "attn.wkv_a.weight", t + "self_attn.kv_a_proj_with_mqa.weight", **kv_rows),
            TensorMap(a + "attn.kv_norm.weight", t + "self_attn.kv_a_layernorm.weight"),
            TensorMap(a + "attn.wkv_b.weight", t + "self_attn.kv_b_proj.weight"), TensorMap(a + "attn.wo.weight", t + "self_attn.o_proj.weight")]
    if cfg.q_lora_rank > 0:
        maps += [TensorMap(a + "attn.wq_a.weight", t + "self_attn.q_a_proj.weight"), TensorMap(a + "attn.q_norm.weight", t + "self_attn.q_a_layernorm.weight"),
                 TensorMap(a + "attn.wq_b.weight", t + "self_attn.q_b_proj.weight", **q_rows)]
    else:
        maps.append(TensorMap(a + "attn.wq.weight", t + "self_attn.q_proj.weight", **q_rows))
    swiglu = [("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")]
    if not moe:
        return maps + [TensorMap(f"{a}ffn.{o}.weight", f"{t}mlp.{h}.weight") for o, h in swiglu]
    E = cfg.n_routed_experts
    transpose = dict(to_hf=lambda w: w.transpose(-1, -2), from_hf=lambda w: w.transpose(-1, -2))
    return maps + [TensorMap(a + "ffn.router.weight", t + "mlp.gate.weight"),
                   TensorMap(a + "ffn.router.bias_E", t + "mlp.gate.e_score_correction_bias"),  # the aux-free bias
                   *[TensorMap(f"{a}ffn.shared.{o}.weight", f"{t}mlp.shared_experts.{h}.weight") for o, h in swiglu],
                   TensorMap(a + "ffn.experts.w1_EDH", t + "mlp.experts.{e}.gate_proj.weight", stacked=E, **transpose),
                   TensorMap(a + "ffn.experts.w3_EDH", t + "mlp.experts.{e}.up_proj.weight", stacked=E, **transpose),
                   TensorMap(a + "ffn.experts.w2_EHD", t + "mlp.experts.{e}.down_proj.weight", stacked=E, **transpose)]


def _swap_halves(w: torch.Tensor) -> torch.Tensor:
    """eh_proj's input is [enorm(embedding); hnorm(hidden)] in DeepSeek's MTP, [hnorm(hidden);
    enorm(embedding)] in r1lab's: swap the two column halves (its own inverse)."""
    a, b = w.chunk(2, dim=1)
    return torch.cat([b, a], dim=1)


def v3_maps(cfg: ModelConfig, layout: Layout) -> list[TensorMap]:
    """Every r1lab tensor of a DeepseekV3-shaped model and its Hugging Face name(s); with
    ``layout.mtp`` the MTP module as DeepSeek's checkpoints store it, one more layer
    ``model.layers.{n_layers}``; with ``layout.rope_interleave`` the rotary rows permuted."""
    il = layout.rope_interleave
    maps = [TensorMap("embed.weight", "model.embed_tokens.weight"), TensorMap("norm.weight", "model.norm.weight")]
    if not cfg.tie_embeddings:
        maps.append(TensorMap("lm_head.weight", "lm_head.weight"))
    for i in range(cfg.n_layers):
        maps += _v3_layer_maps(cfg, f"layers.{i}.", f"model.layers.{i}.", moe=i >= cfg.first_k_dense_replace, interleave=il)
    if layout.mtp:
        p = f"model.layers.{cfg.n_layers}."
        maps += [TensorMap("mtp.enorm.weight", p + "enorm.weight"), TensorMap("mtp.hnorm.weight", p + "hnorm.weight"),
                 TensorMap("mtp.proj.weight", p + "eh_proj.weight", to_hf=_swap_halves, from_hf=_swap_halves),
                 TensorMap("mtp.norm.weight", p + "shared_head.norm.weight"),
                 *_v3_layer_maps(cfg, "mtp.block.", p, moe=cfg.n_layers >= cfg.first_k_dense_replace, interleave=il)]
    return maps


def _v3_mtp_copies(cfg: ModelConfig) -> dict[str, str]:
    """DeepSeek's MTP layer repeats the shared embedding and output head: HF name -> the main one."""
    p = f"model.layers.{cfg.n_layers}."
    return {p + "embed_tokens.weight": "model.embed_tokens.weight",
            p + "shared_head.head.weight": "model.embed_tokens.weight" if cfg.tie_embeddings else "lm_head.weight"}


def _unfuse_experts(hf: dict[str, torch.Tensor]) -> None:
    """transformers 5 holds a layer's experts fused (``gate_up_proj`` (E, 2F, D) = [gate; up] per
    expert, ``down_proj`` (E, D, F)) and saves them per expert; a folder written fused is split
    here into the per-expert names, exactly."""
    for name in [n for n in hf if n.endswith("mlp.experts.gate_up_proj")]:
        p = name.removesuffix("gate_up_proj")
        gate, up = hf.pop(name).chunk(2, dim=1)
        for e in range(gate.shape[0]):
            hf[f"{p}{e}.gate_proj.weight"], hf[f"{p}{e}.up_proj.weight"] = gate[e], up[e]
        if p + "down_proj" in hf:
            for e, w in enumerate(hf.pop(p + "down_proj")):
                hf[f"{p}{e}.down_proj.weight"] = w


# ---------------------------------------------------------------------------------------------
# Families


@dataclass(frozen=True)
class Family:
    """One Hugging Face architecture that r1lab reads and writes."""

    model_type: str
    architecture: str
    read_config: Callable[[_Fields], tuple[ModelConfig, int]]
    "config.json fields -> (ModelConfig, vocab_size); refuses what r1lab cannot compute"
    write_config: Callable[[ModelConfig, int, bool], dict]
    "ModelConfig, vocab_size, with MTP -> the family-specific config.json fields"
    maps: Callable[[ModelConfig, Layout], list[TensorMap]]
    "ModelConfig, layout -> each r1lab tensor and its Hugging Face name(s)"


def _renames(names: Callable[[ModelConfig], dict[str, str]]) -> Callable[[ModelConfig, Layout], list[TensorMap]]:
    return lambda cfg, layout: [TensorMap(ours, theirs) for ours, theirs in names(cfg).items()]


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "LlamaForCausalLM", _llama_config,
                    lambda cfg, v, mtp: {**_dense_hf_config(cfg, v), "attention_bias": False, "mlp_bias": False}, _renames(dense_names)),
    "qwen2": Family("qwen2", "Qwen2ForCausalLM", _qwen2_config,
                    lambda cfg, v, mtp: {**_dense_hf_config(cfg, v), "use_sliding_window": False, "max_window_layers": cfg.n_layers}, _renames(dense_names)),
    "deepseek_v3": Family("deepseek_v3", "DeepseekV3ForCausalLM", _v3_config, _v3_hf_config, v3_maps),
}
"Hugging Face model_type -> Family"


def family_for(cfg: ModelConfig) -> Family:
    """The family an r1lab model exports as: LLaMA, or Qwen2 when it has q/k/v biases, for dense
    models; DeepseekV3 for MoE models (MLA, sigmoid router)."""
    if cfg.ffn == "moe":
        _v3_check_exportable(cfg)
        return FAMILIES["deepseek_v3"]
    if cfg.attention != "gqa":
        raise HFFormatError(f"model.attention={cfg.attention!r} cannot be exported with model.ffn='dense': LLaMA and Qwen2 use GQA (MLA exports only as DeepseekV3, an MoE)")
    return FAMILIES["qwen2" if cfg.qkv_bias else "llama"]


def to_hf_tensors(model: Transformer, family: Family, mtp: bool = False, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The Hugging Face tensors of ``model`` in ``family``'s names, cast to ``dtype`` (the router
    of a DeepseekV3 model stays fp32, as transformers keeps it)."""
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for m in family.maps(model.cfg, Layout(mtp=mtp)):
        t = sd[m.ours].detach()
        t = m.to_hf(t) if m.to_hf else t
        keep32 = m.theirs.endswith(("mlp.gate.weight", "e_score_correction_bias"))
        t = t.to(torch.float32 if keep32 else (dtype or t.dtype))
        if m.stacked:
            out.update({m.theirs.format(e=e): t[e].contiguous() for e in range(m.stacked)})
        else:
            out[m.theirs] = t.contiguous()
    if mtp:
        out.update({copy: out[main].clone() for copy, main in _v3_mtp_copies(model.cfg).items()})
    return out


# ---------------------------------------------------------------------------------------------
# Reading a Hugging Face folder


def read_config(folder: Path) -> tuple[Family, ModelConfig, int, dict]:
    """(family, model config, vocab size, raw config.json) of a Hugging Face folder."""
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise HFFormatError(f"{folder}: not a folder")
    if not path.is_file():
        raise HFFormatError(f"{folder}: no {CONFIG_FILE} (not a Hugging Face model folder)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise HFFormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise HFFormatError(f"{path}: expected a JSON object")
    model_type = data.get("model_type")
    if model_type not in FAMILIES:
        raise HFFormatError(f"{path}: field model_type={model_type!r} is not supported (supported: {', '.join(FAMILIES)})")
    family = FAMILIES[model_type]
    cfg, vocab = family.read_config(_Fields(data, path))
    return family, cfg, vocab, data


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError and OSError
        raise HFFormatError(f"{path}: unreadable safetensors file ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    """A ``pytorch_model.bin`` state dict, unpickled with ``weights_only=True``: tensors and plain
    containers only, so a malicious pickle cannot run code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as err:  # UnpicklingError for a forbidden global, RuntimeError/EOFError for a broken file
        raise HFFormatError(f"{path}: unreadable PyTorch weights file ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise HFFormatError(f"{path}: not a state dict of named tensors")
    return state


def _read_sharded(folder: Path, index: Path, read: Callable[[Path], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise HFFormatError(f"{index}: field weight_map is missing or not valid JSON ({err})") from None
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        if not (folder / shard).is_file():
            raise HFFormatError(f"{index}: shard {shard} listed in weight_map is missing")
        part = read(folder / shard)
        for name, where in weight_map.items():
            if where == shard and name not in part:
                raise HFFormatError(f"{index}: weight_map puts {name} in {shard}, which does not hold it")
        tensors.update(part)
    return tensors


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` or of the shards listed in its index; failing those,
    of ``pytorch_model.bin`` (or its shards), loaded with ``weights_only=True``."""
    if (folder / INDEX_FILE).is_file():
        return _read_sharded(folder, folder / INDEX_FILE, _read_safetensors)
    if (folder / WEIGHTS_FILE).is_file():
        return _read_safetensors(folder / WEIGHTS_FILE)
    if (folder / BIN_INDEX_FILE).is_file():
        return _read_sharded(folder, folder / BIN_INDEX_FILE, _read_bin)
    if (folder / BIN_FILE).is_file():
        return _read_bin(folder / BIN_FILE)
    raise HFFormatError(f"{folder}: no {WEIGHTS_FILE}, {INDEX_FILE}, {BIN_FILE} or {BIN_INDEX_FILE}")


def weights_source(folder: Path) -> Path:
    """The file that ``read_weights`` reads first (what an error about a tensor names)."""
    for name in (INDEX_FILE, WEIGHTS_FILE, BIN_INDEX_FILE):
        if (folder / name).is_file():
            return folder / name
    return folder / BIN_FILE


def load(folder: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Transformer, BaseTokenizer, Family]:
    """An r1lab model (weights cast to ``dtype``; the aux-free bias stays fp32) and its tokenizer
    from a Hugging Face folder. Raises ``HFFormatError`` / ``TokenizerError`` naming the file and
    the field."""
    folder = Path(folder)
    family, cfg, vocab, data = read_config(folder)
    tok = load_tokenizer(folder)
    if tok.vocab_size > vocab:
        raise TokenizerError(f"{folder / 'tokenizer.json'}: vocabulary of {tok.vocab_size} tokens exceeds the embedding's {vocab} rows ({CONFIG_FILE} vocab_size)")
    hf = read_weights(folder)
    source = weights_source(folder)
    mtp, interleave = False, True
    if family.model_type == "deepseek_v3":
        interleave = data.get("rope_interleave", True) is not False
        _unfuse_experts(hf)
        # DeepSeek's checkpoints keep the MTP module as one more layer; transformers' own saves drop it.
        mtp = any(name.startswith(f"model.layers.{cfg.n_layers}.") for name in hf)
        if mtp:
            nextn = data.get("num_nextn_predict_layers", 1)
            if nextn != 1:
                raise HFFormatError(f"{folder / CONFIG_FILE}: field num_nextn_predict_layers={nextn!r} is not supported: r1lab has one MTP module (model.mtp_depth 1)")
            cfg = dataclasses.replace(cfg, mtp_depth=1)
            for copy, main in _v3_mtp_copies(cfg).items():
                if copy in hf and main in hf and not torch.equal(hf.pop(copy), hf[main]):
                    raise HFFormatError(f"{source}: tensor {copy} differs from {main}: r1lab's MTP module shares the embedding and output head")
    maps = family.maps(cfg, Layout(mtp=mtp, rope_interleave=interleave))
    theirs_all = [m.theirs.format(e=e) for m in maps for e in range(max(m.stacked, 1))]
    missing = [name for name in theirs_all if name not in hf]
    if missing:
        raise HFFormatError(f"{source}: tensor {missing[0]} is missing" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    known = set(theirs_all)
    for name in hf:
        if name in known or name.endswith("rotary_emb.inv_freq"):  # old exports carry RoPE tables
            continue
        if name == "lm_head.weight" and cfg.tie_embeddings and torch.equal(hf[name], hf["model.embed_tokens.weight"]):
            continue  # a tied head saved anyway
        raise HFFormatError(f"{source}: unexpected tensor {name} for {family.model_type} with the settings of {CONFIG_FILE}")
    # Built on the meta device, so that no weight is allocated and randomly initialised only to
    # be overwritten (most of the load time at real sizes); the loaded tensors are assigned in.
    with torch.device("meta"):
        model = Transformer(cfg, vocab)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    state = {}
    for m in maps:
        meta = torch.empty(shapes[m.ours], device="meta")
        want = tuple((m.to_hf(meta) if m.to_hf else meta).shape)  # the Hugging Face shape implied by config.json
        parts = [hf.pop(m.theirs.format(e=e)) for e in range(m.stacked)] if m.stacked else [hf.pop(m.theirs)]
        for e, t in enumerate(parts):
            name, shape = (m.theirs.format(e=e), want[1:]) if m.stacked else (m.theirs, want)
            if tuple(t.shape) != shape:
                raise HFFormatError(f"{source}: tensor {name} has shape {tuple(t.shape)}, {CONFIG_FILE} implies {shape}")
            if not t.is_floating_point():
                raise HFFormatError(f"{source}: tensor {name} has dtype {t.dtype} (quantised weights are not supported)")
        target = torch.float32 if m.ours.endswith("bias_E") else dtype
        parts = [m.from_hf(t) if m.from_hf else t for t in parts]  # each transform acts on one expert's tensor as on all
        if not m.stacked and parts[0].dtype == target and parts[0].is_contiguous():
            state[m.ours] = parts[0]
            continue
        # One copy into the final dtype and layout (casting, then making contiguous, copied twice).
        out = torch.empty(shapes[m.ours], dtype=target)
        for e, t in enumerate(parts):
            (out[e] if m.stacked else out).copy_(t)
        state[m.ours] = out
    model.load_state_dict(state, strict=True, assign=True)
    _fill_meta_buffers(model)
    return model, tok, family


def _fill_meta_buffers(model: Transformer) -> None:
    """Compute the non-persistent buffers that a meta-device build left empty: the RoPE tables
    (they depend on the config only) and the MoE layers' empty load accumulators."""
    cos, sin = rope_tables(*rope_table_args(model.cfg))
    for name, buf in list(model.named_buffers()):
        if not buf.is_meta:
            continue
        *path, leaf = name.split(".")
        value = {"rope_cos": cos, "rope_sin": sin}.get(leaf) if not path else torch.zeros(buf.shape) if leaf == "load_acc_E" else None
        if value is None:
            raise RuntimeError(f"hf.load: no value for the non-persistent buffer {name}")
        model.get_submodule(".".join(path)).register_buffer(leaf, value.to(buf.dtype), persistent=False)


# ---------------------------------------------------------------------------------------------
# Writing a Hugging Face folder


def export(model: Transformer, tok: BaseTokenizer, out_dir: str | Path, dtype: torch.dtype | None = None, mtp: bool = False) -> Family:
    """Write ``model`` and ``tok`` as a Hugging Face folder that ``AutoModelForCausalLM`` and
    ``AutoTokenizer`` load. Every check runs before anything is written; files go to a temporary
    sibling folder renamed into place at the end, so a failure leaves ``out_dir`` untouched.
    ``out_dir`` must not exist or be empty. A model's MTP module is dropped (transformers'
    DeepseekV3 does not run it) unless ``mtp``: then it is written as DeepSeek's checkpoints
    hold it, layer ``model.layers.{n_layers}``, which transformers leaves unloaded (it reports
    those tensors as unexpected) and ``load`` reads back."""
    out_dir = Path(out_dir)
    cfg = model.cfg
    family = family_for(cfg)
    if tok.vocab_size > model.vocab_size:
        raise TokenizerError(f"tokenizer.json: vocabulary of {tok.vocab_size} tokens exceeds the model's {model.vocab_size} embedding rows")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise HFFormatError(f"{out_dir}: already exists and is not an empty folder; choose another OUT_DIR")
    if mtp and model.mtp is None:
        raise HFFormatError("export.mtp is true but model.mtp_depth is 0: the model has no MTP module to export")
    if mtp and family.model_type != "deepseek_v3":
        raise HFFormatError(f"export.mtp is true but {family.architecture} has no MTP layout (only DeepseekV3 does)")
    tensors = to_hf_tensors(model, family, mtp, dtype)
    dtype_name = str(tensors["model.embed_tokens.weight"].dtype).removeprefix("torch.")
    special = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
    config = {"architectures": [family.architecture], "model_type": family.model_type, **family.write_config(cfg, model.vocab_size, mtp),
              **special, "dtype": dtype_name, "torch_dtype": dtype_name}
    with atomic_folder(out_dir) as tmp:
        safetensors.torch.save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        generation = {k: v for k, v in special.items() if v is not None}
        (tmp / GENERATION_CONFIG_FILE).write_text(json.dumps(generation, indent=2), encoding="utf-8")
        tok.save_folder(tmp)
    return family
