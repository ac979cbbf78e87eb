"""Does packing pay for SFT? The same documents (chain problems with worked solutions in the R1
template) trained one per row, right-padded (the reference), and packed into rows of
model.max_seq_len tokens with block-diagonal attention (no attention across documents): padding
share, rows, and median forward+backward time of one batch, in one process. The loss is the same
to float precision (tests/test_sft.py checks it on a tiny case; printed here too).

    python benchmarks/sft_packing.py [--docs 64] [--repeats 7] [--ffn moe|dense] [--threads 1]

The last line is one JSON object, ratios first.
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from r1lab.config import ModelConfig
from r1lab.model.transformer import Transformer
from r1lab.recipes.sft import Record, tokenize
from r1lab.sft import pack, pad_batch, sft_loss
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer
from timing import median_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ffn", choices=["moe", "dense"], default="moe")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tok, task, rng = CharTokenizer.build(), get_task("chain"), random.Random(0)
    seqs = []
    for i in range(args.docs):  # half worked solutions, half direct answers: uneven lengths, as in SFT data
        ex = task.sample(rng, "train")
        seqs.append(tokenize(Record(ex.question, tok.completion_text(ex.solution if i % 2 else "", ex.answer)), tok))
    torch.manual_seed(0)
    cfg = ModelConfig(ffn=args.ffn)
    model = Transformer(cfg, tok.vocab_size)
    batches = {"padded (one per row)": pad_batch(seqs, tok.pad_id), "packed (block-diagonal)": pack(seqs, cfg.max_seq_len, tok.pad_id)}

    def step(b):
        model.zero_grad(set_to_none=True)
        loss, aux = sft_loss(model, b)
        (loss + aux).backward()
        return loss

    rows, out = [], {}
    for name, b in batches.items():
        t = median_s(lambda: step(b), args.repeats)
        real = int(b.real_BT.sum())
        out[name] = {"rows": b.ids_BT.shape[0], "width": b.ids_BT.shape[1], "padding": 1 - real / b.ids_BT.numel(), "s": t,
                     "loss": float(step(b)), "tokens_per_s": real / t}
        rows.append(f"{name:<26} {b.ids_BT.shape[0]:>5} x {b.ids_BT.shape[1]:<4} {out[name]['padding']:>8.1%} {t * 1000:>9.1f} ms "
                    f"{real / t:>10.0f} {out[name]['loss']:>9.5f}")
    print(f"{args.docs} chain documents, {args.ffn} model (d_model {cfg.d_model}, {cfg.n_layers} layers), {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"{'':<26} {'rows x width':>12} {'padding':>8} {'fwd+bwd':>12} {'tokens/s':>10} {'loss':>9}")
    print("\n".join(rows))
    pad, pk = out["padded (one per row)"], out["packed (block-diagonal)"]
    print(json.dumps({"speedup_packed_over_padded": round(pad["s"] / pk["s"], 3), "loss_abs_diff": abs(pad["loss"] - pk["loss"]),
                      "padding_padded": round(pad["padding"], 4), "padding_packed": round(pk["padding"], 4),
                      "rows_padded": pad["rows"], "rows_packed": pk["rows"], "s_padded": pad["s"], "s_packed": pk["s"],
                      "docs": args.docs, "ffn": args.ffn, "threads": args.threads}))


if __name__ == "__main__":
    main()
