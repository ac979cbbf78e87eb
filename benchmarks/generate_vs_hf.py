"""r1lab's KV-cache sampler against transformers' ``generate`` on the same weights, prompts and
number of new tokens; then what a real RL batch gains from r1lab's sampler speed-ups.

    python benchmarks/generate_vs_hf.py [--threads 2] [--repeats 5] [--prompts 8] [--group 8] [--new 48] [--compile] [--cpu-time]

Part 1, equal work: the issue's benchmark model (Qwen2 architecture, 4 x 256, dense), copied into
a ``Qwen2ForCausalLM``; B x G rows (each `chain` prompt repeated G times, left-padded), exactly
``--new`` sampled tokens per row (eos disabled on both sides), temperature 1, no top-k/top-p,
fp32, the same thread count. Part 2, an RL batch whose rows end at different lengths (eos made
likely, since a random model rarely ends): the plain sampler (prompt prefilled per row, every
row decoding until the longest ends) against r1lab's (prompt prefilled once per group, finished
rows dropped from the batch); both draw the same tokens. Last line: one JSON object, ratios first.

Beside them, timed in the same turns, the matmul floor of part 1: the model's dense matmuls alone
(q/k/v, output, FFN and head) with its own weights, at part 1's shapes and in the sampler's order:
the prefill of the B x G padded prompt rows (head at the last position only), then one B x G-row
step per new token but the last; no attention, no other operation. Any
sampler doing part 1's work in fp32 with the same matrix kernels spends at least that, so
``hf_over_floor`` is the ceiling of ``speedup_vs_hf`` and ``r1lab_over_floor`` what r1lab spends
beyond its matmuls. ``--compile`` adds r1lab with ``sample.compile`` (a compiled decode step;
the first call, which compiles, is timed apart in wall seconds and left out of the median).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
import torch.nn.functional as F

from qwen2_copy import BENCH_MODEL, check, to_qwen2
from r1lab.config import SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.rollout import left_pad, plain_sample, sample
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer
from timing import medians_interleaved


def matmul_floor(model: Transformer, n_rows: int, prompt_len: int, new_tokens: int):
    """A function running the sampler's dense matmuls alone (see the module docstring): the
    weights ``fused_decoding`` uses (q, k and v as one matrix, the same FLOPs as three), inputs
    of the right shapes with random values (a matmul's time does not depend on them)."""
    mats = []
    for block in model.layers:
        a, f = block.attn, block.ffn
        mats.append((torch.cat([a.wq.weight, a.wk.weight, a.wv.weight]).detach(), a.wo.weight.detach(), f.w1.weight.detach(),
                     f.w3.weight.detach(), f.w2.weight.detach()))
    head = model.head_weight().detach()
    D, H = model.cfg.d_model, mats[0][2].shape[0]
    shapes = [n_rows * prompt_len] + [n_rows] * (new_tokens - 1)  # rows of each forward pass
    inputs = {M: (torch.randn(M, D), torch.randn(M, H)) for M in set(shapes)}

    @torch.inference_mode()
    def run():
        for M in shapes:
            x_MD, h_MH = inputs[M]
            for w_qkv, w_o, w_1, w_3, w_2 in mats:
                F.linear(x_MD, w_qkv), F.linear(x_MD, w_o), F.linear(x_MD, w_1), F.linear(x_MD, w_3), F.linear(h_MH, w_2)
            F.linear(x_MD[:n_rows], head)  # logits (n_rows, V)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new", type=int, default=48)
    ap.add_argument("--compile", action="store_true", help="also time r1lab with sample.compile (its one-off compile time reported apart)")
    ap.add_argument("--cpu-time", action="store_true", help="time process CPU seconds instead of wall seconds (a shared machine; with --threads 1)")
    args = ap.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(args.threads)

    tok, task = CharTokenizer.build(), get_task("chain")
    torch.manual_seed(0)
    model = Transformer(BENCH_MODEL, tok.vocab_size).eval()
    hf = to_qwen2(model)
    rng = random.Random(0)
    questions = [task.sample(rng, "train").question for _ in range(args.prompts)]
    prompts = [tok.prompt_ids(q) for q in questions]
    rows = [p for p in prompts for _ in range(args.group)]
    assert check(model, hf, rows[0]) < 1e-4, "the two models disagree"
    cfg = SampleConfig(temperature=1.0, top_p=1.0, max_new_tokens=args.new)

    # Part 1: equal work, exactly args.new tokens per row (eos id -1 never matches).
    ids, mask = left_pad(rows, tok.pad_id)

    def r1lab_rows():
        ro = sample(model, rows, cfg, eos_id=-1, pad_id=tok.pad_id, gen=torch.Generator().manual_seed(0))
        assert ro.completion_lengths.min() == args.new

    def r1lab_grouped():
        sample(model, prompts, cfg, eos_id=-1, pad_id=tok.pad_id, gen=torch.Generator().manual_seed(0), repeats=args.group)

    @torch.no_grad()
    def hf_generate():
        out = hf.generate(input_ids=ids, attention_mask=mask.long(), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                          max_new_tokens=args.new, min_new_tokens=args.new, pad_token_id=tok.pad_id, eos_token_id=None)
        assert out.shape[1] == ids.shape[1] + args.new

    floor = matmul_floor(model, len(rows), ids.shape[1], args.new)
    sides = {"hf": hf_generate, "rows": r1lab_rows, "grouped": r1lab_grouped, "floor": floor}
    compile_s, same_compiled = None, None
    if args.compile:  # compiled once here, in wall seconds (compiler subprocesses included), then timed with the others
        cfg_c = SampleConfig(temperature=1.0, top_p=1.0, max_new_tokens=args.new, compile=True)
        compiled = lambda: sample(model, rows, cfg_c, eos_id=-1, pad_id=tok.pad_id, gen=torch.Generator().manual_seed(0))  # noqa: E731
        t0 = time.perf_counter()
        ro_c = compiled()
        compile_s = time.perf_counter() - t0
        same_compiled = torch.equal(ro_c.tokens, sample(model, rows, cfg, eos_id=-1, pad_id=tok.pad_id, gen=torch.Generator().manual_seed(0)).tokens)
        sides["compiled"] = compiled
    t = medians_interleaved(sides, args.repeats, clock)
    t_hf, t_rows, t_grouped, t_floor, t_compiled = t["hf"], t["rows"], t["grouped"], t["floor"], t.get("compiled")
    n_new = len(rows) * args.new

    # Part 2: an RL batch of varied lengths. Scale eos's (tied) embedding so that rows end early.
    rl_model = Transformer(BENCH_MODEL, tok.vocab_size).eval()
    rl_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        rl_model.embed.weight[tok.eos_id] *= 60
    ro = sample(rl_model, prompts, cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0), repeats=args.group)
    same = torch.equal(plain_sample(rl_model, rows, cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0))[:, : ro.tokens.shape[1]], ro.tokens)
    lengths = ro.completion_lengths.float()
    rl_sides = {"plain": lambda: plain_sample(rl_model, rows, cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0)),
                "new": lambda: sample(rl_model, prompts, cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0), repeats=args.group)}
    if args.compile:  # every row decodes until all end, no shared prompt: the compiled step's batch never changes shape
        rl_sides["compiled"] = lambda: sample(rl_model, prompts, cfg_c, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0), repeats=args.group)
    t = medians_interleaved(rl_sides, args.repeats, clock)
    t_plain, t_new, t_rl_compiled = t["plain"], t["new"], t.get("compiled")

    table = [
        ("hf generate (equal work)", t_hf, n_new / t_hf),
        ("r1lab sample, one row per prompt copy", t_rows, n_new / t_rows),
        ("r1lab sample, prefill once per group", t_grouped, n_new / t_grouped),
        ("matmul floor (part 1's dense matmuls alone, no attention)", t_floor, n_new / t_floor),
        *([("r1lab sample, sample.compile (one row per prompt copy)", t_compiled, n_new / t_compiled)] if args.compile else []),
        (f"RL batch, plain sampler (len mean {lengths.mean():.1f}, max {lengths.max():.0f})", t_plain, lengths.sum().item() / t_plain),
        ("RL batch, r1lab sampler (grouped prefill, drops finished rows)", t_new, lengths.sum().item() / t_new),
        *([("RL batch, sample.compile (every row until all end)", t_rl_compiled, lengths.sum().item() / t_rl_compiled)] if args.compile else []),
    ]
    print(f"{len(rows)} rows ({args.prompts} prompts x {args.group}), {args.new} new tokens, threads {args.threads}, median of {args.repeats} (sides timed in turns){', process CPU seconds' if args.cpu_time else ''}")
    print(f"{'':68s} {'seconds':>8s} {'tokens/s':>9s}")
    for name, t, tps in table:
        print(f"{name:68s} {t:8.3f} {tps:9.0f}")
    print(f"same tokens from both RL samplers: {same}")
    if args.compile:
        print(f"sample.compile: first call {compile_s:.1f} wall s (compiling included, once per batch shape); same tokens as eager: {same_compiled}")
    print(f"beyond the matmul floor: hf generate {t_hf / t_floor:.2f}x (the ceiling of speedup_vs_hf), r1lab {t_rows / t_floor:.2f}x")
    print(json.dumps({"speedup_vs_hf": round(t_hf / t_rows, 2), "speedup_vs_hf_grouped": round(t_hf / t_grouped, 2),
                      "rl_batch_speedup_vs_plain": round(t_plain / t_new, 2),
                      **({"speedup_vs_hf_compiled": round(t_hf / t_compiled, 2), "compile_first_call_s": round(compile_s, 1),
                          "r1lab_compiled_s": round(t_compiled, 4), "same_tokens_compiled": same_compiled,
                          "rl_batch_compiled_speedup_vs_plain": round(t_plain / t_rl_compiled, 2)} if args.compile else {}),
                      "hf_over_floor": round(t_hf / t_floor, 2), "r1lab_over_floor": round(t_rows / t_floor, 2), "floor_s": round(t_floor, 4), "hf_s": round(t_hf, 4), "r1lab_s": round(t_rows, 4),
                      "r1lab_grouped_s": round(t_grouped, 4), "rl_plain_s": round(t_plain, 4), "rl_new_s": round(t_new, 4),
                      "rl_len_mean": round(lengths.mean().item(), 1), "rl_len_max": int(lengths.max()), "same_tokens": same,
                      "threads": args.threads, "cpu_time": args.cpu_time, "rows": len(rows), "new_tokens": args.new}))


if __name__ == "__main__":
    main()
