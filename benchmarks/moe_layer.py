"""r1lab's MoE layer against transformers' DeepseekV3MoE, and a dense SwiGLU of equal active FLOPs.

    python benchmarks/moe_layer.py [--tokens 4096] [--repeats 3] [--threads 1] [--clock wall|cpu]

Forward + backward milliseconds (median after a warm-up) of one MoE layer on T tokens, with the
same weights and the same routing on both sides (DeepSeek-V3 sigmoid router, 8 groups, top 4
groups, one shared expert): (a) transformers' eager experts (a Python loop over experts that
indexes the stacked weights), (b) transformers' grouped_mm experts where it runs forward and
backward (null otherwise), (c) r1lab's layer as built (grouped_mm where it runs, which it does on
CPU in torch 2.13; the gate on the experts' hidden activations, since F < D here), and for the
record r1lab with the gate on the experts' outputs (`r1lab_gate_out`, its choice when F >= D:
the same function, other float rounding) and with its split + unbind fallback, (d) a dense
SwiGLU whose hidden width equals the active experts' (K routed + 1 shared) x F.
`hf_eager_over_dense` bounds `speedup_vs_hf_eager`: beating HF eager by more than that would mean
beating the dense layer of equal FLOPs. `--clock cpu` times the process's CPU seconds instead of
wall seconds (with one thread: the cost on one core, without the waits of a shared machine).
Routing: "random" is the router at its init (near-even load); "skewed" adds a selection bias
that crowds tokens onto a few experts (max/mean load printed). transformers is a benchmark
extra (`pip install r1lab[bench]`), not a runtime dependency. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from transformers import DeepseekV3Config
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

from r1lab.model.moe import MoE, SwiGLU
from timing import median_s

SHAPES = [(256, 128, 64, 6), (512, 256, 64, 6)]  # (D, F, E, K)


def build(D: int, F: int, E: int, K: int, skewed: bool, impl: str) -> tuple[DeepseekV3MoE, MoE]:
    cfg = DeepseekV3Config(hidden_size=D, moe_intermediate_size=F, n_routed_experts=E, num_experts_per_tok=K, n_shared_experts=1,
                           n_group=8, topk_group=4, routed_scaling_factor=2.5, norm_topk_prob=True)
    cfg._experts_implementation = impl
    torch.manual_seed(0)
    hf = DeepseekV3MoE(cfg)
    ours = MoE(D, E, 1, K, F, aux_loss_coef=0.0, router="sigmoid", n_group=8, topk_group=4, routed_scaling_factor=2.5)
    for p in ours.parameters():
        torch.nn.init.normal_(p, std=0.02)
    with torch.no_grad():
        if skewed:  # a few experts win most selections, as in an unbalanced trained router
            ours.router.bias_E.copy_(0.1 * torch.exp(-torch.arange(E) / 8.0))
        hf.gate.weight.copy_(ours.router.weight)
        hf.gate.e_score_correction_bias.copy_(ours.router.bias_E)
        hf.experts.gate_up_proj.copy_(torch.cat([ours.experts.w1_EDH, ours.experts.w3_EDH], dim=2).transpose(1, 2))
        hf.experts.down_proj.copy_(ours.experts.w2_EHD.transpose(1, 2))
        hf.shared_experts.gate_proj.weight.copy_(ours.shared.w1.weight)
        hf.shared_experts.up_proj.weight.copy_(ours.shared.w3.weight)
        hf.shared_experts.down_proj.weight.copy_(ours.shared.w2.weight)
    return hf, ours


def fwd_bwd(module, x, ours: bool):
    def step():
        module.zero_grad(set_to_none=True)
        y = module(x)[0] if ours else module(x)
        y.sum().backward()
        return y
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall seconds or the process's CPU seconds")
    args = ap.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    rows, ratios = [], {"speedup_vs_hf_eager": [], "speedup_vs_hf_grouped": [], "slowdown_vs_dense": [], "hf_eager_over_dense": [],
                        "speedup_vs_gate_on_output": []}
    for D, F, E, K in SHAPES:
        for routing in ("random", "skewed"):
            hf, ours = build(D, F, E, K, routing == "skewed", "eager")
            x = torch.randn(1, args.tokens, D) * 1.0
            ours.train()
            y_ours, stats = ours(x)
            with torch.no_grad():
                err = (hf(x) - y_ours).abs().max().item()  # same weights, same routing
            load = stats.load_E
            t_eager = median_s(fwd_bwd(hf, x, False), args.repeats, clock)
            t_ours = median_s(fwd_bwd(ours, x, True), args.repeats, clock)
            built = ours.gate_before_down
            ours.gate_before_down = False  # the gate on the experts' outputs, for the record
            t_gate_out = median_s(fwd_bwd(ours, x, True), args.repeats, clock)
            ours.gate_before_down = built
            ours.experts.use_grouped_mm = False  # r1lab's split + unbind fallback, for the record
            t_split = median_s(fwd_bwd(ours, x, True), args.repeats, clock)
            hf_g, _ = build(D, F, E, K, routing == "skewed", "grouped_mm")
            try:
                t_grouped = median_s(fwd_bwd(hf_g, x, False), args.repeats, clock)
            except (RuntimeError, NotImplementedError):
                t_grouped = None
            dense = SwiGLU(D, F * (K + 1))
            t_dense = median_s(fwd_bwd(dense, x, False), args.repeats, clock)
            rows.append(dict(D=D, F=F, E=E, K=K, routing=routing, load_max_over_mean=float(load.max() / load.mean()), max_abs_diff=err,
                             hf_eager_ms=1e3 * t_eager, hf_grouped_ms=None if t_grouped is None else 1e3 * t_grouped,
                             r1lab_ms=1e3 * t_ours, r1lab_gate_out_ms=1e3 * t_gate_out, r1lab_split_ms=1e3 * t_split, dense_ms=1e3 * t_dense))
            ratios["speedup_vs_hf_eager"].append(t_eager / t_ours)
            ratios["speedup_vs_hf_grouped"].append(None if t_grouped is None else t_grouped / t_ours)
            ratios["slowdown_vs_dense"].append(t_ours / t_dense)
            ratios["hf_eager_over_dense"].append(t_eager / t_dense)
            ratios["speedup_vs_gate_on_output"].append(t_gate_out / t_ours)
    cols = list(rows[0])
    print(f"MoE layer forward+backward, T={args.tokens} tokens, {args.threads} thread(s), fp32, {args.clock} ms, median of {args.repeats}")
    print("  ".join(f"{c:>10}" for c in cols))
    for r in rows:
        print("  ".join(f"{'-' if r[c] is None else (f'{r[c]:.3g}' if isinstance(r[c], float) else r[c]):>10}" for c in cols))

    def gmean(v):
        v = [x for x in v if x is not None]
        return round(math.exp(sum(map(math.log, v)) / len(v)), 3) if v else None

    out = {k: gmean(v) for k, v in ratios.items()}
    out.update({f"{k}_each": [None if x is None else round(x, 3) for x in v] for k, v in ratios.items()})
    out.update(tokens=args.tokens, threads=args.threads, clock=args.clock, shapes_DFEK=SHAPES, routings=["random", "skewed"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
