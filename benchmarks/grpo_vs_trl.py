"""TRL's GRPOTrainer against r1lab's GRPO on identical work, in one run.

    python benchmarks/grpo_vs_trl.py [--threads 2] [--steps 5] [--trl-configs default,no_ckpt] [--r1lab-configs default,no_share,no_pack]

The work (issue 12): a Qwen2-architecture dense model (hidden 256, 4 layers, 4 heads, 4 KV heads,
intermediate 768, tied embeddings, r1lab's character vocabulary) with the same initial weights on
both sides (r1lab's init copied tensor by tensor into a ``Qwen2ForCausalLM`` with zero q/k/v
biases), `chain` prompts, 8 prompts x 8 completions per step, at most 48 new tokens, temperature
1, beta 0, one update per batch, lr 1e-5, fp32, the same thread count. Both score with the task's
R1 rewards (TRL's reward function decodes the completion ids with r1lab's tokenizer).

Printed: seconds per step (median over steps after the first), completion tokens per second,
r1lab's step broken down (prefill, decode, scoring, forward/backward, optimizer, the rest), the
trainer pass's FLOP rate at the floor's count, and the step's
FLOP floor: 2N FLOPs per prompt token (prefilled once per prompt) and per sampled token, plus 6N
per token of every trained row (prompt and completion, unpadded), over the best fp32 matmul rate
this script measures on the step's own shapes, best of 7 trials each (N = matmul parameters, the
tied output head included; the floor counts every row's prompt, as TRL trains it). r1lab runs at
its defaults (packed trainer rows, a group's prompt run once), with ``no_share`` (packed rows, the
prompt in every row: ``rl.share_prompt false``) and with ``no_pack`` (padded rows, as TRL:
``rl.pack false``). TRL is run as a new user
would (its defaults, gradient checkpointing on) and, with ``no_ckpt``, without gradient
checkpointing. Last line: one JSON object, ratios first (``speedup_vs_trl`` against TRL's defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from qwen2_copy import BENCH_MODEL, check, hf_tokenizer, to_qwen2
from r1lab import checkpoint
from r1lab.config import Config, RLConfig, SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.recipes import common
from r1lab.recipes import rl as rl_recipe
from r1lab.rewards import RewardWeights
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer
from r1lab.tracking import read_metrics

PROMPTS, GROUP, NEW_TOKENS, LR = 8, 8, 48, 1e-5


MATMUL_SHAPES = ((4096, 256, 768), (4096, 768, 256), (4096, 256, 256), (64, 256, 768), (64, 768, 256))
"(M, K, N) of the step's matmuls: the trainer's (M = batch tokens) and one decoding step's (M = 64 rows)"


def matmul_rates(threads: int, trials: int = 7) -> dict[tuple[int, int, int], float]:
    """Best fp32 matmul FLOP/s of each shape over ``trials`` timings of ~20 ms each: the best trial
    is the machine's rate (a shared machine only ever slows a trial down)."""
    torch.set_num_threads(threads)
    rates = {}
    for m, k, n in MATMUL_SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        reps = max(1, int(2e9 / (2 * m * k * n)))  # ~2 GFLOP a trial
        for _ in range(3):
            a @ b
        best = 0.0
        for _ in range(trials):
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t))
        rates[(m, k, n)] = best
    return rates


def run_r1lab(init_dir: Path, out: Path, steps: int, threads: int, pack: bool = True, share_prompt: bool = True) -> list[dict]:
    cfg = Config(task="chain", model=BENCH_MODEL, threads=threads, tensorboard=False, save_every=10_000, seed=0,
                 rl=RLConfig(steps=steps, prompts_per_step=PROMPTS, group_size=GROUP, lr=LR, warmup_steps=1, eval_every=0,
                             kl_coef=0.0, updates_per_batch=1, pack=pack, share_prompt=share_prompt, sample=SampleConfig(temperature=1.0, max_new_tokens=NEW_TOKENS)))
    rl_recipe.run(cfg, out, init_dir)
    return read_metrics(out / "metrics.jsonl")


def run_trl(model: Transformer, tok: CharTokenizer, out: Path, steps: int, threads: int, grad_ckpt: bool) -> tuple[list[float], list[float]]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    task = get_task("chain")
    rng = random.Random(0)
    rows = [task.sample(rng, "train") for _ in range(PROMPTS * (steps + 2))]
    data = Dataset.from_list([{"prompt": "<bos>" + tok.decode(tok.prompt_ids(ex.question)[1:]), "question": ex.question, "answer": ex.answer,
                               "solution": ex.solution} for ex in rows])
    weights = RewardWeights()

    def r1_reward(completions, completion_ids, question, answer, solution, **kw):
        from r1lab.tasks.base import Example
        return [task.score(tok.decode_completion(ids), Example(q, a, s), weights).reward for ids, q, a, s in zip(completion_ids, question, answer, solution)]

    lengths: list[float] = []

    def length_reward(completions, completion_ids, **kw):  # weight 0: only records lengths
        lengths.append(sum(len(ids) for ids in completion_ids) / len(completion_ids))
        return [0.0] * len(completions)

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP, max_completion_length=NEW_TOKENS,
                      temperature=1.0, top_k=0, top_p=1.0, beta=0.0, learning_rate=LR, num_iterations=1, max_steps=steps, logging_steps=1,
                      report_to=[], save_strategy="no", use_cpu=True, bf16=False, fp16=False, seed=0, gradient_checkpointing=grad_ckpt,
                      scale_rewards="group", reward_weights=[1.0, 0.0], disable_tqdm=True, dataloader_num_workers=0)
    hf = to_qwen2(model)
    trainer = GRPOTrainer(model=hf, reward_funcs=[r1_reward, length_reward], args=args, train_dataset=data,
                          processing_class=hf_tokenizer(tok), callbacks=[StepTimer()])
    torch.set_num_threads(threads)
    trainer.train()
    return times, lengths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="steps per side; the first is warm-up")
    ap.add_argument("--trl-configs", default="default,no_ckpt", help="comma list of: default (TRL's defaults), no_ckpt (no gradient checkpointing)")
    ap.add_argument("--r1lab-configs", default="default,no_share,no_pack",
                    help="comma list of: default (r1lab's defaults), no_share (rl.share_prompt false: packed rows, a prompt per row), no_pack (rl.pack false: padded trainer rows)")
    args = ap.parse_args()
    os.environ.setdefault("R1LAB_NO_PROGRESS", "1")
    tok = CharTokenizer.build()
    torch.manual_seed(0)
    model = Transformer(BENCH_MODEL, tok.vocab_size)
    n_matmul = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2)  # every Linear + the tied head
    assert check(model, to_qwen2(model), tok.prompt_ids("1+2")) < 1e-4

    r1 = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        init = checkpoint.save(tmp / "init", 0, model, state=common.model_state(model))
        cpu = {}  # process CPU seconds per step of each run, setup and warm-up included: robust to a shared machine
        for name in filter(None, args.r1lab_configs.split(",")):
            c = time.process_time()
            r1[name] = run_r1lab(init, tmp / f"r1lab-{name}", args.steps, args.threads, pack=(name != "no_pack"), share_prompt=(name == "default"))
            cpu[f"r1lab_{name}"] = (time.process_time() - c) / args.steps
        trl = {}
        for name in filter(None, args.trl_configs.split(",")):
            c = time.process_time()
            trl[name] = run_trl(model, tok, tmp / f"trl-{name}", args.steps, args.threads, grad_ckpt=(name == "default"))
            cpu[f"trl_{name}"] = (time.process_time() - c) / args.steps
    rates = matmul_rates(args.threads)
    rate = max(rates.values())

    rows = r1["default"] if "default" in r1 else next(iter(r1.values()))
    med = lambda key, rs=rows: statistics.median(r[key] for r in rs[1:])  # noqa: E731
    # r1lab: wall time between logged steps (the first step's includes nothing before it: skip it).
    step_of = lambda rs: statistics.median(b["time"] - a["time"] for a, b in zip(rs, rs[1:]))  # noqa: E731
    step_s = step_of(rows)
    # FLOP floor of an r1lab step: its prompts (same data stream as the run) and its lengths.
    task, data_rng = get_task("chain"), random.Random(0)
    floors = []
    for r in rows:
        prompt_lens = [len(tok.prompt_ids(task.sample(data_rng, "train").question)) for _ in range(PROMPTS)]
        completion = r["rollout/mean_len"] * PROMPTS * GROUP
        flops = 2 * n_matmul * (sum(prompt_lens) + completion) + 6 * n_matmul * (GROUP * sum(prompt_lens) + completion)
        floors.append(flops / rate)
    floor_s = statistics.median(floors[1:])

    print(f"{PROMPTS} prompts x {GROUP} completions, <= {NEW_TOKENS} new tokens, threads {args.threads}, median of steps 2..{args.steps}")
    print(f"model: Qwen2 architecture 4 x 256, {n_matmul / 1e6:.2f} M matmul parameters")
    print("fp32 matmul GFLOP/s (best of 7 trials), M x K x N: " + ", ".join(f"{m}x{k}x{n} {v / 1e9:.0f}" for (m, k, n), v in rates.items()))
    print(f"{'':34s} {'s/step':>8s} {'completion tok/s':>17s} {'mean len':>9s} {'CPU s/step':>11s}")
    r1_steps = {}
    for name, rs in r1.items():
        r1_steps[name] = step_of(rs)
        label = "r1lab GRPO" + ("" if name == "default" else f" ({name})")
        print(f"{label:34s} {r1_steps[name]:8.3f} {med('rollout/mean_len', rs) * PROMPTS * GROUP / r1_steps[name]:17.0f} {med('rollout/mean_len', rs):9.1f}"
              f" {cpu[f'r1lab_{name}']:11.3f}")
    out = {}
    for name, (times, lengths) in trl.items():
        t = statistics.median(times[1:])
        mean_len = statistics.median(lengths[1:]) if len(lengths) > 1 else float("nan")
        print(f"{'TRL GRPOTrainer (' + name + ')':34s} {t:8.3f} {mean_len * PROMPTS * GROUP / t:17.0f} {mean_len:9.1f} {cpu[f'trl_{name}']:11.3f}")
        out[name] = t
    parts = ("time/prefill_s", "time/decode_s", "time/score_s", "time/forward_backward_s", "time/optimizer_s")
    # The rest of a step: sampling's setup outside prefill and decode, advantages, metrics, logging.
    other_of = lambda rs: statistics.median(b["time"] - a["time"] - sum(b[k] for k in parts) for a, b in zip(rs, rs[1:]))  # noqa: E731
    for name, rs in r1.items():
        print(f"r1lab step breakdown ({name}, median s): " + ", ".join(f"{k.split('/')[1][:-2]} {med(k, rs):.3f}" for k in parts)
              + f", other {other_of(rs):.3f}")
    # The trainer's pass at the floor's count, 6N per token of every row (prompt included), whatever it actually runs.
    fb_gflops = 6 * n_matmul * med("train/tokens_per_s") / 1e9
    print(f"r1lab forward/backward: {fb_gflops:.0f} GFLOP/s at the floor's count (6N per trained token, every row's prompt)")
    print(f"FLOP floor of the step at {rate / 1e9:.0f} GFLOP/s: {floor_s:.3f} s; r1lab step / floor {step_s / floor_s:.2f}")
    if "default" in out:
        print(f"3x TRL's default step is {out['default'] / 3:.3f} s = {out['default'] / 3 / floor_s:.2f} x the floor")
    cpu_ratio = round(cpu["trl_default"] / cpu["r1lab_default"], 2) if "trl_default" in cpu and "r1lab_default" in cpu else None
    print("CPU s/step: process CPU time of each whole run (both threads, setup and the warm-up step included) over its steps")
    result = {"speedup_vs_trl": round(out["default"] / step_s, 2) if "default" in out else None, "cpu_speedup_vs_trl": cpu_ratio,
              "speedup_vs_trl_no_ckpt": round(out["no_ckpt"] / step_s, 2) if "no_ckpt" in out else None,
              "step_over_floor": round(step_s / floor_s, 2), "r1lab_step_s": round(step_s, 4),
              **{f"r1lab_{k}_step_s": round(v, 4) for k, v in r1_steps.items() if k != "default"},
              **{f"trl_{k}_step_s": round(v, 4) for k, v in out.items()}, "floor_s": round(floor_s, 4),
              "matmul_gflops": round(rate / 1e9, 1), "prefill_s": round(med("time/prefill_s"), 4), "decode_s": round(med("time/decode_s"), 4),
              "score_s": round(med("time/score_s"), 4), "forward_backward_s": round(med("time/forward_backward_s"), 4),
              "optimizer_s": round(med("time/optimizer_s"), 4), "other_s": round(other_of(rows), 4), "forward_backward_gflops": round(fb_gflops, 1), **{f"cpu_{k}_step_s": round(v, 4) for k, v in cpu.items()},
              "threads": args.threads, "steps": args.steps}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
