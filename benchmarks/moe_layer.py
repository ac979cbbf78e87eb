"""r1lab's MoE layer against transformers' DeepseekV3MoE, and a dense SwiGLU of equal active FLOPs.

    python benchmarks/moe_layer.py [--tokens 4096] [--repeats 7] [--threads 1] [--clock wall|cpu]

Forward + backward milliseconds of one MoE layer on T tokens, with the same weights and the same
routing on both sides (DeepSeek-V3 sigmoid router, 8 groups, top 4 groups, one shared expert):
(a) transformers' eager experts (a Python loop over experts that indexes the stacked weights),
(b) transformers' grouped_mm experts where it runs forward and backward (null otherwise),
(c) r1lab's layer as built (`r1lab`: `F.grouped_mm`, which runs on CPU in torch 2.13; the gate on
the experts' hidden activations, since F < D), and for the record r1lab forced onto
`F.grouped_mm` (`r1lab_grouped`: the same code as `r1lab`, so `speedup_vs_r1lab_grouped_mm` is
the timing's own noise), forced onto split + unbind (`r1lab_split`), and with the gate on the
experts' outputs (`r1lab_gate_out`, its choice when F >= D: the same function, other float
rounding), (d) a dense SwiGLU whose hidden width equals the active experts' (K routed + 1
shared) x F.
All implementations of a case are timed in turns (one warm-up each, then each repeat runs every
one once, in a shuffled order), so that a load change hits all alike; each time is the median of
the repeats, and the ratios are ratios of those medians.
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
from timing import medians_interleaved

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


def fwd_bwd(module, x, ours: bool, dispatch: str = "auto", gate_before_down: bool | None = None):
    if ours and gate_before_down is None:
        gate_before_down = module.gate_before_down  # as built

    def step():
        module.zero_grad(set_to_none=True)
        if ours:  # this variant's settings, set before each call: the variants share one layer
            module.experts.dispatch = dispatch
            module.gate_before_down = gate_before_down
        y = module(x)[0] if ours else module(x)
        y.sum().backward()
        return y
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall seconds or the process's CPU seconds")
    args = ap.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    rows, ratios = [], {"speedup_vs_hf_eager": [], "speedup_vs_hf_grouped": [], "slowdown_vs_dense": [], "hf_eager_over_dense": [],
                        "speedup_vs_r1lab_grouped_mm": [], "speedup_vs_r1lab_split": [], "speedup_vs_gate_on_output": []}
    for D, F, E, K in SHAPES:
        for routing in ("random", "skewed"):
            hf, ours = build(D, F, E, K, routing == "skewed", "eager")
            x = torch.randn(1, args.tokens, D) * 1.0
            ours.train()
            y_ours, stats = ours(x)
            with torch.no_grad():
                err = (hf(x) - y_ours).abs().max().item()  # same weights, same routing
            load = stats.load_E
            fns = {"hf_eager": fwd_bwd(hf, x, False), "r1lab": fwd_bwd(ours, x, True),
                   "r1lab_grouped": fwd_bwd(ours, x, True, dispatch="grouped_mm"), "r1lab_split": fwd_bwd(ours, x, True, dispatch="split"),
                   "r1lab_gate_out": fwd_bwd(ours, x, True, gate_before_down=False)}
            hf_g, _ = build(D, F, E, K, routing == "skewed", "grouped_mm")
            try:
                fwd_bwd(hf_g, x, False)()
                fns["hf_grouped"] = fwd_bwd(hf_g, x, False)
            except (RuntimeError, NotImplementedError):
                pass
            fns["dense"] = fwd_bwd(SwiGLU(D, F * (K + 1)), x, False)
            t = medians_interleaved(fns, args.repeats, clock)
            t_ours, t_grouped = t["r1lab"], t.get("hf_grouped")
            rows.append(dict(D=D, F=F, E=E, K=K, routing=routing, load_max_over_mean=float(load.max() / load.mean()), max_abs_diff=err,
                             hf_eager_ms=1e3 * t["hf_eager"], hf_grouped_ms=None if t_grouped is None else 1e3 * t_grouped,
                             r1lab_ms=1e3 * t_ours, r1lab_grouped_ms=1e3 * t["r1lab_grouped"], r1lab_split_ms=1e3 * t["r1lab_split"],
                             r1lab_gate_out_ms=1e3 * t["r1lab_gate_out"], dense_ms=1e3 * t["dense"]))
            ratios["speedup_vs_hf_eager"].append(t["hf_eager"] / t_ours)
            ratios["speedup_vs_hf_grouped"].append(None if t_grouped is None else t_grouped / t_ours)
            ratios["slowdown_vs_dense"].append(t_ours / t["dense"])
            ratios["hf_eager_over_dense"].append(t["hf_eager"] / t["dense"])
            ratios["speedup_vs_r1lab_grouped_mm"].append(t["r1lab_grouped"] / t_ours)
            ratios["speedup_vs_r1lab_split"].append(t["r1lab_split"] / t_ours)
            ratios["speedup_vs_gate_on_output"].append(t["r1lab_gate_out"] / t_ours)
    cols = list(rows[0])
    print(f"MoE layer forward+backward, T={args.tokens} tokens, {args.threads} thread(s), fp32, {args.clock} ms, "
          f"median of {args.repeats}, implementations timed in turns")
    print("  ".join(f"{c:>10}" for c in cols))
    for r in rows:
        print("  ".join(f"{'-' if r[c] is None else (f'{r[c]:.3g}' if isinstance(r[c], float) else r[c]):>10}" for c in cols))

    def gmean(v):
        v = [x for x in v if x is not None]
        return round(math.exp(sum(map(math.log, v)) / len(v)), 3) if v else None

    out = {k: gmean(v) for k, v in ratios.items()}
    out.update({f"{k}_each": [None if x is None else round(x, 3) for x in v] for k, v in ratios.items()})
    out.update(tokens=args.tokens, threads=args.threads, clock=args.clock, repeats=args.repeats, shapes_DFEK=SHAPES,
               routings=["random", "skewed"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
