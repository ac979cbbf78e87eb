"""Parity and load time at a real model's shapes: a folder with Qwen2.5-0.5B's published config
(vocabulary 151,936, width 896, 14 query / 2 key-value heads, q/k/v biases, tied embeddings,
RoPE base 1e6) but only `--layers` of its 24 layers and random weights (nothing is downloaded),
saved in bf16 as 100 MB safetensors shards. Loads it with `r1lab.model.hf.load` and with
transformers' `AutoModelForCausalLM.from_pretrained`, compares their fp32 logits on random
tokens, and times both loads in one process.

`--family deepseek_v3` does the same for DeepSeek-V3's layout at a toy width (not a published
model): width 512, 8 heads, MLA with q-LoRA 192 / KV-LoRA 128, nope/rope/value head dims
64/32/64, 64 routed experts of width 256 + 1 shared, top 6 in 8 groups (4 kept), routed scaling
2.5, the first layer dense, vocabulary 32,000, a random aux-free bias, DeepSeek's interleaved
rotary layout; the experts are stored per expert, as transformers saves them.

    python benchmarks/hf_parity.py [--family qwen2|deepseek_v3] [--layers 2] [--tokens 64] [--repeats 3]

The last line is one JSON object, ratios first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the BPE fixture

from hf_fixtures import EOS, bpe_tokenizer  # noqa: E402
from r1lab.model import hf  # noqa: E402
from timing import median_s  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=["qwen2", "deepseek_v3"], default="qwen2")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import transformers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(1)
    if args.family == "qwen2":
        cfg = transformers.Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=args.layers,
                                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
                                       rope_theta=1000000.0, tie_word_embeddings=True, eos_token_id=0)
        title = "Qwen2.5-0.5B shapes"
    else:
        cfg = transformers.DeepseekV3Config(vocab_size=32000, hidden_size=512, intermediate_size=1536, moe_intermediate_size=256,
                                            num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=8, n_shared_experts=1,
                                            n_routed_experts=64, num_experts_per_tok=6, n_group=8, topk_group=4, routed_scaling_factor=2.5,
                                            kv_lora_rank=128, q_lora_rank=192, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
                                            first_k_dense_replace=1, max_position_embeddings=4096, rope_interleave=True,
                                            tie_word_embeddings=False, num_mtp_layers=0, eos_token_id=0)
        title = "DeepSeek-V3 layout at width 512"
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        with torch.no_grad():  # a trained-looking aux-free bias, so that it steers the routing
            for name, b in model.named_buffers():
                if name.endswith("e_score_correction_bias"):
                    b.copy_(torch.randn(b.shape) * 0.01)
        model.to(torch.bfloat16).save_pretrained(tmp, max_shard_size="100MB")
        PreTrainedTokenizerFast(tokenizer_object=bpe_tokenizer(), eos_token=EOS).save_pretrained(tmp)
        shards = len(list(Path(tmp).glob("model-*.safetensors")))
        ours, _, _ = hf.load(tmp)
        theirs = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        ids = torch.randint(0, cfg.vocab_size, (2, args.tokens), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            a, b = ours(ids).logits_BTV, theirs(ids).logits
        diff, scale = float((a - b).abs().max()), float(b.abs().max())
        t_ours = median_s(lambda: hf.load(tmp), args.repeats)
        t_theirs = median_s(lambda: AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32), args.repeats)
    params = sum(p.numel() for p in ours.parameters())
    print(f"{title}, {args.layers} layers, {params / 1e6:.0f}M parameters, bf16 in {shards} shards, 1 thread")
    print(f"{'':<14} {'load s':>8}")
    print(f"{'r1lab':<14} {t_ours:>8.2f}")
    print(f"{'transformers':<14} {t_theirs:>8.2f}")
    print(f"max |logit difference| {diff:.2e} (largest logit {scale:.2f}), {2 * args.tokens} tokens, fp32")
    print(json.dumps({"load_time_r1lab_over_transformers": t_ours / t_theirs, "max_abs_logit_diff": diff, "max_abs_logit": scale,
                      "family": args.family, "layers": args.layers, "params_m": params / 1e6, "shards": shards, "threads": 1}))


if __name__ == "__main__":
    main()
