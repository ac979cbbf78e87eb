"""Scale-out on the engine PyTorch ships: torch.distributed, launched by ``torchrun`` (house rule 9).

One plain process stays the default and is untouched by anything here (``world() == 1``: every
helper is a no-op, ``breakpoint()`` works). Under ``torchrun --nproc-per-node N -m r1lab <stage>``
(or ``r1lab <stage> --nproc N``, which starts torchrun for you) each rank:

* joins the process group from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...):
  gloo on CPU, NCCL on GPU (``session``);
* wraps the model with DDP or FSDP2 (``torch.distributed.fsdp.fully_shard``: parameters,
  gradients and optimizer state sharded), chosen by ``--dist.strategy`` (``wrap``). On a GPU FSDP2
  computes in bf16 with fp32 master weights and fp32 gradient reduction; MoE routers keep fp32
  parameters (their own FSDP group with an fp32 policy), as the router's fp32 rule requires;
* prints, logs metrics and draws progress bars on rank 0 only (other ranks' stdout goes to
  /dev/null; their stderr stays, so an error on any rank is seen);
* checkpoints through ``torch.distributed.checkpoint`` (``checkpoint.save_sharded``);
* samples (RL, evaluation) from an FSDP2 model with its full weights gathered for the sampling
  phase (``unshard``/``reshard``), so that ranks may decode different numbers of steps.

Everything is single-node or multi-node alike: nothing here assumes one host, only that the run
folder is on a file system every rank sees. The recipes decide how data is split (pretraining:
rank r takes rows r::world of the global batch; RL: whole GRPO groups per rank).

Departure from torchtitan/torchtune: no device mesh beyond 1-D data parallelism (no tensor,
pipeline or expert parallelism): r1lab's models are small, and DDP/FSDP2 is what the CPU path can
check bit for bit.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from r1lab.config import Config, ConfigError, DistConfig

STAGES = ("pretrain", "rl", "eval")
"stages that run under torchrun; the others are one-process tools and refuse a world size > 1"
DEVICE_STAGES = ("pretrain", "rl", "eval")
"stages that follow ``--device`` (GPU: NCCL)"


# ---------------------------------------------------------------------------------------------
# Where we are


def launched() -> bool:
    """Whether torchrun started this process as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def world() -> int:
    return dist.get_world_size() if initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one that prints, logs metrics and writes shared files."""
    return rank() == 0


def device(choice: str) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else the CPU; ``cuda`` without CUDA is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key device: cuda requested but torch.cuda.is_available() is False")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank() % torch.cuda.device_count())


@contextlib.contextmanager
def session(stage: str, cfg: Config) -> Iterator[None]:
    """Around a stage's ``main``: join torchrun's process group (nothing in one plain process),
    silence stdout and progress bars on ranks > 0, and leave the group at the end."""
    if not launched():
        yield
        return
    if stage not in STAGES:
        raise ConfigError(f"r1lab {stage} runs in one process; only {', '.join(STAGES)} run under torchrun (drop --nproc)")
    dev = device(cfg.device) if stage in DEVICE_STAGES else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    stdout = sys.stdout
    if not is_main():
        sys.stdout = open(os.devnull, "w", encoding="utf-8")
        os.environ["R1LAB_NO_PROGRESS"] = "1"
    try:
        yield
    finally:
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout
        dist.destroy_process_group()


def launch(nproc: int, argv: list[str]) -> None:
    """``r1lab <stage> ... --nproc N``: replace this process with ``torchrun --standalone
    --nproc-per-node N -m r1lab <stage> ...`` (``argv`` without ``--nproc``), so that signals
    reach torchrun, which forwards them to every rank and ends the job when one rank dies."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "r1lab", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


# ---------------------------------------------------------------------------------------------
# Wrapping


def wrap(model: nn.Module, dcfg: DistConfig, dev: torch.device, find_unused: bool = False) -> nn.Module:
    """The module a training step calls: ``model`` itself in one process; DDP around it; or, with
    FSDP2, ``model`` sharded in place (one FSDP group per block, and the root).
    Build the optimizer after this call (FSDP2 replaces parameters by DTensor shards), and keep
    using ``model`` for everything but the forward call (state dicts, attributes). ``find_unused``:
    some parameters get no gradient in a step (RL's forward skips the MTP module)."""
    if world() == 1:
        return model
    if dcfg.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # No buffer sync per forward: buffers (RoPE tables, the aux-free bias) are equal on every rank
        # by construction, and MoE's per-rank load accumulators must not be overwritten.
        return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None, forward_sync_buffers=False,
                                       find_unused_parameters=find_unused)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from r1lab.model.moe import Router

    if dev.type == "cuda":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for m in model.modules():
            if isinstance(m, Router):  # fp32 router weights, as in one process (DeepSeek-V3 sec. 3.3.2)
                fully_shard(m, mp_policy=MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32))
    else:
        mp = MixedPrecisionPolicy()  # CPU: fp32 throughout, as in one process
    for block in model.layers:
        fully_shard(block, mp_policy=mp)
    # The MTP module stays in the root's group: ``mtp_forward`` is a method of the root, called
    # after its forward (while the root's parameters are still gathered), not a module call that
    # would run FSDP's hooks of a group of its own.
    fully_shard(model, mp_policy=mp)
    return model


def unshard(model: nn.Module) -> None:
    """FSDP2: gather ``model``'s full parameters on every rank (all ranks call it together) and keep
    them gathered after each forward until ``reshard``, so that calls on ``model`` run locally and
    ranks may make different numbers of them (sampling: each rank's rows end at different steps).
    A plain or DDP model is already whole: nothing to do. Forward calls in between: ``no_grad``."""
    from torch.distributed.fsdp import FSDPModule

    if world() == 1 or not isinstance(model, FSDPModule):
        return
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_reshard_after_forward(False, recurse=False)
            m.unshard()


def reshard(model: nn.Module) -> None:
    """Undo ``unshard``: free the gathered parameters and restore ``wrap``'s policy (blocks reshard
    after forward, the root keeps its parameters until the backward, as FSDP2 does by default)."""
    from torch.distributed.fsdp import FSDPModule

    if world() == 1 or not isinstance(model, FSDPModule):
        return
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()
            m.set_reshard_after_forward(m is not model, recurse=False)


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """``unshard`` on entry, ``reshard`` on exit (evaluation, pass-rate estimation inside training)."""
    unshard(model)
    try:
        yield
    finally:
        reshard(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (its methods: ``head_weight``), else ``model`` (FSDP2 shards in place)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def autocast(dev: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU (the fp32 router opts out), nothing on the CPU."""
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Collectives (no-ops in one process)


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum (or ``max``) ``t`` over ranks in place; returns it. NCCL reduces GPU tensors only: a CPU
    ``t`` (a count, a flag) makes the round trip through this rank's GPU."""
    if world() > 1:
        reduce_op = dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            t.copy_(all_reduce_(t.to(torch.device("cuda", torch.cuda.current_device())), op))
        else:
            dist.all_reduce(t, op=reduce_op)
    return t


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (decisions that must agree: skip, stop)."""
    if world() == 1:
        return flag
    return bool(all_reduce_(torch.tensor([1.0 if flag else 0.0]), "max").item() > 0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a run folder named after the time, a file name)."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world() == 1:
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP2 parameters and gradients), else ``t``."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def full(t: torch.Tensor | float) -> float:
    """A scalar that may be a DTensor (FSDP2's gradient norm) as a Python float."""
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.full_tensor()
    return float(t)


def nonfinite(loss: torch.Tensor, model: nn.Module) -> str | None:
    """``common.nonfinite_guard`` for a job: this rank's culprit (loss or a local gradient shard),
    or "another rank's ..." when only another rank saw one, so that every rank skips together."""
    import math

    bad = None
    value = float(loss.detach())
    if not math.isfinite(value):
        bad = f"loss ({value})"
    else:
        for name, p in model.named_parameters():
            if p.grad is not None and not bool(torch.isfinite(local(p.grad)).all()):
                bad = f"gradient of {name}"
                break
    if any_rank(bad is not None) and bad is None:
        bad = "loss or gradient on another rank"
    return bad


def shard_rows(n_global: int) -> slice:
    """This rank's rows of a global batch of ``n_global`` rows: ``rank::world``, so that N ranks
    of batch B see exactly the rows one process of batch N*B sees."""
    if n_global % world():
        raise ConfigError(f"a global batch of {n_global} rows does not split over {world()} ranks")
    return slice(rank(), None, world())
