"""The same weights on both sides of a benchmark: an r1lab dense model as a transformers
``Qwen2ForCausalLM`` (zero q/k/v biases, tied embeddings, RMSNorm eps 1e-6, the same RoPE), and
r1lab's character tokenizer as a ``PreTrainedTokenizerFast``.

The config and tensors come from r1lab's Hugging Face export (``r1lab.model.hf``, the Qwen2
family), built in memory instead of through a folder; ``check`` proves the two models give the
same logits. Benchmark-only (transformers is the ``bench`` extra).
"""

from __future__ import annotations

import torch

from r1lab.config import ModelConfig
from r1lab.model import hf as hf_format
from r1lab.model.transformer import Transformer
from r1lab.tokenizer import BOS, EOS, PAD, UNK, CharTokenizer

BENCH_MODEL = ModelConfig(ffn="dense", d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=768, max_seq_len=128)
"the issue's benchmark model: Qwen2 architecture, hidden 256, 4 layers, 4 heads, 4 KV heads, intermediate 768"


def to_qwen2(model: Transformer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    family = hf_format.FAMILIES["qwen2"]
    fields = family.write_config(model.cfg, model.vocab_size, False)
    hf = Qwen2ForCausalLM(Qwen2Config(**fields, attention_dropout=0.0, dtype="float32")).float().eval()
    sd = {k: v.clone() for k, v in hf_format.to_hf_tensors(model, family).items()}
    for name, p in hf.state_dict().items():  # r1lab's model has no q/k/v biases: Qwen2's are zero
        if name.endswith("_proj.bias") and name not in sd:
            sd[name] = torch.zeros_like(p)
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
