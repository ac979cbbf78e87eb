"""Import and export Hugging Face checkpoints from and to local folders (no hub access).

A Hugging Face folder holds ``config.json``, weights in ``model.safetensors`` (or shards listed
in ``model.safetensors.index.json``), ``tokenizer.json`` and ``tokenizer_config.json``. r1lab's
dense model is the LLaMA block (pre-norm RMSNorm, rotate-half RoPE, GQA, SwiGLU), so LLaMA
(Touvron et al., arXiv:2302.13971) and Qwen2 (arXiv:2407.10671: LLaMA plus q/k/v biases) map
onto it name for name; weights are copied, never transformed, so round trips are bit for bit.

One ``Family`` per Hugging Face ``model_type`` in ``FAMILIES``: how to read its config into a
``ModelConfig`` (refusing, field by field, what r1lab cannot compute), how to write one back, and
the tensor-name map. A DeepseekV3 entry (MoE + MLA) is one more row once r1lab's MoE/MLA modules
are settled; it is not here yet, so MoE models cannot be exported.

Departures: RoPE scaling (LLaMA-3's ``rope_scaling``), sliding-window attention, attention
output or MLP biases and a ``head_dim`` other than ``hidden_size / num_attention_heads`` are
refused with an error naming the field, not approximated.
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
from r1lab.model.transformer import Transformer
from r1lab.tokenizer import BaseTokenizer, TokenizerError
from r1lab.tokenizer import load as load_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
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


def _rope_theta(f: _Fields) -> float:
    """RoPE base, from transformers 5's ``rope_parameters`` or the older ``rope_theta``; any scaling is refused."""
    params = f.data.get("rope_parameters")
    if isinstance(params, dict):
        f.refuse("rope_parameters", params.get("rope_type", "default") == "default", "only plain RoPE (rope_type default) is implemented")
        return float(params.get("rope_theta", 10000.0))
    f.refuse("rope_scaling", f.data.get("rope_scaling") in (None, {}), "RoPE scaling is not implemented")
    return f.get("rope_theta", float, 10000.0)


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
        rope_theta=_rope_theta(f),
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
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_theta": cfg.rope_theta,  # what transformers 4.x reads
        "hidden_act": "silu",
        "initializer_range": cfg.init_std,
        "tie_word_embeddings": cfg.tie_embeddings,
        "vocab_size": vocab_size,
        "use_cache": True,
    }


@dataclass(frozen=True)
class Family:
    """One Hugging Face architecture that r1lab reads and writes."""

    model_type: str
    architecture: str
    read_config: Callable[[_Fields], tuple[ModelConfig, int]]
    "config.json fields -> (ModelConfig, vocab_size); refuses what r1lab cannot compute"
    write_config: Callable[[ModelConfig, int], dict]
    "ModelConfig, vocab_size -> the family-specific config.json fields"
    names: Callable[[ModelConfig], dict[str, str]]
    "r1lab parameter name -> Hugging Face tensor name"


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "LlamaForCausalLM", _llama_config,
                    lambda cfg, v: {**_dense_hf_config(cfg, v), "attention_bias": False, "mlp_bias": False}, dense_names),
    "qwen2": Family("qwen2", "Qwen2ForCausalLM", _qwen2_config,
                    lambda cfg, v: {**_dense_hf_config(cfg, v), "use_sliding_window": False, "max_window_layers": cfg.n_layers}, dense_names),
}
"Hugging Face model_type -> Family; a DeepseekV3 row comes with r1lab's MLA/MoE mapping"


def family_for(cfg: ModelConfig) -> Family:
    """The family an r1lab model exports as: LLaMA, or Qwen2 when it has q/k/v biases."""
    if cfg.ffn != "dense":
        raise HFFormatError(f"model.ffn={cfg.ffn!r} cannot be exported: LLaMA and Qwen2 are dense, and the DeepseekV3 (MoE) mapping is not implemented yet")
    return FAMILIES["qwen2" if cfg.qkv_bias else "llama"]


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


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` or of the shards listed in its index."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, OSError, KeyError, TypeError) as err:
            raise HFFormatError(f"{index}: field weight_map is missing or not valid JSON ({err})") from None
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not (folder / shard).is_file():
                raise HFFormatError(f"{index}: shard {shard} listed in weight_map is missing")
            part = _read_safetensors(folder / shard)
            for name, where in weight_map.items():
                if where == shard and name not in part:
                    raise HFFormatError(f"{index}: weight_map puts {name} in {shard}, which does not hold it")
            tensors.update(part)
        return tensors
    if (folder / WEIGHTS_FILE).is_file():
        return _read_safetensors(folder / WEIGHTS_FILE)
    raise HFFormatError(f"{folder}: no {WEIGHTS_FILE} or {INDEX_FILE} (only safetensors weights are read; "
                        "save_pretrained(..., safe_serialization=True) writes them)")


def load(folder: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Transformer, BaseTokenizer, Family]:
    """An r1lab model (weights cast to ``dtype``) and its tokenizer from a Hugging Face folder.
    Raises ``HFFormatError`` / ``TokenizerError`` naming the file and the field."""
    folder = Path(folder)
    family, cfg, vocab, _ = read_config(folder)
    tok = load_tokenizer(folder)
    if tok.vocab_size > vocab:
        raise TokenizerError(f"{folder / 'tokenizer.json'}: vocabulary of {tok.vocab_size} tokens exceeds the embedding's {vocab} rows ({CONFIG_FILE} vocab_size)")
    hf = read_weights(folder)
    names = family.names(cfg)
    source = folder / (INDEX_FILE if (folder / INDEX_FILE).is_file() else WEIGHTS_FILE)
    missing = [theirs for theirs in names.values() if theirs not in hf]
    if missing:
        raise HFFormatError(f"{source}: tensor {missing[0]} is missing" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    known = set(names.values())
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
    for ours, theirs in names.items():
        t = hf.pop(theirs)
        if t.shape != shapes[ours]:
            raise HFFormatError(f"{source}: tensor {theirs} has shape {tuple(t.shape)}, {CONFIG_FILE} implies {tuple(shapes[ours])}")
        if not t.is_floating_point():
            raise HFFormatError(f"{source}: tensor {theirs} has dtype {t.dtype} (quantised weights are not supported)")
        state[ours] = t.to(dtype)
    model.load_state_dict(state, strict=True, assign=True)
    _fill_meta_buffers(model, cfg)
    return model, tok, family


def _fill_meta_buffers(model: Transformer, cfg: ModelConfig) -> None:
    """Compute the non-persistent buffers (RoPE tables) that a meta-device build left empty, by
    building a one-layer, one-token model on the CPU: they depend on the config only, and every
    layer's are those of layer 0."""
    donor = dict(Transformer(dataclasses.replace(cfg, n_layers=1), 1).named_buffers())
    for name, buf in list(model.named_buffers()):
        if not buf.is_meta:
            continue
        parts = name.split(".")
        key = ".".join(["layers", "0", *parts[2:]]) if parts[0] == "layers" else name
        module = model.get_submodule(".".join(parts[:-1]))
        module.register_buffer(parts[-1], donor[key].to(buf.dtype), persistent=False)


# ---------------------------------------------------------------------------------------------
# Writing a Hugging Face folder


def export(model: Transformer, tok: BaseTokenizer, out_dir: str | Path, dtype: torch.dtype | None = None) -> Family:
    """Write ``model`` and ``tok`` as a Hugging Face folder that ``AutoModelForCausalLM`` and
    ``AutoTokenizer`` load. Every check runs before anything is written; files go to a temporary
    sibling folder renamed into place at the end, so a failure leaves ``out_dir`` untouched.
    ``out_dir`` must not exist or be empty."""
    out_dir = Path(out_dir)
    cfg = model.cfg
    family = family_for(cfg)
    if tok.vocab_size > model.vocab_size:
        raise TokenizerError(f"tokenizer.json: vocabulary of {tok.vocab_size} tokens exceeds the model's {model.vocab_size} embedding rows")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise HFFormatError(f"{out_dir}: already exists and is not an empty folder; choose another OUT_DIR")
    sd = model.state_dict()
    names = family.names(cfg)
    tensors = {theirs: sd[ours].detach().to(dtype or sd[ours].dtype).contiguous() for ours, theirs in names.items()}
    dtype_name = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    special = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
    config = {"architectures": [family.architecture], "model_type": family.model_type, **family.write_config(cfg, model.vocab_size),
              **special, "dtype": dtype_name, "torch_dtype": dtype_name}
    with atomic_folder(out_dir) as tmp:
        safetensors.torch.save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        generation = {k: v for k, v in special.items() if v is not None}
        (tmp / GENERATION_CONFIG_FILE).write_text(json.dumps(generation, indent=2), encoding="utf-8")
        tok.save_folder(tmp)
    return family
