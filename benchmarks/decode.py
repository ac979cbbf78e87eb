"""Decoding with GQA, MLA and MLA + MTP self-speculative drafts, at equal model width.

    python benchmarks/decode.py [--init RUN_WITH_MTP] [--new-tokens 64] [--repeats 3] [--threads 1]

Models: the default width (d_model 128, 4 layers, 4 heads, DeepSeekMoE FFN) with (a) GQA/MHA
attention (n_kv_heads 4), (b) MLA with the v3-tiny latent sizes (kv_lora_rank 32, rope 16), with
the up-projections absorbed into the query and output (r1lab's choice) and (c) expanded from the
latents at every step, for the record, (d) MLA + a depth-1 MTP module drafting one token per
round (r1lab.speculative). Figures: KV-cache bytes per token (all layers, fp32), decode tokens/s
at batch 1 and 64 (eos disabled so every row decodes exactly --new-tokens), and the MTP draft
acceptance rate at batch 64 with eos on chain prompts. The acceptance rate only means something
for a trained model: pass --init with a run pretrained with an MTP module, e.g.
`r1lab pretrain --config v3-tiny --out runs/v3`; --init replaces (b)-(d)'s weights with it.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from r1lab import speculative
from r1lab.config import ModelConfig, SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.recipes import common
from r1lab.rollout import sample
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer

MLA = dict(attention="mla", kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32)


def decode_s(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", default="", help="run or checkpoint of an MLA model with an MTP module")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = CharTokenizer.build()
    task = get_task("chain")
    rng = random.Random(0)
    questions = [tok.prompt_ids(task.sample(rng, "test").question) for _ in range(64)]
    torch.manual_seed(0)
    if args.init:
        mtp_model, _ = common.load_model(args.init)
        if mtp_model.mtp is None or mtp_model.cfg.attention != "mla":
            raise SystemExit(f"--init {args.init}: needs an MLA model with an MTP module (model.attention mla, model.mtp_depth 1)")
    else:
        mtp_model = Transformer(ModelConfig(**MLA, mtp_depth=1), tok.vocab_size)
    mtp_model.eval()
    width = dict(d_model=mtp_model.cfg.d_model, n_layers=mtp_model.cfg.n_layers, n_heads=mtp_model.cfg.n_heads)
    gqa = Transformer(ModelConfig(**width, n_kv_heads=mtp_model.cfg.n_heads), tok.vocab_size).eval()
    cfg = SampleConfig(temperature=1.0, max_new_tokens=args.new_tokens)
    no_eos = -1  # every row decodes exactly new_tokens

    def set_absorb(on: bool) -> None:
        for layer in mtp_model.layers:
            layer.attn.absorb = on
        mtp_model.mtp.block.attn.absorb = on

    rows = []
    arms = [("gqa", gqa, False, True), ("mla", mtp_model, False, True), ("mla-expanded", mtp_model, False, False), ("mla+mtp", mtp_model, True, True)]
    for name, model, spec, absorb in arms:
        if model is mtp_model:
            set_absorb(absorb)
        row = {"arm": name, "kv_bytes_per_token": model.new_cache(1, 8).bytes_per_token()}
        for batch in (1, 64):
            prompts = questions[:batch]
            gen = torch.Generator().manual_seed(0)
            if spec:
                fn = lambda: speculative.sample(model, prompts, cfg, no_eos, tok.pad_id, gen)  # noqa: E731
            else:
                fn = lambda: sample(model, prompts, cfg, no_eos, tok.pad_id, gen)  # noqa: E731
            row[f"tok_per_s_b{batch}"] = batch * args.new_tokens / decode_s(fn, args.repeats)
        if spec:
            _, stats = speculative.sample(model, questions, cfg, tok.eos_id, tok.pad_id, torch.Generator().manual_seed(0))
            row["acceptance_rate"] = stats.acceptance_rate
        rows.append(row)
    set_absorb(True)
    by = {r["arm"]: r for r in rows}
    print(f"decode: {args.new_tokens} new tokens, {args.threads} thread(s), model {'from ' + args.init if args.init else 'untrained'}, width {width}")
    cols = ["arm", "kv_bytes_per_token", "tok_per_s_b1", "tok_per_s_b64", "acceptance_rate"]
    print("  ".join(f"{c:>18}" for c in cols))
    for r in rows:
        print("  ".join(f"{(f'{r[c]:.4g}' if isinstance(r.get(c), float) else str(r.get(c, '-'))):>18}" for c in cols))
    out = {
        "kv_bytes_ratio_gqa_over_mla": by["gqa"]["kv_bytes_per_token"] / by["mla"]["kv_bytes_per_token"],
        "speedup_mla_over_gqa_b1": by["mla"]["tok_per_s_b1"] / by["gqa"]["tok_per_s_b1"],
        "speedup_mla_over_gqa_b64": by["mla"]["tok_per_s_b64"] / by["gqa"]["tok_per_s_b64"],
        "speedup_absorbed_over_expanded_b64": by["mla"]["tok_per_s_b64"] / by["mla-expanded"]["tok_per_s_b64"],
        "speedup_mtp_over_mla_b1": by["mla+mtp"]["tok_per_s_b1"] / by["mla"]["tok_per_s_b1"],
        "speedup_mtp_over_mla_b64": by["mla+mtp"]["tok_per_s_b64"] / by["mla"]["tok_per_s_b64"],
        "mtp_acceptance_rate": by["mla+mtp"]["acceptance_rate"],
        "trained": bool(args.init), "new_tokens": args.new_tokens, "threads": args.threads, "rows": rows,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
