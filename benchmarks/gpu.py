"""GPU figures of r1lab's own model code: pretraining MFU of a DeepSeek-V3-style MoE at a realistic
size (~0.6B total, ~0.15B active parameters by default), decode tokens/s of the model's KV-cache
path, and the time of one GRPO optimisation step (``recipes/rl.backward_minibatch`` + AdamW).
Without CUDA it prints why and exits 0 (the last line is still one JSON object).

    python benchmarks/gpu.py [--steps 20] [--batch 8] [--seq 2048] [--compile] [--peak-tflops 989]

Model (V3-style, scaled down): MLA attention, sigmoid router with aux-loss-free bias and group-
limited routing (8 groups, 4 kept), 64 routed experts of width 256 (top 6) + 1 shared, the first
block dense, multi-token prediction off, a 32k vocabulary of random token ids (the character
tokenizer's ~100 symbols would make the output layer unrealistically cheap).

MFU = achieved model FLOP/s / peak bf16 dense FLOP/s, with model FLOPs per token =
6 x (active matmul parameters, output layer included, embedding lookup excluded) +
3 x layers x seq x heads x (qk + v head width) (causal attention, forward and backward), as in
PaLM (arXiv:2204.02311, app. B). Training runs fp32 master weights under bf16 autocast (the
router stays fp32), experts through ``torch.nn.functional.grouped_mm`` in bf16. The peak is read
from the device name (H100/H200: 989 TFLOP/s, A100: 312) or given with ``--peak-tflops``.

The decode figure times ``Transformer`` decoding with its KV cache (bf16 weights, batch
``--decode-batch``, greedy), the bare loop; the sampler figure times ``rollout.sample`` itself,
as RL and evaluation call it (temperature 1, the run's CPU generator, so tokens are drawn by the
inverse CDF on the device, finished-row compaction, same batch and lengths). The last line is
one JSON object, ratios first.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
"dense bf16 tensor-core peaks (no sparsity), by a substring of the device name"


def model_config(args: argparse.Namespace):
    from r1lab.config import ModelConfig

    return ModelConfig(
        ffn="moe", d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.heads, max_seq_len=args.seq,
        d_ff=4 * args.d_model, n_routed_experts=args.experts, n_shared_experts=1, top_k=args.top_k, d_expert=args.d_expert,
        aux_loss_coef=0.0, router="sigmoid", routed_scaling_factor=2.5, n_group=8, topk_group=4, first_k_dense_replace=1,
        bias_update_speed=0.001, seq_aux_loss_coef=1e-4, attention="mla", kv_lora_rank=256, q_lora_rank=512,
        qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, tie_embeddings=False)


def flops_per_token(model, cfg) -> float:
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    active = total - routed + routed * cfg.top_k // cfg.n_routed_experts - model.embed.weight.numel()
    attention = 3 * cfg.n_layers * cfg.max_seq_len * cfg.n_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim)
    return 6.0 * active + attention


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device, steps: int, warmup: int = 3) -> float:
    """Median seconds of ``fn`` over ``steps`` calls after ``warmup``, device-synchronised."""
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8, help="pretraining rows per step")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=6)
    ap.add_argument("--d-expert", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--decode-batch", type=int, default=64)
    ap.add_argument("--decode-tokens", type=int, default=256)
    ap.add_argument("--grpo-rows", type=int, default=64, help="sequences per GRPO step (prompts x group size)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model for pretraining")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="bf16 peak of the device; 0: from its name")
    ap.add_argument("--smoke-cpu", action="store_true", help="run the same code on the CPU (bf16 autocast) with the sizes given: a test of the script, not a figure")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.smoke_cpu:
        print("benchmarks/gpu.py: no CUDA device (torch.cuda.is_available() is False); nothing measured. Run it on a GPU machine.")
        print(json.dumps({"skipped": True, "reason": "no CUDA device"}))
        return 0

    from r1lab import rl
    from r1lab.config import RLConfig
    from r1lab.model.moe import after_optimizer_step, grouped_mm_works
    from r1lab.model.transformer import Transformer
    from r1lab.recipes.rl import backward_minibatch, loss_settings
    from r1lab.rollout import Rollout
    from r1lab.sft import masked_nll

    dev = torch.device("cpu" if args.smoke_cpu else "cuda")
    name = "cpu (smoke test)" if args.smoke_cpu else torch.cuda.get_device_name(dev)
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0)
    torch.backends.cuda.matmul.allow_tf32 = True
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    cfg = model_config(args)
    model = Transformer(cfg, args.vocab).to(dev)
    total = sum(p.numel() for p in model.parameters())
    fpt = flops_per_token(model, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=dev.type == "cuda")
    step_model = torch.compile(model) if args.compile else model
    results: dict = {}

    # 1. Pretraining step: forward, loss, backward, clip, AdamW, aux-free bias update.
    ids = torch.randint(0, args.vocab, (args.batch, args.seq + 1), device=dev)
    mask = torch.ones_like(ids, dtype=torch.bool)
    step_no = [0]

    def train_step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = step_model(ids[:, :-1], token_mask_BT=mask[:, :-1])
            loss = masked_nll(out.logits_BTV.float(), ids[:, 1:], mask[:, 1:]) + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step_no[0] += 1
        after_optimizer_step(model, step_no[0])

    step_s = timed(train_step, dev, args.steps)
    tokens = args.batch * args.seq
    achieved = fpt * tokens / step_s
    results["pretrain"] = {"step_s": step_s, "tokens_per_s": tokens / step_s, "model_tflops": achieved / 1e12,
                           "mfu": achieved / (peak * 1e12) if peak else None,
                           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None}

    # 2. Decoding with the KV cache (bf16 weights), greedy, batch decode-batch.
    dec = copy.deepcopy(model).to(torch.bfloat16).eval()
    B, P = args.decode_batch, min(64, args.seq // 4)
    new_tokens = min(args.decode_tokens, args.seq - P)
    prompt = torch.randint(0, args.vocab, (B, P), device=dev)

    @torch.no_grad()
    def decode() -> None:
        cache = dec.new_cache(B, P + new_tokens)
        key_mask = torch.ones(B, P, dtype=torch.bool, device=dev)  # (B, S) grows by one per token
        logits = dec(prompt, torch.arange(P, device=dev).expand(B, P), key_mask, cache).logits_BTV[:, -1]
        pos = torch.full((B, 1), P, device=dev)
        one = torch.ones(B, 1, dtype=torch.bool, device=dev)
        for _ in range(new_tokens - 1):
            tok = logits.argmax(-1, keepdim=True)
            key_mask = torch.cat([key_mask, one], dim=1)
            logits = dec(tok, pos, key_mask, cache).logits_BTV[:, -1]
            pos = pos + 1

    decode_s = timed(decode, dev, max(3, args.steps // 4), warmup=1)
    results["decode"] = {"tokens_per_s": B * new_tokens / decode_s, "batch": B, "prompt": P, "new_tokens": new_tokens, "call_s": decode_s}

    # 2b. The RL/eval sampler (rollout.sample): eos is the last id, which random weights rarely draw.
    from r1lab.config import SampleConfig
    from r1lab.rollout import sample

    gen, prompts = torch.Generator().manual_seed(0), prompt.tolist()
    sampled = [0]

    def sample_call() -> None:
        ro = sample(dec, prompts, SampleConfig(max_new_tokens=new_tokens), args.vocab - 1, 0, gen)
        sampled[0] = int(ro.completion_lengths.sum())

    sample_s = timed(sample_call, dev, max(3, args.steps // 4), warmup=1)
    results["sampler"] = {"tokens_per_s": sampled[0] / sample_s, "batch": B, "new_tokens": new_tokens, "call_s": sample_s}
    del dec

    # 3. One GRPO step on synthetic rollouts: trainer log-probs, clipped loss, backward, AdamW.
    N, P, C = args.grpo_rows, min(128, args.seq // 4), min(512, args.seq - min(128, args.seq // 4))
    r = RLConfig(micro_batch_size=16)
    r.sample.max_new_tokens = C
    tokens_NT = torch.randint(0, args.vocab, (N, P + C), device=dev)
    attn = torch.ones(N, P + C, dtype=torch.bool, device=dev)
    comp = attn.clone()
    comp[:, :P] = False
    old = torch.where(comp, -torch.rand(N, P + C, device=dev) * 3, 0.0)
    ro = Rollout(tokens_NT, attn, comp, old, P, torch.ones(N, dtype=torch.bool, device=dev))
    adv = rl.advantages(torch.randint(0, 2, (N,), device=dev).float(), 8, "grpo", "group")
    settings = loss_settings(r)

    def grpo_step() -> None:
        stats = dict.fromkeys(("clip_low", "clip_high", "kl", "ratio", "entropy", "tokens"), 0.0)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            backward_minibatch(model, ro, torch.arange(N, device=dev), comp, old, adv, None, None, r, settings, stats)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    grpo_s = timed(grpo_step, dev, max(3, args.steps // 4), warmup=2)
    results["grpo"] = {"step_s": grpo_s, "rows": N, "tokens_per_s": N * (P + C) / grpo_s}

    from r1lab.tracking import format_table

    print(format_table([{"figure": k, **{kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in v.items()}} for k, v in results.items()],
                       title=f"{name}: V3-style MoE, {total / 1e9:.3f}B parameters, seq {args.seq}, grouped_mm bf16: {grouped_mm_works(dev.type, torch.bfloat16)}"))
    summary = {
        "pretrain_mfu": results["pretrain"]["mfu"],
        "pretrain_tokens_per_s": results["pretrain"]["tokens_per_s"],
        "decode_tokens_per_s": results["decode"]["tokens_per_s"],
        "sampler_tokens_per_s": results["sampler"]["tokens_per_s"],
        "grpo_step_s": results["grpo"]["step_s"],
        "device": name, "peak_tflops": peak, "params_total": total, "flops_per_token": fpt, "compile": args.compile,
        **{f"{k}/{kk}": vv for k, v in results.items() for kk, vv in v.items()},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
