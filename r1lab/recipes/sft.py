"""Supervised fine-tuning on prompt/completion records: DeepSeek-R1's cold start and its
distillation into small models (arXiv:2501.12948, sec. 2.3.1 and 2.4).

One linear loop: read and tokenize the records in the R1 template (a malformed record stops here
with its file and line), hold out the prompts of a validation slice, then each step take the next
documents of a seeded shuffle, pack them into rows (no attention across documents), take the NLL
of the completion tokens only, step, and every ``sft.eval_every`` steps log the validation loss.
The maths lives in ``r1lab.sft``; this file only wires it.

Records are ``{"prompt", "completion"}`` (the prompt is the user's question, rendered in the R1
template; the completion is trained verbatim, e.g. ``<think>...</think><answer>...</answer>``) or a
task row ``{"question", "answer"[, "solution"]}`` whose completion is built by the tokenizer's
``completion_text`` (worked when a solution is given). Other fields are ignored.

Departure: R1 trains for a fixed number of epochs; here ``sft.steps`` counts optimizer steps and
the data order reshuffles at each epoch boundary (seeded, so a resumed run continues identically).
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from r1lab.config import Config
from r1lab.model import moe
from r1lab.model.transformer import count_parameters
from r1lab.recipes import common
from r1lab.recipes.loop import TrainLoop
from r1lab.sft import Batch, Sequence, pack, pack_rows, pad_batch, sft_loss
from r1lab.tasks.base import stable_hash
from r1lab.tokenizer import BaseTokenizer

JSONL_PREFIX = "jsonl:"
DATASETS_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
"file suffix -> the `datasets` builder that reads it (.jsonl goes through read_jsonl for line numbers)"


@dataclass(frozen=True)
class Record:
    """One SFT record: the question (rendered in the R1 template) and the completion trained on."""

    prompt: str
    completion: str


def _record(row: object, where: str, tok_completion) -> Record:
    """A row (a mapping) as a Record; ValueError naming ``where`` on any defect."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object with prompt/completion or question/answer, got {type(row).__name__}")

    def text(key: str) -> str:
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            got = "missing" if key not in row else "empty" if isinstance(value, str) else f"got {type(value).__name__}"
            raise ValueError(f"{where}: {key!r} must be a non-empty string ({got})")
        return value

    if "prompt" in row or "completion" in row:
        return Record(text("prompt"), text("completion"))
    if "question" in row or "answer" in row:
        solution = row.get("solution") or ""
        if not isinstance(solution, str):
            raise ValueError(f"{where}: 'solution' must be a string (got {type(solution).__name__})")
        return Record(text("question"), tok_completion(solution, text("answer").strip()))
    raise ValueError(f"{where}: a record needs prompt and completion, or question and answer (fields: {sorted(row)[:5]})")


def read_records(spec: str, tok: BaseTokenizer) -> list[Record]:
    """The records of ``jsonl:PATH`` or of a local file the ``datasets`` library reads (by
    suffix). ValueError of one line naming the file and line (row for non-JSONL files) of the
    first defect, or saying that there is no record at all."""
    if not spec:
        raise ValueError("no SFT data: give --sft.data jsonl:PATH (or a .json/.csv/.parquet file)")
    path = Path(spec[len(JSONL_PREFIX):] if spec.startswith(JSONL_PREFIX) else spec)
    if not path.is_file():
        raise ValueError(f"SFT data {path} does not exist" if not path.exists() else f"SFT data {path} is not a file")
    if spec.startswith(JSONL_PREFIX) or path.suffix == ".jsonl":
        records = read_jsonl(path, tok)
    elif path.suffix in DATASETS_FORMATS:
        records = read_with_datasets(path, DATASETS_FORMATS[path.suffix], tok)
    else:
        raise ValueError(f"SFT data {path}: unknown format {path.suffix!r}; use jsonl:PATH or a file ending in {', '.join(DATASETS_FORMATS)}")
    if not records:
        raise ValueError(f"SFT data {path} holds no record")
    return records


def read_jsonl(path: Path, tok: BaseTokenizer) -> list[Record]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 (offset {e.start})") from None
    records = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError, ValueError) as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({getattr(e, 'msg', type(e).__name__)})") from None
        records.append(_record(row, f"{path}:{n}", tok.completion_text))
    return records


def read_with_datasets(path: Path, builder: str, tok: BaseTokenizer) -> list[Record]:
    import datasets  # imported on use: a second or more of start-up

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 - the library raises many types; each becomes one line naming the file
        raise ValueError(f"{path}: cannot be read as {builder} ({type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''})") from None
    first_row = 2 if builder == "csv" else 1  # a CSV's line 1 is its header
    return [_record(row, f"{path}: row {i + first_row}", tok.completion_text) for i, row in enumerate(ds)]


def tokenize(record: Record, tok: BaseTokenizer) -> Sequence:
    """R1-template prompt, then the completion and eos; the loss goes on the completion's tokens."""
    prompt = tok.prompt_ids(record.prompt)
    return Sequence(tuple(prompt + tok.encode(record.completion) + [tok.eos_id]), len(prompt))


def split_heldout(records: list[Record], fraction: float) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): the distinct prompts of lowest stable hash, a
    ``fraction`` of them (at least one when ``fraction`` > 0 and two prompts exist), are held
    out with all their records, so no validation prompt is trained on, whatever the file order."""
    prompts = sorted({r.prompt for r in records}, key=lambda p: (stable_hash(p), p))
    n_val = min(len(prompts) - 1, max(1, math.ceil(fraction * len(prompts)))) if fraction > 0 else 0
    held = set(prompts[:n_val])
    return [i for i, r in enumerate(records) if r.prompt not in held], [i for i, r in enumerate(records) if r.prompt in held]


def load_data(spec: str, val_fraction: float, tok: BaseTokenizer, max_len: int) -> tuple[list[Sequence], list[Sequence]]:
    """(train, validation) sequences of the records at ``spec``; StageError when nothing usable is left."""
    try:
        records = read_records(spec, tok)
    except ValueError as e:
        raise common.StageError(str(e)) from None
    pairs = [(r, tokenize(r, tok)) for r in records]
    pairs = [(r, seq) for r, seq in pairs if len(seq.ids) <= max_len]
    if not pairs:
        raise common.StageError(f"SFT data {spec}: no usable record: all {len(records)} exceed model.max_seq_len={max_len} tokens")
    if len(pairs) < len(records):
        print(f"r1lab: warning: sft: {len(records) - len(pairs)} of {len(records)} records exceed model.max_seq_len={max_len} tokens and are skipped",
              file=sys.stderr)
    train_idx, val_idx = split_heldout([r for r, _ in pairs], val_fraction)
    return [pairs[i][1] for i in train_idx], [pairs[i][1] for i in val_idx]


class DataOrder:
    """The training documents in a seeded shuffle, reshuffled each epoch; its position
    (``epoch``, ``cursor``) is the state a checkpoint saves."""

    def __init__(self, n: int, seed: int, epoch: int = 0, cursor: int = 0):
        self.n, self.seed, self.epoch, self.cursor = n, seed, epoch, cursor
        self.order = self._perm(epoch)

    def _perm(self, epoch: int) -> list[int]:
        order = list(range(self.n))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next(self) -> int:
        if self.cursor >= self.n:
            self.epoch, self.cursor = self.epoch + 1, 0
            self.order = self._perm(self.epoch)
        self.cursor += 1
        return self.order[self.cursor - 1]

    def peek(self) -> int:
        if self.cursor >= self.n:
            return self._perm(self.epoch + 1)[0]
        return self.order[self.cursor]

    def state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}


def next_batch(seqs: list[Sequence], order: DataOrder, rows: int, max_len: int, packing: bool, pad_id: int) -> Batch:
    """The next documents in ``order``: ``rows`` of them padded one per row, or (packing) as many
    as fill ``rows`` rows of ``max_len`` tokens."""
    take = [seqs[order.next()]]
    if packing:
        while pack_rows([*take, seqs[order.peek()]], max_len) <= rows:
            take.append(seqs[order.next()])
        return pack(take, max_len, pad_id)
    while len(take) < rows:
        take.append(seqs[order.next()])
    return pad_batch(take, pad_id)


@torch.no_grad()
def validation_loss(model: torch.nn.Module, seqs: list[Sequence], rows: int, max_len: int, pad_id: int) -> float:
    """Mean NLL of every completion token of ``seqs`` (packed, ``rows`` rows per forward)."""
    was_training = model.training
    model.eval()
    total, count, start = 0.0, 0, 0
    while start < len(seqs):
        end = start + 1
        while end < len(seqs) and pack_rows(seqs[start : end + 1], max_len) <= rows:
            end += 1
        b = pack(seqs[start:end], max_len, pad_id)
        nll, _ = sft_loss(model, b)
        total, count, start = total + float(nll) * b.n_loss_tokens, count + b.n_loss_tokens, end
    model.train(was_training)
    return total / max(count, 1)


def start_model(cfg: Config, init: str | Path, tok: BaseTokenizer):
    """(model, the checkpoint path it came from or None): ``init``'s model, or a fresh
    ``cfg.model`` when ``init`` is empty."""
    if str(init):
        model, ckpt = common.load_model(init)
        return model, ckpt.path
    return common.new_model(cfg.model, tok.vocab_size), None


def run(cfg: Config, run_dir: Path, init: str | Path) -> Path:
    """Fine-tune ``init`` (or a fresh ``cfg.model`` when empty) on ``cfg.sft.data``;
    checkpoints go to ``run_dir``; returns the last one."""
    s = cfg.sft
    common.seed_everything(cfg.seed, cfg.threads)
    tok = common.load_tokenizer(init)
    model, start_path = start_model(cfg, init, tok)
    max_len = model.cfg.max_seq_len
    train, val = load_data(s.data, s.val_fraction, tok, max_len)
    opt = common.make_optimizer(model, s.lr, s.weight_decay)
    loop = TrainLoop(cfg, run_dir, "sft", model, opt, total=s.steps, start_path=start_path)
    if loop.finished:
        return loop.last_path
    order = DataOrder(len(train), cfg.seed, loop.state.get("epoch", 0), loop.state.get("cursor", 0))
    total, active = count_parameters(model)
    print(f"sft: {total / 1e6:.2f}M parameters ({active / 1e6:.2f}M active) from {start_path or 'a fresh model'}: "
          f"{len(train)} train / {len(val)} validation records, {s.steps} steps x {s.batch_size} rows{' (packed)' if s.packing else ''}")

    model.train()
    with loop:
        for step in loop.steps():
            t0 = time.perf_counter()
            lr = loop.set_lr(common.lr_at(step, s.lr, s.warmup_steps, s.steps, s.min_lr_ratio))
            b = next_batch(train, order, s.batch_size, max_len, s.packing, tok.pad_id)
            nll, aux = sft_loss(model, b, mtp=True)  # completion tokens only; + MoE aux and MTP terms
            bad, grad_norm = loop.backward_step(nll + aux, s.grad_clip)
            load_LE = moe.after_optimizer_step(model, step + 1, stepped=bad is None)
            dt = time.perf_counter() - t0
            metrics = {
                "sft/loss": nll.item(),
                "sft/aux_loss": aux.item(),  # MoE balance (+ weighted MTP loss on MTP models)
                "sft/lr": lr,
                "sft/grad_norm": grad_norm,
                "sft/loss_tokens": b.n_loss_tokens,
                "sft/tokens_per_s": float(b.real_BT.sum()) / dt,
                "sft/epoch": order.epoch + order.cursor / max(1, order.n),
                "sft/skipped_nonfinite": int(bad is not None),
                **moe.balance_metrics(model, load_LE),
            }
            if val and loop.due(s.eval_every, step + 1):
                metrics["sft/val_loss"] = validation_loss(model, val, s.batch_size, max_len, tok.pad_id)
            loop.end_step(step + 1, metrics, bad=bad, load_LE=load_LE, state=order.state(), postfix={"loss": f"{metrics['sft/loss']:.3f}"})
    return loop.last_path


def main(cfg: Config) -> Path:
    run_dir = common.run_dir_for(cfg, "sft")
    tok = common.load_tokenizer(cfg.init)
    try:
        read_records(cfg.sft.data, tok)  # a bad dataset stops before a run folder exists
    except ValueError as e:
        raise common.StageError(str(e)) from None
    common.prepare_run_dir(run_dir, cfg)
    path = run(cfg, run_dir, cfg.init)
    common.print_stage_summary(run_dir, "sft", ["sft/loss", "sft/val_loss", "sft/lr", "sft/tokens_per_s"])
    print(f"sft: final checkpoint {path}")
    return run_dir
