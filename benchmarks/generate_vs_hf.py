"""r1lab's KV-cache sampler against transformers' ``generate`` on the same weights, prompts and
number of new tokens; then what a real RL batch gains from r1lab's sampler speed-ups.

    python benchmarks/generate_vs_hf.py [--threads 2] [--repeats 5] [--prompts 8] [--group 8] [--new 48]

Part 1, equal work: the issue's benchmark model (Qwen2 architecture, 4 x 256, dense), copied into
a ``Qwen2ForCausalLM``; B x G rows (each `chain` prompt repeated G times, left-padded), exactly
``--new`` sampled tokens per row (eos disabled on both sides), temperature 1, no top-k/top-p,
fp32, the same thread count. Part 2, an RL batch whose rows end at different lengths (eos made
likely, since a random model rarely ends): the plain sampler (prompt prefilled per row, every
row decoding until the longest ends) against r1lab's (prompt prefilled once per group, finished
rows dropped from the batch); both draw the same tokens. Last line: one JSON object, ratios first.
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from qwen2_copy import BENCH_MODEL, check, to_qwen2
from r1lab.config import SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.rollout import left_pad, plain_sample, sample
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer
from timing import medians_interleaved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new", type=int, default=48)
    args = ap.parse_args()
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

    t = medians_interleaved({"hf": hf_generate, "rows": r1lab_rows, "grouped": r1lab_grouped}, args.repeats)
    t_hf, t_rows, t_grouped = t["hf"], t["rows"], t["grouped"]
    n_new = len(rows) * args.new

    # Part 2: an RL batch of varied lengths. Scale eos's (tied) embedding so that rows end early.
    rl_model = Transformer(BENCH_MODEL, tok.vocab_size).eval()
    rl_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        rl_model.embed.weight[tok.eos_id] *= 60
    ro = sample(rl_model, prompts, cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0), repeats=args.group)
    same = torch.equal(plain_sample(rl_model, rows, cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0))[:, : ro.tokens.shape[1]], ro.tokens)
    lengths = ro.completion_lengths.float()
    t = medians_interleaved({"plain": lambda: plain_sample(rl_model, rows, cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0)),
                             "new": lambda: sample(rl_model, prompts, cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0), repeats=args.group)},
                            args.repeats)
    t_plain, t_new = t["plain"], t["new"]

    table = [
        ("hf generate (equal work)", t_hf, n_new / t_hf),
        ("r1lab sample, one row per prompt copy", t_rows, n_new / t_rows),
        ("r1lab sample, prefill once per group", t_grouped, n_new / t_grouped),
        (f"RL batch, plain sampler (len mean {lengths.mean():.1f}, max {lengths.max():.0f})", t_plain, lengths.sum().item() / t_plain),
        ("RL batch, r1lab sampler (grouped prefill, drops finished rows)", t_new, lengths.sum().item() / t_new),
    ]
    print(f"{len(rows)} rows ({args.prompts} prompts x {args.group}), {args.new} new tokens, threads {args.threads}, median of {args.repeats} (sides timed in turns)")
    print(f"{'':68s} {'seconds':>8s} {'tokens/s':>9s}")
    for name, t, tps in table:
        print(f"{name:68s} {t:8.3f} {tps:9.0f}")
    print(f"same tokens from both RL samplers: {same}")
    print(json.dumps({"speedup_vs_hf": round(t_hf / t_rows, 2), "speedup_vs_hf_grouped": round(t_hf / t_grouped, 2),
                      "rl_batch_speedup_vs_plain": round(t_plain / t_new, 2), "hf_s": round(t_hf, 4), "r1lab_s": round(t_rows, 4),
                      "r1lab_grouped_s": round(t_grouped, 4), "rl_plain_s": round(t_plain, 4), "rl_new_s": round(t_new, 4),
                      "rl_len_mean": round(lengths.mean().item(), 1), "rl_len_max": int(lengths.max()), "same_tokens": same,
                      "threads": args.threads, "rows": len(rows), "new_tokens": args.new}))


if __name__ == "__main__":
    main()
