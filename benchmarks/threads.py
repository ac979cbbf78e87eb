"""How many intra-op threads should r1lab use on a small CPU? Times the three hot loops of
`r1lab zero` (a pretraining step, a batch of KV-cache sampling, a GRPO update) with the default
model at 1 and 2 threads, in one process, and prints ratios.

    python benchmarks/threads.py [--repeats 7] [--ffn moe|dense]

Run it on an idle machine: with another busy process on a 2-core box, two threads can be many
times slower than one (DESIGN.md). The last line is one JSON object, ratios first.
"""

from __future__ import annotations

import argparse
import json
import os
import random

import torch

from r1lab.config import ModelConfig, SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.recipes import pretrain
from r1lab.rollout import policy_logprobs, sample
from r1lab.sft import masked_nll
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer
from timing import median_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ffn", choices=["moe", "dense"], default="moe")
    args = ap.parse_args()

    tok, task = CharTokenizer.build(), get_task("chain")
    torch.manual_seed(0)
    model = Transformer(ModelConfig(ffn=args.ffn), tok.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids, mask = pretrain.batch(tok, task, random.Random(0), 24, 0.3, 128)
    prompts = [tok.prompt_ids(task.sample(random.Random(i), "train").question) for i in range(16) for _ in range(8)]
    scfg = SampleConfig(max_new_tokens=48)

    def pretrain_step():
        loss = masked_nll(model(ids[:, :-1]).logits_BTV, ids[:, 1:], mask[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()

    def sample_batch():
        sample(model, prompts, scfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0))

    ro = sample(model, prompts, scfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0))

    def grpo_update():
        logp, _ = policy_logprobs(model, ro.tokens, ro.attention_mask, 1.0)
        opt.zero_grad()
        (logp * ro.completion_mask).sum().backward()
        opt.step()

    rows = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rows[threads] = {name: median_s(fn, args.repeats) for name, fn in (("pretrain_step", pretrain_step), ("sample_128x48", sample_batch), ("grpo_update_128", grpo_update))}

    print(f"model {args.ffn}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; cores {os.cpu_count()}; median of {args.repeats}")
    print(f"{'loop':<18}{'1 thread (ms)':>15}{'2 threads (ms)':>16}{'speed-up':>10}")
    result = {}
    for name in rows[1]:
        one, two = rows[1][name], rows[2][name]
        print(f"{name:<18}{one * 1e3:>15.1f}{two * 1e3:>16.1f}{one / two:>10.2f}")
        result[f"{name}_speedup_2_over_1"] = round(one / two, 3)
    for name in rows[1]:
        result[f"{name}_ms_1t"] = round(rows[1][name] * 1e3, 2)
        result[f"{name}_ms_2t"] = round(rows[2][name] * 1e3, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
