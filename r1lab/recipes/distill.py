"""Distillation of a teacher into a student, which may differ in architecture and size (an MoE
teacher, a small dense student).

* ``distill.mode sequence`` (DeepSeek-R1, arXiv:2501.12948, sec. 2.4: small dense models
  fine-tuned on samples of R1): rejection-sample the teacher on train prompts
  (``r1lab.recipes.rejection_sample.run``, into ``RUN/teacher_traces.jsonl``), then SFT the student
  on the verified traces (``r1lab.recipes.sft.run``). Works across vocabularies: it is text.
* ``distill.mode token`` (Hinton et al., arXiv:1503.02531; reverse KL: MiniLLM, arXiv:2306.08543):
  at every completion token, the KL between the teacher's and the student's next-token
  distributions (``r1lab.sft.distill_kl``, forward or reverse, optionally over the teacher's top-k
  tokens), on completions the teacher samples afresh each step from train prompts, or on the
  completions of a dataset (``distill.data``). Needs the same vocabulary; a one-line error
  otherwise.

Departure: R1's distilled students start from pretrained Qwen/Llama checkpoints; here the student
is ``--init`` or, when empty, a fresh ``model.*`` (the teacher's tokenizer).
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

import torch

from r1lab import rollout
from r1lab.config import Config
from r1lab.model import moe
from r1lab.model.transformer import Transformer, count_parameters
from r1lab.recipes import common, rejection_sample
from r1lab.recipes import sft as sft_recipe
from r1lab.recipes.loop import TrainLoop
from r1lab.sft import Batch, batch_forward, distill_kl, masked_nll
from r1lab.tasks import get_task

TRACES_FILE = "teacher_traces.jsonl"


def sequence_level(cfg: Config, run_dir: Path, init: str | Path, teacher: str | Path) -> Path:
    """Rejection-sample the teacher (once: a resumed run reuses its complete traces), then SFT."""
    traces = Path(run_dir) / TRACES_FILE
    stats_file = rejection_sample.stats_path(traces)
    done = cfg.resume and traces.is_file() and stats_file.is_file() and '"complete": true' in stats_file.read_text(encoding="utf-8")
    if not done:
        stats = rejection_sample.run(cfg, traces, teacher)
        print(f"distill: {stats['kept']} teacher traces kept of {stats['samples']} samples (acceptance {stats['acceptance_rate']:.3f})")
        if not stats["kept"]:
            raise common.StageError(f"distill: the teacher {teacher} had no verified sample among {stats['samples']}; "
                                    f"raise rejection.n_prompts or rejection.samples_per_prompt")
    sft_cfg = dataclasses.replace(cfg, sft=dataclasses.replace(cfg.sft, data=f"jsonl:{traces}"))
    return sft_recipe.run(sft_cfg, run_dir, init)


def check_vocabularies(student_tok, teacher_tok, student, teacher, teacher_path) -> None:
    """Token-level KL compares distributions over the same token ids: the tokenizers and the
    output widths must match."""
    if student_tok.tok.get_vocab() != teacher_tok.tok.get_vocab() or student.vocab_size != teacher.vocab_size:
        raise common.StageError(f"distill.mode token needs one vocabulary: the teacher {teacher_path} has {teacher.vocab_size} "
                                f"output tokens ({teacher_tok.vocab_size} in its tokenizer), the student {student.vocab_size} "
                                f"({student_tok.vocab_size}) or other token ids; use distill.mode sequence")


def teacher_batch(teacher, tok, task, data_rng: random.Random, gen: torch.Generator, cfg: Config) -> rollout.Rollout:
    """One teacher completion for each of ``distill.prompts_per_step`` fresh train prompts."""
    examples = [task.sample(data_rng, "train") for _ in range(cfg.distill.prompts_per_step)]
    return rollout.sample(teacher, [tok.prompt_ids(ex.question) for ex in examples], cfg.distill.sample, tok.eos_id, tok.pad_id, gen)


def rollout_forward(model, ro: rollout.Rollout):
    """The model over a left-padded rollout (positions and key mask as the sampler had them)."""
    return model(ro.tokens, rollout.positions_from_mask(ro.attention_mask), ro.attention_mask)


def token_level(cfg: Config, run_dir: Path, init: str | Path, teacher_path: str | Path) -> Path:
    d, s = cfg.distill, cfg.sft
    common.seed_everything(cfg.seed, cfg.threads)
    teacher_tok = common.load_tokenizer(teacher_path)
    tok = common.load_tokenizer(init) if str(init) else teacher_tok
    teacher, teacher_ckpt = common.load_model(teacher_path)
    teacher.eval().requires_grad_(False)
    student, start_path = sft_recipe.start_model(cfg, init, tok)
    check_vocabularies(tok, teacher_tok, student, teacher, teacher_path)
    max_len = student.cfg.max_seq_len
    train = val = None
    if d.data:
        train, val = sft_recipe.load_data(d.data, s.val_fraction, tok, max_len)
    elif teacher.cfg.max_seq_len > max_len:
        raise common.StageError(f"distill: the student's model.max_seq_len {max_len} is shorter than the teacher's {teacher.cfg.max_seq_len}, "
                                f"whose samples it must read; build the student with model.max_seq_len {teacher.cfg.max_seq_len}")
    task = get_task(cfg.task, seed=cfg.seed)
    opt = common.make_optimizer(student, d.lr, s.weight_decay)
    data_rng = random.Random(cfg.seed)
    sample_gen = torch.Generator().manual_seed(cfg.seed)
    loop = TrainLoop(cfg, run_dir, "distill", student, opt, total=d.steps, generators={"data": data_rng, "sample": sample_gen}, start_path=start_path)
    if loop.finished:
        return loop.last_path
    order = sft_recipe.DataOrder(len(train), cfg.seed, loop.state.get("epoch", 0), loop.state.get("cursor", 0)) if train else None
    total, active = count_parameters(student)
    t_total, t_active = count_parameters(teacher)
    print(f"distill: token-level {d.kl} KL{f' (top-{d.top_k})' if d.top_k else ''} from {teacher_ckpt.path} "
          f"({teacher.cfg.ffn}, {t_total / 1e6:.2f}M, {t_active / 1e6:.2f}M active) into {start_path or 'a fresh model'} "
          f"({student.cfg.ffn}, {total / 1e6:.2f}M, {active / 1e6:.2f}M active), {d.steps} steps on "
          f"{f'{len(train)} records of {d.data}' if train else f'{d.prompts_per_step} fresh teacher samples per step'}")

    student.train()
    with loop:
        for step in loop.steps():
            t0 = time.perf_counter()
            lr = loop.set_lr(common.lr_at(step, d.lr, s.warmup_steps, d.steps, s.min_lr_ratio))
            if order is not None:
                b: Batch = sft_recipe.next_batch(train, order, s.batch_size, max_len, s.packing, tok.pad_id)
                with torch.no_grad():
                    t_logits = batch_forward(teacher, b).logits_BTV  # (B, T-1, V)
                out = batch_forward(student, b)
                targets, mask = b.ids_BT[:, 1:], b.loss_mask_BT[:, 1:]
            else:
                ro = teacher_batch(teacher, tok, task, data_rng, sample_gen, cfg)
                with torch.no_grad():
                    t_logits = rollout_forward(teacher, ro).logits_BTV[:, :-1]  # (N, T-1, V)
                out = rollout_forward(student, ro)
                out.logits_BTV = out.logits_BTV[:, :-1]
                targets, mask = ro.tokens[:, 1:], ro.completion_mask[:, 1:]
            kl = distill_kl(out.logits_BTV, t_logits, mask, d.kl, d.temperature, d.top_k)
            bad, grad_norm = loop.backward_step(kl + out.aux_loss, s.grad_clip)
            load_LE = moe.after_optimizer_step(student, step + 1, stepped=bad is None)
            metrics = {
                "distill/kl": kl.item(),
                "distill/student_nll": masked_nll(out.logits_BTV.detach(), targets, mask).item(),  # of the teacher's tokens
                "distill/aux_loss": out.aux_loss.item(),
                "distill/lr": lr,
                "distill/grad_norm": grad_norm,
                "distill/completion_tokens": int(mask.sum()),
                "time/step_s": time.perf_counter() - t0,
                "distill/skipped_nonfinite": int(bad is not None),
                **moe.balance_metrics(student, load_LE),
            }
            if val and loop.due(s.eval_every, step + 1):
                metrics["distill/val_kl"] = validation_kl(student, teacher, val, s.batch_size, max_len, tok.pad_id, cfg)
            loop.end_step(step + 1, metrics, bad=bad, load_LE=load_LE, state=order.state() if order else None,
                          postfix={"kl": f"{metrics['distill/kl']:.3f}"})
    return loop.last_path


@torch.no_grad()
def validation_kl(student, teacher, seqs, rows: int, max_len: int, pad_id: int, cfg: Config) -> float:
    """Token-weighted mean KL over the held-out records."""
    was_training = student.training
    student.eval()
    total, count = 0.0, 0
    for start in range(0, len(seqs), rows):
        b = sft_recipe.pad_batch(seqs[start : start + rows], pad_id)
        kl = distill_kl(batch_forward(student, b).logits_BTV, batch_forward(teacher, b).logits_BTV, b.loss_mask_BT[:, 1:],
                        cfg.distill.kl, cfg.distill.temperature, cfg.distill.top_k)
        total, count = total + float(kl) * b.n_loss_tokens, count + b.n_loss_tokens
    student.train(was_training)
    return total / max(count, 1)


def run(cfg: Config, run_dir: Path, init: str | Path, teacher: str | Path) -> Path:
    """Distil ``teacher`` into ``init`` (or a fresh ``cfg.model`` when empty) by ``cfg.distill.mode``;
    checkpoints go to ``run_dir``; returns the last one."""
    if not str(teacher):
        raise common.StageError("distill needs a teacher: --distill.teacher RUN_OR_CHECKPOINT")
    if cfg.distill.mode == "sequence":
        return sequence_level(cfg, run_dir, init, teacher)
    return token_level(cfg, run_dir, init, teacher)


def main(cfg: Config) -> Path:
    if not cfg.distill.teacher:
        raise common.StageError("distill needs a teacher: --distill.teacher RUN_OR_CHECKPOINT")
    teacher_tok = common.load_tokenizer(cfg.distill.teacher)
    if not cfg.distill.teacher.startswith(common.HF_PREFIX):
        common.resolve_checkpoint(cfg.distill.teacher)  # a wrong teacher path: one line, before any folder is made
    # The student too, before the teacher samples for minutes: a wrong --init, or a fresh student too big to train.
    if cfg.init and not cfg.init.startswith(common.HF_PREFIX):
        common.resolve_checkpoint(cfg.init)
    elif not cfg.init:
        vocab = (teacher_tok if cfg.distill.mode == "token" else common.load_tokenizer("")).vocab_size
        common.check_trainable(lambda: Transformer(cfg.model, vocab))
    run_dir = common.run_dir_for(cfg, "distill")
    common.prepare_run_dir(run_dir, cfg)
    if not cfg.init and cfg.distill.mode == "token":  # a fresh student reads its teacher's token ids
        teacher_tok.save_folder(run_dir)
    path = run(cfg, run_dir, cfg.init, cfg.distill.teacher)
    keys = ["sft/loss", "sft/val_loss"] if cfg.distill.mode == "sequence" else ["distill/kl", "distill/student_nll", "distill/val_kl"]
    common.print_stage_summary(run_dir, "distill", keys)
    print(f"distill: final checkpoint {path}")
    return run_dir
