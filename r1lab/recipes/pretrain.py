"""Pretrain a small model from scratch on a task's corpus of solved problems.

The corpus mixes two solution styles for the task's *train* split: a direct answer
(``<think></think><answer>21</answer>``) and, for a ``worked_fraction`` of documents, a worked
step-by-step solution inside ``<think>``. A tiny model gets the direct style mostly wrong and the
worked style mostly right, so the base model has low pass@1 but non-zero pass@k: the situation in
which RL from outcome rewards alone can select reasoning (DeepSeek-R1-Zero).

Under torchrun (docs/distributed.md) every rank builds the same global batch of world x
``batch_size`` rows from the one data RNG and trains on rows ``rank::world``; the loss is the mean
over the global batch's real tokens. So N processes of batch B follow one process of batch N*B
(to float tolerance, with the MoE balance loss off: it is a per-rank mean), and a checkpoint
resumes at any world size with the same data stream.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from r1lab import distributed
from r1lab.config import Config
from r1lab.model import moe
from r1lab.model.transformer import count_parameters
from r1lab.recipes import common, context
from r1lab.recipes.loop import TrainLoop
from r1lab.sft import masked_nll
from r1lab.tasks import Task, get_task
from r1lab.tokenizer import BaseTokenizer


def document(tok: BaseTokenizer, task: Task, rng: random.Random, worked_fraction: float, split: str = "train") -> list[int]:
    """One corpus document: a question of ``split`` with a worked or a direct answer in the R1 template."""
    ex = task.sample(rng, split)
    worked = bool(ex.solution) and rng.random() < worked_fraction
    completion = tok.completion_text(ex.solution if worked else "", ex.answer)
    return tok.prompt_ids(ex.question) + tok.encode(completion) + [tok.eos_id]


MAX_LONG_DOCUMENTS = 1000
"documents longer than a whole row drawn in a row before the corpus is declared unusable"


def whole_document(tok: BaseTokenizer, task: Task, rng: random.Random, worked_fraction: float, seq_len: int, split: str = "train") -> list[int]:
    """A ``document`` that fits a row of ``seq_len`` tokens: a longer one is skipped, never cut
    (a problem cut in half teaches a question without its answer); ``StageError`` if none fits."""
    for _ in range(MAX_LONG_DOCUMENTS):
        doc = document(tok, task, rng, worked_fraction, split)
        if len(doc) <= seq_len:
            return doc
    raise common.StageError(f"pretrain: {MAX_LONG_DOCUMENTS} documents of {task.name} in a row are longer than model.max_seq_len={seq_len} "
                            f"(the last: {len(doc)} tokens); raise model.max_seq_len or leave it unset to size it from the task")


def batch(tok: BaseTokenizer, task: Task, rng: random.Random, rows: int, worked_fraction: float, seq_len: int,
          split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` sequences of ``seq_len`` tokens, each packed with whole documents (GPT-style
    packing: plain causal attention across document boundaries, every document opening with
    bos), right-padded after the last document that fits; a document that does not fit opens
    the next row, and one longer than a row is skipped (``whole_document``): no problem is ever
    cut in half. Returns ids and the real-token mask. ``split="test"`` gives held-out documents."""
    ids = torch.full((rows, seq_len), tok.pad_id, dtype=torch.long)
    doc = whole_document(tok, task, rng, worked_fraction, seq_len, split)
    for r in range(rows):
        filled = 0
        while filled + len(doc) <= seq_len:
            ids[r, filled : filled + len(doc)] = torch.tensor(doc)
            filled += len(doc)
            doc = whole_document(tok, task, rng, worked_fraction, seq_len, split)  # may open the next row
    return ids, ids != tok.pad_id


def run(cfg: Config, run_dir: Path) -> Path:
    """Train, checkpoint into ``run_dir``, and return the final checkpoint's folder."""
    p = cfg.pretrain
    common.seed_everything(cfg.seed, cfg.threads)
    tok = common.load_tokenizer(run_dir)  # the character tokenizer its run folder records
    task = get_task(cfg.task, seed=cfg.seed)
    data_rng = random.Random(cfg.seed)
    context.check_fresh(cfg, task, tok, "pretrain")  # before any training: prompt + budget must fit
    dev, world = distributed.device(cfg.device), distributed.world()
    model = common.new_model(cfg.model, tok.vocab_size).to(dev)
    train_model = distributed.wrap(model, cfg.dist, dev)  # the module the forward pass calls (DDP, FSDP2, or the model)
    opt = common.make_optimizer(model, p.lr, p.weight_decay)
    loop = TrainLoop(cfg, run_dir, "pretrain", model, opt, total=p.steps, generators={"data": data_rng})
    if loop.finished:
        return loop.last_path
    total, active = count_parameters(model)
    print(f"pretrain: {cfg.model.ffn} model, {total / 1e6:.2f}M parameters ({active / 1e6:.2f}M active), task {task.name}, {p.steps} steps"
          + (f", {world} ranks x {p.batch_size} rows ({cfg.dist.strategy})" if world > 1 else "") + (f", {dev}" if dev.type != "cpu" else ""))

    model.train()
    with loop:
        for step in loop.steps():
            t0 = time.perf_counter()
            lr = loop.set_lr(common.lr_at(step, p.lr, p.warmup_steps, p.steps, p.min_lr_ratio))
            ids, mask = batch(tok, task, data_rng, p.batch_size * world, p.worked_fraction, cfg.model.max_seq_len)
            n_tokens = float(mask.sum())
            if world > 1:  # this rank's rows of the global batch; its mean weighted to the global token mean
                g_mask = mask
                ids, mask = ids[distributed.shard_rows(len(ids))], mask[distributed.shard_rows(len(mask))]
            ids, mask = ids.to(dev), mask.to(dev)
            with distributed.autocast(dev):
                # The real-token mask goes to the MoE layers only: attention stays plain causal.
                out = train_model(ids[:, :-1], token_mask_BT=mask[:, :-1])
                nll = masked_nll(out.logits_BTV.float(), ids[:, 1:], mask[:, 1:])
                if world > 1:
                    nll = nll * _share(mask[:, 1:], g_mask[:, 1:], world)
                loss = nll + out.aux_loss
                mtp_nll = None
                if model.mtp is not None:  # DeepSeek-V3 MTP: from h_i and t_{i+1}, predict t_{i+2}
                    mtp_out = model.mtp_forward(out.hidden_BTD[:, :-1], ids[:, 1:-1], token_mask_BT=mask[:, 1:-1])
                    mtp_nll = masked_nll(mtp_out.logits_BTV.float(), ids[:, 2:], mask[:, 2:])
                    if world > 1:
                        mtp_nll = mtp_nll * _share(mask[:, 2:], g_mask[:, 2:], world)
                    loss = loss + cfg.model.mtp_loss_weight * mtp_nll + mtp_out.aux_loss
            bad, grad_norm = loop.backward_step(loss, p.grad_clip)  # NaN/Inf: skip the update, keep the weights
            load_LE = moe.after_optimizer_step(model, step + 1, stepped=bad is None)  # aux-free bias update
            dt = time.perf_counter() - t0
            metrics = {
                "pretrain/loss": _global_mean(nll, world),
                "pretrain/aux_loss": out.aux_loss.item(),
                "pretrain/lr": lr,
                "pretrain/grad_norm": grad_norm,
                "pretrain/tokens_per_s": n_tokens / dt,
                "pretrain/skipped_nonfinite": int(bad is not None),
                **moe.balance_metrics(model, load_LE),
            }
            if mtp_nll is not None:
                metrics["pretrain/mtp_loss"] = _global_mean(mtp_nll, world)
            loop.end_step(step + 1, metrics, bad=bad, load_LE=load_LE, postfix={"loss": f"{metrics['pretrain/loss']:.3f}"})
    if distributed.is_main():
        common.expert_load_heatmap(run_dir, "pretrain")
    return loop.last_path


def _share(mask_BT: torch.Tensor, global_mask_BT: torch.Tensor, world: int) -> float:
    """world x (this rank's real tokens) / (the global batch's): DDP and FSDP2 average gradients
    over ranks, so each rank's token mean weighted by this sums to the global token mean."""
    return world * float(mask_BT.sum()) / max(float(global_mask_BT.sum()), 1.0)


def _global_mean(weighted_nll: torch.Tensor, world: int) -> float:
    """The global batch's token-mean loss from each rank's ``_share``-weighted mean."""
    if world == 1:
        return weighted_nll.item()
    return float(distributed.all_reduce_(weighted_nll.detach().float().clone())) / world


def main(cfg: Config) -> Path:
    run_dir = distributed.broadcast_object(common.run_dir_for(cfg, "pretrain"))  # one folder for all ranks
    if distributed.is_main():
        common.prepare_run_dir(run_dir, cfg)
    distributed.barrier()
    path = run(cfg, run_dir)
    common.print_stage_summary(run_dir, "pretrain", ["pretrain/loss", "pretrain/lr", "pretrain/tokens_per_s", "moe/load_max_over_mean"])
    print(f"pretrain: final checkpoint {path}")
    return run_dir
