"""Tiny Hugging Face folders built locally for the interop tests: a byte-level BPE trained with
``tokenizers`` on a few lines of arithmetic, and Llama / Qwen2 models from transformers configs
with random weights. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import torch

EOS = "<|endoftext|>"
CORPUS = [
    "User: Using the numbers 3, 5, 7 make 22\nAssistant:<think>3*5=15, 15+7=22</think><answer>3*5+7</answer>",
    "User: 12+30*2-7\nAssistant:<think>30*2=60 12+60=72 72-7=65</think><answer>65</answer>",
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( )",
] * 20


# Qwen2's pre-tokenizer: transformers 5's AutoTokenizer rebuilds a qwen2 folder's tokenizer with
# it whatever tokenizer.json says, so the fixture uses it (as every real Qwen2 tokenizer does).
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def bpe_tokenizer(vocab_size: int = 320):
    """A byte-level BPE shaped like Qwen2's (NFC, digit-by-digit split, byte level), trained here."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def hf_folder(path: Path, model_type: str = "qwen2", tie: bool = False, kv_heads: int = 2, vocab_pad: int = 0, std: float = 0.2, seed: int = 0, dtype=torch.float32, max_pos: int = 256,
              rope_parameters: dict | None = None) -> Path:
    """Save a random tiny ``model_type`` model and a BPE tokenizer to ``path``; returns ``path``."""
    import transformers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = bpe_tokenizer()
    eos = tok.token_to_id(EOS)
    common = dict(vocab_size=tok.get_vocab_size() + vocab_pad, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=max_pos, rms_norm_eps=1e-6,
                  tie_word_embeddings=tie, eos_token_id=eos, bos_token_id=None, pad_token_id=eos, initializer_range=std,
                  **({"rope_parameters": rope_parameters} if rope_parameters else {}))
    cfg = transformers.Qwen2Config(**common) if model_type == "qwen2" else transformers.LlamaConfig(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():  # random, not zero, biases and norms: parity must cover them
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.to(dtype).save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS).save_pretrained(path)
    # transformers 5 writes tokenizer_class "TokenizersBackend", and AutoTokenizer then rebuilds the
    # tokenizer the model_type implies (Qwen2's pre-tokenizer regex) instead of this tokenizer.json.
    tc = path / "tokenizer_config.json"
    tc.write_text(json.dumps({**json.loads(tc.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"}))
    return path


def v3_config(vocab_size: int, q_lora_rank: int | None = None, tie: bool = False, n_group: int = 4, topk_group: int = 2,
              interleave: bool = True, first_k_dense: int = 1, layers: int = 3, eos: int | None = None, rope_parameters: dict | None = None):
    """A tiny DeepseekV3 config: MLA (with or without q-LoRA), 8 sigmoid-routed experts in
    ``n_group`` groups, one shared expert, ``first_k_dense`` dense blocks first."""
    import transformers

    return transformers.DeepseekV3Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8, kv_lora_rank=16,
        q_lora_rank=q_lora_rank, qk_rope_head_dim=8, v_head_dim=8, qk_nope_head_dim=8, n_group=n_group, topk_group=topk_group,
        num_experts_per_tok=2, first_k_dense_replace=first_k_dense, max_position_embeddings=64, tie_word_embeddings=tie,
        rope_interleave=interleave, initializer_range=0.2, eos_token_id=eos, bos_token_id=None, pad_token_id=eos,
        num_mtp_layers=0, **({"rope_parameters": rope_parameters} if rope_parameters else {}))


def v3_folder(path: Path, seed: int = 0, dtype=torch.float32, **config) -> Path:
    """Save a random tiny DeepseekV3 model (random norms and a random aux-free bias, so that the
    bias changes the routing) and a BPE tokenizer to ``path``; returns ``path``."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = bpe_tokenizer()
    cfg = v3_config(tok.get_vocab_size(), eos=tok.token_to_id(EOS), **config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn_like(b) * 0.3)
    model.to(dtype).save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS).save_pretrained(path)
    tc = path / "tokenizer_config.json"
    tc.write_text(json.dumps({**json.loads(tc.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"}))
    return path
