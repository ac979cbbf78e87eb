"""The scaffolding every training stage shares (house rule 13), written once.

A stage's file keeps its own loop body (sample, score, loss, ...) and reads top to bottom; what
is the same in every stage lives here as one object it opens around that loop::

    loop = TrainLoop(cfg, run_dir, "sft", model, opt, total=s.steps, generators={"data": rng})
    if loop.finished:
        return loop.last_path
    with loop:
        for step in loop.steps():               # range(start, total) behind a progress bar
            loop.set_lr(common.lr_at(step, ...))
            loss = ...
            bad, grad_norm = loop.backward_step(loss, grad_clip)   # guard, clip, optimizer step
            loop.end_step(step + 1, {"sft/loss": loss.item()}, bad=bad)  # log, save, stop
    return loop.last_path

What it does, so that no stage carries its own copy:

* **Resume**: with ``cfg.resume`` the newest good checkpoint of ``run_dir`` is applied to the
  model, optimizer and extra models, the named RNG generators are restored, and the stage's own
  saved state comes back in ``loop.state``; the metrics file and expert-load log are cut back to
  the resumed step. Nothing here is a callback: the stage calls each piece where it belongs.
* **Graceful stop**: SIGTERM or Ctrl-C finish the current step, save, and exit with 128 + signal.
* **Non-finite guard**: a NaN/Inf loss or gradient skips the update (the weights and Adam's
  moments stay clean); ``cfg.max_bad_steps`` in a row stop the run (exit 3).
* **Periodic save, eval and log**: ``end_step`` logs metrics (and the MoE expert loads), saves
  every ``cfg.save_every`` steps, at the last step and when a stop was requested, then honours
  the stop; ``loop.due(every, step)`` says when a periodic evaluation is due.
* **Under torchrun** (``r1lab.distributed``): metrics, expert loads and the progress bar on rank 0
  only; checkpoints through torch.distributed.checkpoint, each rank its shard; the non-finite
  skip and the stop request agreed by all ranks. ``model`` is the unwrapped module (or the FSDP2
  one); the stage calls its DDP wrapper for the forward pass.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from r1lab import checkpoint, distributed, tracking
from r1lab.config import Config
from r1lab.recipes import common


class TrainLoop:
    """Resume, stop flag, non-finite guard, progress bar, logging and checkpointing of one
    training stage writing into ``run_dir``, for ``total`` steps.

    ``generators`` are the stage's private RNGs (data order, sampling) saved with every checkpoint
    and restored on resume; ``extra_models`` are frozen models saved beside the policy (a KL
    reference); ``start_path`` is what ``last_path`` says before the first save (the checkpoint a
    stage started from). Read after construction: ``start`` (first step to run), ``finished``
    (nothing left to do), ``resumed`` and ``state`` (the stage's state saved by ``end_step``)."""

    def __init__(self, cfg: Config, run_dir: Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 total: int, generators: Mapping[str, checkpoint.RNG] | None = None,
                 extra_models: Mapping[str, torch.nn.Module] | None = None, start_path: Path | None = None):
        self.cfg, self.run_dir, self.name, self.total = cfg, Path(run_dir), name, total
        self.model, self.optimizer = model, optimizer
        self.generators = dict(generators or {})
        self.extra_models = dict(extra_models or {})
        self.start, self.bad_steps, self.state = 0, 0, {}
        ckpt = checkpoint.load_latest(self.run_dir) if cfg.resume else None
        self.resumed = ckpt is not None
        if ckpt is not None:
            checkpoint.apply(model, ckpt, optimizer, extra_models=self.extra_models)
            # Each rank its own RNG states when the world size is the one that saved them; at
            # another world size (resharding) every rank takes rank 0's.
            same_world = len(ckpt.rng_ranks) == distributed.world() and ckpt.rng_ranks
            checkpoint.restore_rng(ckpt.rng_ranks[distributed.rank()] if same_world else ckpt.rng, generators=self.generators)
            self.start, self.bad_steps, self.state = ckpt.step, ckpt.state.get("bad_steps", 0), dict(ckpt.state)
            print(f"resuming {name} from {ckpt.path} (step {self.start})")
        self.last_path: Path | None = ckpt.path if ckpt is not None else start_path
        self._tracker: tracking.Tracker | None = None
        self._stop: common.StopFlag | None = None
        self._loads: common.ExpertLoadLog | None = None
        self._bar = None

    @property
    def finished(self) -> bool:
        """True when a resumed run had already reached its last step."""
        return self.resumed and self.start >= self.total

    def __enter__(self) -> TrainLoop:
        resume_step = self.start if self.resumed else None
        if distributed.is_main():  # one writer per file
            self._loads = common.ExpertLoadLog(self.run_dir, resume_step=resume_step)
            self._tracker = tracking.Tracker(self.run_dir, tensorboard=self.cfg.tensorboard, resume=self.resumed, resume_step=resume_step)
        self._stop = common.StopFlag().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._stop.__exit__(*exc)
        if self._tracker is not None:
            self._tracker.close()
        if self._loads is not None:
            self._loads.__exit__(*exc)

    @property
    def stop_requested(self) -> bool:
        return self._stop is not None and self._stop.requested

    def steps(self) -> Iterator[int]:
        """Step indices ``start .. total - 1`` behind the stage's progress bar."""
        self._bar = tracking.progress(range(self.start, self.total), desc=self.name, initial=self.start, total=self.total)
        yield from self._bar

    def set_lr(self, lr: float) -> float:
        common.set_lr(self.optimizer, lr)
        return lr

    def guard(self, loss: torch.Tensor) -> str | None:
        """``common.nonfinite_guard`` on this loop's model: what is NaN/Inf after backward, or None
        (under torchrun: on any rank, so that all skip together)."""
        if distributed.world() > 1:
            return distributed.nonfinite(loss, self.model)
        return common.nonfinite_guard(loss, self.model)

    def clip_and_step(self, grad_clip: float) -> float:
        """Clip the gradient norm (``grad_clip`` <= 0: no clipping, norm still measured), take the
        optimizer step, and return the norm before clipping."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
        self.optimizer.step()
        return distributed.full(norm)  # FSDP2: a DTensor over the shards

    def backward_step(self, loss: torch.Tensor, grad_clip: float) -> tuple[str | None, float]:
        """Zero the gradients, backpropagate ``loss``, and step unless something is non-finite.
        Returns (what was non-finite or None, gradient norm; NaN when the update was skipped)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        bad = self.guard(loss)
        return bad, (self.clip_and_step(grad_clip) if bad is None else float("nan"))

    def due(self, every: int, step: int) -> bool:
        """Whether a periodic action (evaluation) is due after ``step``: every ``every`` steps and
        at the last one; never when ``every`` is 0."""
        return bool(every) and (step % every == 0 or step == self.total)

    def end_step(self, step: int, metrics: Mapping[str, Any], *, bad: str | None = None, load_LE: torch.Tensor | None = None,
                 postfix: Mapping[str, str] | None = None, state: Mapping[str, Any] | None = None) -> None:
        """Close step ``step`` (1-based: the number of steps done): log ``metrics`` and the MoE
        expert loads, count a skipped non-finite step (``bad``), save a checkpoint when one is due
        (with ``state``, the stage's own JSON-able state, returned as ``loop.state`` on resume), and
        stop here if a signal asked for it."""
        assert self._stop is not None, "use `with loop:`"
        if self._tracker is not None and self._loads is not None:  # rank 0 (or one process)
            self._loads.log(step, load_LE)
            self._tracker.log(step, metrics)
        if distributed.world() > 1 and distributed.any_rank(self._stop.requested) and not self._stop.requested:
            self._stop.signum = signal.SIGTERM  # another rank was signalled: stop at the same step
        self.bad_steps = common.count_bad_step(bad, self.bad_steps, step, self.cfg.max_bad_steps, self.last_path)
        if postfix and self._bar is not None:
            self._bar.set_postfix(dict(postfix), refresh=False)
        if step % self.cfg.save_every == 0 or step == self.total or self._stop.requested:
            self.save(step, state)
        self._stop.check(step, self.total, self.last_path)

    def save(self, step: int, state: Mapping[str, Any] | None = None) -> Path:
        """Write checkpoint ``step`` now (model, optimizer, extra models, generators, state)."""
        full = {**(state or {}), **common.model_state(self.model), "bad_steps": self.bad_steps}
        save = checkpoint.save_sharded if distributed.world() > 1 else checkpoint.save
        self.last_path = save(self.run_dir, step, self.model, self.optimizer, state=full, extra_models=self.extra_models,
                              generators=self.generators, keep=self.cfg.keep_checkpoints)
        return self.last_path

