"""Peak memory of the trainer's log-probs (forward + backward) for a real vocabulary: the full
(tokens, V) logits as `rollout.policy_logprobs` computes them by default, against
`r1lab.logprobs.token_logprobs` in chunks (`--rl.logprob_chunk`).

    python benchmarks/vocab_memory.py [--vocab 151936] [--rows 64] [--seq 512] [--d 64] [--chunk 1024]
                                      [--full-rows 1 2 4] [--quick]

Each measurement runs in a fresh child process: the peak resident memory (VmHWM, reset through
/proc/self/clear_refs) during one forward + backward minus the resident memory just before it,
so the inputs, weights and the torch runtime are not counted; the gradient of the output matrix
(V x d floats) is. The full computation at 64 x 512 tokens needs about 60 GB, more than this
machine has, so it is measured at `--full-rows` rows of `--seq` tokens and extrapolated
linearly (it is linear in tokens: every term is a (tokens, V) tensor); the chunked one is
measured at the full size and at the small sizes too, so one ratio is measured at equal size.
The last line is one JSON object, ratios first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from r1lab.logprobs import token_logprobs


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(method: str, rows: int, seq: int, vocab: int, d: int, chunk: int) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(rows, seq, d, generator=g) * 0.5).requires_grad_()
    w = (torch.randn(vocab, d, generator=g) * 0.05).requires_grad_()
    tokens = torch.randint(0, vocab, (rows, seq), generator=g)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before_kb = _status_kb("VmRSS")
    t0 = time.perf_counter()
    if method == "full":  # the head of rollout.policy_logprobs without chunking, from hidden states
        logits = F.linear(h, w)  # (N, T, V)
        logp = F.log_softmax(logits[:, :-1].float() / 1.0, dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    else:
        logp = token_logprobs(h[:, :-1], w, tokens[:, 1:], 1.0, chunk)
    logp.sum().backward()
    seconds = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM")
    print(json.dumps({"extra_mb": (peak_kb - before_kb) / 1024, "seconds": seconds, "logp_sum": float(logp.sum())}))


def measure(method: str, rows: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--rows", str(rows), "--seq", str(args.seq), "--vocab", str(args.vocab),
           "--d", str(args.d), "--chunk", str(args.chunk)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--d", type=int, default=64, help="hidden width (small: the logits, not the model, are measured)")
    ap.add_argument("--chunk", type=int, default=1024, help="tokens per chunk")
    ap.add_argument("--full-rows", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--quick", action="store_true", help="a small vocabulary and sizes, for the test suite")
    ap.add_argument("--child", choices=["full", "chunked"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.vocab, args.rows, args.seq, args.chunk, args.full_rows = 8192, 8, 128, 128, [1, 2]
    if args.child:
        child(args.child, args.rows, args.seq, args.vocab, args.d, args.chunk)
        return

    table = []
    for rows in args.full_rows:
        for method in ("full", "chunked"):
            r = measure(method, rows, args)
            table.append({"method": method, "tokens": rows * args.seq, "measured": True, **r})
    big = measure("chunked", args.rows, args)
    table.append({"method": "chunked", "tokens": args.rows * args.seq, "measured": True, **big})
    # Least-squares line through the full method's (tokens, MB) points, evaluated at the full size.
    pts = [(row["tokens"], row["extra_mb"]) for row in table if row["method"] == "full"]
    n = len(pts)
    mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
    slope = sum((x - mx) * (y - my) for x, y in pts) / max(sum((x - mx) ** 2 for x, _ in pts), 1e-9)
    full_big = my + slope * (args.rows * args.seq - mx)
    table.append({"method": "full", "tokens": args.rows * args.seq, "measured": False, "extra_mb": full_big, "seconds": float("nan"), "logp_sum": float("nan")})

    print(f"vocab {args.vocab}, d {args.d}, chunk {args.chunk} tokens, 1 thread; extra MB = peak RSS during forward+backward minus RSS before")
    print(f"{'method':<8} {'tokens':>7} {'measured':>8} {'extra MB':>10} {'seconds':>8}")
    for row in table:
        print(f"{row['method']:<8} {row['tokens']:>7} {str(row['measured']):>8} {row['extra_mb']:>10.0f} {row['seconds']:>8.2f}")
    small = args.full_rows[-1] * args.seq
    full_small = next(r["extra_mb"] for r in table if r["method"] == "full" and r["tokens"] == small)
    chunked_small = next(r["extra_mb"] for r in table if r["method"] == "chunked" and r["tokens"] == small)
    print(json.dumps({
        f"full_over_chunked_at_{small}_tokens_measured": full_small / chunked_small,
        f"full_over_chunked_at_{args.rows * args.seq}_tokens_extrapolated": full_big / big["extra_mb"],
        f"chunked_mb_at_{args.rows * args.seq}_tokens": big["extra_mb"],
        f"full_mb_at_{args.rows * args.seq}_tokens_extrapolated": full_big,
        "full_mb_per_1k_tokens": slope * 1000,
        "vocab": args.vocab, "d": args.d, "chunk": args.chunk, "threads": 1,
    }))


if __name__ == "__main__":
    main()
