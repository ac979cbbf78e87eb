"""The same weights on both sides of a benchmark: an r1lab dense model copied, tensor by tensor,
into a transformers ``Qwen2ForCausalLM`` (zero q/k/v biases, tied embeddings, RMSNorm eps 1e-6,
the same RoPE), and r1lab's character tokenizer as a ``PreTrainedTokenizerFast``.

A direct state-dict copy, until the interop issue's Hugging Face export lands; ``check`` proves
the two models give the same logits. Benchmark-only (transformers is the ``bench`` extra).
"""

from __future__ import annotations

import torch

from r1lab.config import ModelConfig
from r1lab.model.transformer import Transformer
from r1lab.tokenizer import BOS, EOS, PAD, UNK, CharTokenizer

BENCH_MODEL = ModelConfig(ffn="dense", d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=768, max_seq_len=128)
"the issue's benchmark model: Qwen2 architecture, hidden 256, 4 layers, 4 heads, 4 KV heads, intermediate 768"


def to_qwen2(model: Transformer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    c = model.cfg
    assert c.ffn == "dense", "only dense r1lab models map onto Qwen2"
    hf_cfg = Qwen2Config(vocab_size=model.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.n_layers,
                         num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads, max_position_embeddings=c.max_seq_len,
                         rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta}, tie_word_embeddings=True,
                         attention_dropout=0.0, use_sliding_window=False, torch_dtype="float32")
    hf = Qwen2ForCausalLM(hf_cfg).float().eval()
    sd = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight}
    for i, blk in enumerate(model.layers):
        p = f"model.layers.{i}."
        sd |= {p + "input_layernorm.weight": blk.attn_norm.weight, p + "post_attention_layernorm.weight": blk.ffn_norm.weight,
               p + "self_attn.q_proj.weight": blk.attn.wq.weight, p + "self_attn.k_proj.weight": blk.attn.wk.weight,
               p + "self_attn.v_proj.weight": blk.attn.wv.weight, p + "self_attn.o_proj.weight": blk.attn.wo.weight,
               p + "mlp.gate_proj.weight": blk.ffn.w1.weight, p + "mlp.up_proj.weight": blk.ffn.w3.weight,
               p + "mlp.down_proj.weight": blk.ffn.w2.weight}
        for b in ("q", "k", "v"):
            sd[p + f"self_attn.{b}_proj.bias"] = torch.zeros_like(getattr(hf.model.layers[i].self_attn, f"{b}_proj").bias)
    sd = {k: v.detach().clone() for k, v in sd.items()}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    return hf


def hf_tokenizer(tok: CharTokenizer):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok.tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, padding_side="left")


@torch.no_grad()
def check(model: Transformer, hf, ids: list[int]) -> float:
    """Largest |logit difference| of the two models on one sequence."""
    x = torch.tensor([ids])
    return float((model(x).logits_BTV - hf(x).logits).abs().max())
