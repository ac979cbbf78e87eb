"""What does torchrun data parallelism cost and give on this machine? Pretraining steps of the
default ``r1lab zero`` MoE model at 1 process (plain), 2 processes with DDP and 2 with FSDP2
(gloo on the CPU), each rank ``--batch`` rows: steps/s, tokens/s (global), the time of one step's
collectives measured alone (DDP: an all-reduce of every gradient; FSDP2: two all-gathers of the
parameters and a reduce-scatter of the gradients, FSDP2's per-step volume), and checkpoint
save/load time per rank (one process: safetensors; several: torch.distributed.checkpoint shards).

    python benchmarks/scaling.py [--steps 12] [--batch 8] [--rounds 2]

Each configuration runs in its own job (torchrun for 2 processes); the configurations take turns
for ``--rounds`` rounds (so that a change in background load hits all of them) and each figure is
the median over rounds. Configurations: 1 process with 1 thread, 1 process with 2 threads (the
same cores as 2 ranks of 1 thread), 2 DDP ranks, 2 FSDP2 ranks. On a 2-core machine the point is
correctness and overhead, not a speed-up. The last line is one JSON object, ratios first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [("1 process", 1, "ddp", 1), ("1 process, 2 threads", 1, "ddp", 2), ("2 x DDP", 2, "ddp", 1), ("2 x FSDP2", 2, "fsdp2", 1)]
"(name, processes, strategy, torch threads per process): 2 processes x 1 thread use the cores 1 process x 2 threads uses"


def worker(args: argparse.Namespace) -> None:
    """One rank: time ``args.steps`` pretraining steps after 2 warm-up steps, the collectives of
    one step, and a checkpoint save and load; write this rank's figures to ``args.out``."""
    import warnings

    import torch
    import torch.distributed as dist

    warnings.filterwarnings("ignore", category=FutureWarning)  # the *_tensor collectives' renaming

    from r1lab import checkpoint, distributed
    from r1lab.config import Config, DistConfig
    from r1lab.recipes import common, pretrain
    from r1lab.sft import masked_nll
    from r1lab.tasks import get_task
    from r1lab.tokenizer import CharTokenizer

    if distributed.launched():
        dist.init_process_group("gloo")
    cfg = Config()
    common.seed_everything(0, args.threads)
    world, rank = distributed.world(), distributed.rank()
    tok, task = CharTokenizer.build(), get_task(cfg.task)
    model = common.new_model(cfg.model, tok.vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    train_model = distributed.wrap(model, DistConfig(args.strategy), torch.device("cpu"))
    opt = common.make_optimizer(model, 1e-3, 0.1)
    data_rng = random.Random(0)
    step_s, tokens = [], 0.0
    for step in range(args.steps + 2):
        distributed.barrier()
        t0 = time.perf_counter()
        ids, mask = pretrain.batch(tok, task, data_rng, args.batch * world, 0.3, cfg.model.max_seq_len)
        n_tok = float(mask.sum())
        rows = distributed.shard_rows(len(ids))
        ids, mask = ids[rows], mask[rows]
        out = train_model(ids[:, :-1], token_mask_BT=mask[:, :-1])
        loss = masked_nll(out.logits_BTV, ids[:, 1:], mask[:, 1:]) + out.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters()], 1.0)
        opt.step()
        distributed.barrier()
        if step >= 2:
            step_s.append(time.perf_counter() - t0)
            tokens += n_tok

    comm_s = 0.0
    if world > 1:  # one step's collective volume, timed alone (DDP overlaps it with backward)
        flat = torch.zeros(n_params)
        shard = torch.zeros(-(-n_params // world))
        full = torch.zeros(shard.numel() * world)
        times = []
        for _ in range(5):
            dist.barrier()
            t0 = time.perf_counter()
            if args.strategy == "ddp":
                dist.all_reduce(flat)
            else:
                dist.all_gather_into_tensor(full, shard)
                dist.all_gather_into_tensor(full, shard)
                dist.reduce_scatter_tensor(shard, full)
            times.append(time.perf_counter() - t0)
        comm_s = statistics.median(times)

    run = Path(args.out) / "run"
    state = common.model_state(model)
    distributed.barrier()
    t0 = time.perf_counter()
    path = (checkpoint.save_sharded if world > 1 else checkpoint.save)(run, 1, model, opt, state=state, keep=1)
    save_s = time.perf_counter() - t0
    distributed.barrier()
    t0 = time.perf_counter()
    checkpoint.apply(model, checkpoint.load(path), opt)
    load_s = time.perf_counter() - t0
    figures = {"rank": rank, "world": world, "step_s": statistics.median(step_s), "tokens_per_step": tokens / len(step_s),
               "comm_s": comm_s, "save_s": save_s, "load_s": load_s, "params": n_params}
    (Path(args.out) / f"rank{rank}.json").write_text(json.dumps(figures))
    if world > 1:
        dist.destroy_process_group()


def run_config(nproc: int, strategy: str, threads: int, args: argparse.Namespace) -> list[dict]:
    out = Path(tempfile.mkdtemp(prefix="r1lab-scaling-"))
    flags = ["--worker", "--strategy", strategy, "--steps", str(args.steps), "--batch", str(args.batch),
             "--threads", str(threads), "--out", str(out)]
    if nproc == 1:
        cmd = [sys.executable, __file__, *flags]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", __file__, *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore::FutureWarning"}
    subprocess.run(cmd, check=True, env=env)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    shutil.rmtree(out, ignore_errors=True)
    return ranks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per configuration (after 2 warm-up steps)")
    ap.add_argument("--batch", type=int, default=8, help="rows per rank per step (model.max_seq_len tokens each)")
    ap.add_argument("--rounds", type=int, default=2, help="turns of all configurations; figures are medians over rounds")
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--strategy", default="ddp", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(ROOT))
    from r1lab.tracking import format_table

    per_round: dict[str, list[dict]] = {name: [] for name, *_ in CONFIGS}
    for _ in range(args.rounds):
        for name, nproc, strategy, threads in CONFIGS:
            ranks = run_config(nproc, strategy, threads, args)
            r0 = ranks[0]
            per_round[name].append({
                "steps_per_s": 1.0 / r0["step_s"],
                "tokens_per_s": r0["tokens_per_step"] / r0["step_s"],
                "step_ms": 1000 * r0["step_s"],
                "comm_ms_per_step": 1000 * r0["comm_s"],
                "save_s_per_rank": max(r["save_s"] for r in ranks),
                "load_s_per_rank": max(r["load_s"] for r in ranks),
            })
    results = {name: {k: statistics.median(f[k] for f in figs) for k in figs[0]} for name, figs in per_round.items()}
    spread = {name: (min(f["step_ms"] for f in figs), max(f["step_ms"] for f in figs)) for name, figs in per_round.items()}
    rows = [{"configuration": name, **{k: round(v, 4) for k, v in fig.items()}, "step_ms_range": f"{spread[name][0]:.0f}-{spread[name][1]:.0f}"}
            for name, fig in results.items()]
    print(format_table(rows, title=f"pretraining, default zero MoE model ({r0['params'] / 1e6:.2f}M parameters), {args.batch} rows/rank, "
                                   f"median of {args.rounds} rounds, {os.cpu_count()} CPU cores"))
    one, one2, ddp, fsdp = (results[name] for name, *_ in CONFIGS)
    summary = {
        "ddp2_over_one_2threads_tokens_per_s": ddp["tokens_per_s"] / one2["tokens_per_s"],
        "fsdp2_over_one_2threads_tokens_per_s": fsdp["tokens_per_s"] / one2["tokens_per_s"],
        "ddp2_over_one_1thread_tokens_per_s": ddp["tokens_per_s"] / one["tokens_per_s"],
        "fsdp2_over_ddp2_step_time": fsdp["step_ms"] / ddp["step_ms"],
        "ddp2_comm_share_of_step": ddp["comm_ms_per_step"] / ddp["step_ms"],
        "fsdp2_comm_share_of_step": fsdp["comm_ms_per_step"] / fsdp["step_ms"],
        **{f"{name}/{k}": v for name, fig in results.items() for k, v in fig.items()},
        "cpu_cores": os.cpu_count(),
        "rounds": args.rounds,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
