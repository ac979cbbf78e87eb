"""What every stage does the same way: run folders, seeding, threads, building or loading the
model, the optimizer and the learning-rate schedule, and the mechanics that let a run survive:
a graceful stop on SIGTERM/Ctrl-C (``StopFlag``) and the non-finite guard (``nonfinite_guard``,
``count_bad_step``). Loops stay in the recipes: these are plain functions they call."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from r1lab import checkpoint, lora, tracking
from r1lab import config as config_lib
from r1lab import tokenizer as tokenizer_lib
from r1lab.config import Config, ModelConfig
from r1lab.model import hf
from r1lab.model.transformer import Transformer
from r1lab.tokenizer import BaseTokenizer, CharTokenizer

HF_PREFIX = "hf:"
"``--init hf:PATH`` starts from a local Hugging Face folder (r1lab.model.hf)"


class StageError(RuntimeError):
    """A problem with the user's input that the CLI reports in one line (exit 2)."""


class RunStopped(RuntimeError):
    """The run stopped on purpose before its last step, its checkpoints intact: a signal
    (exit 128 + signal number: 130 for Ctrl-C, 143 for SIGTERM) or too many non-finite steps in a
    row (exit 3). The CLI prints the one-line message and exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


NONFINITE_EXIT = 3
"exit code of a run stopped by ``max_bad_steps`` consecutive non-finite steps"


class StopFlag:
    """``with StopFlag() as stop:`` turns SIGTERM and SIGINT into a request to stop after the
    current step; the loop saves a checkpoint and calls ``stop.check``. A second signal stops at
    once (``KeyboardInterrupt``): checkpoints are atomic, so that loses at most the steps since
    the last one. The previous handlers come back on exit. Off the main thread (where Python
    cannot install handlers) it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # os.write, not print: a handler that prints while the loop is printing raises "reentrant call".
        os.write(2, f"r1lab: {signal.Signals(signum).name} received: stopping after this step (send it again to stop at once)\n".encode())

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def check(self, step: int, total: int, last_path: Path | None) -> None:
        """Raise ``RunStopped`` if a stop was requested and ``step`` is not the last one. Call it
        after the step's checkpoint is saved."""
        if step < total:
            self.check_done(f"step {step}; checkpoint {last_path}")

    def check_done(self, what: str) -> None:
        """Raise ``RunStopped`` if a stop was requested, saying that ``what`` was completed."""
        if self.signum is not None:
            name = signal.Signals(self.signum).name
            raise RunStopped(f"stopped by {name} after {what}; rerun the same command with --resume to continue",
                             exit_code=128 + self.signum)


def nonfinite_guard(loss: torch.Tensor, model: torch.nn.Module) -> str | None:
    """Which quantity is NaN or infinite after ``loss.backward()``: ``"loss (nan)"``,
    ``"gradient of <parameter>"``, or None when all are finite. Call it before clipping (a
    non-finite norm would spread NaN to every gradient and hide the culprit) and skip the update
    when it names something: one bad step would otherwise poison the weights and Adam's moments."""
    value = float(loss.detach())
    if not math.isfinite(value):
        return f"loss ({value})"
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    # One norm over every gradient is finite when they all are (and costs a tenth of a check per
    # tensor); a non-finite or overflowing norm falls through to the check that names the culprit.
    if not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))):
        return None
    for name, p in model.named_parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return f"gradient of {name}"
    return None


def count_bad_step(bad: str | None, bad_steps: int, step: int, max_bad_steps: int, last_path: Path | None) -> int:
    """The new count of consecutive skipped steps after ``step`` (``bad`` from ``nonfinite_guard``).
    Warns on stderr naming the step and the quantity; raises ``RunStopped`` (exit 3) when the
    count reaches ``max_bad_steps``, before anything is saved, so the last good checkpoint is
    what remains."""
    if bad is None:
        return 0
    bad_steps += 1
    print(f"r1lab: warning: step {step}: non-finite {bad}; update skipped ({bad_steps} in a row, stop at {max_bad_steps})",
          file=sys.stderr, flush=True)
    if bad_steps >= max_bad_steps:
        raise RunStopped(f"stopped at step {step}: {bad_steps} consecutive steps with a non-finite loss or gradient "
                         f"(last: {bad}); last good checkpoint {last_path}", exit_code=NONFINITE_EXIT)
    return bad_steps


def run_dir_for(cfg: Config, stage: str) -> Path:
    return Path(cfg.out) if cfg.out else Path("runs") / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(run_dir: Path, cfg: Config) -> None:
    """Create the run folder and write the resolved config; refuse to overwrite a run's checkpoints
    unless resuming."""
    if not cfg.resume and checkpoint.latest_step(run_dir) is not None:
        raise StageError(f"run folder {run_dir} already holds checkpoints: pass --resume to continue it, or another --out")
    tok = load_tokenizer(cfg.init)  # the run records the tokenizer it uses: its init's, or the character one
    run_dir.mkdir(parents=True, exist_ok=True)
    config_lib.save(cfg, run_dir / "config.yaml")
    tok.save_folder(run_dir)


def jsonl_out(out: str, stage: str, what: str) -> Path:
    """The ``--out`` file a stage writes JSON lines to: StageError when it is missing (``stage
    needs --out what``) or names a folder."""
    if not out:
        raise StageError(f"{stage} needs --out {what}")
    path = Path(out)
    if path.is_dir():
        raise StageError(f"{stage}: --out {path} is a folder; give a .jsonl file path")
    return path


def seed_everything(seed: int, threads: int) -> None:
    # Set on purpose, never left to torch's default: on an idle 2-core machine 2 threads halve a
    # step (benchmarks/threads.py), but with another busy process tiny matmuls on 2 threads were
    # up to 50x slower than on 1 (DESIGN.md). A fixed count also keeps runs bit-reproducible.
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


TRAIN_BYTES_PER_PARAMETER = 16
"fp32 training memory per parameter: weights, gradients and AdamW's two moments (4 bytes each)"


def available_memory() -> int:
    """Bytes of memory the system can still hand out (Linux's MemAvailable; else all of it)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


MODEL_KEYS = "model.d_model, model.n_layers, model.d_ff, model.d_expert, model.n_routed_experts"
"the keys that size a model, named when it does not fit"


def check_trainable(build: Callable[[], torch.nn.Module], what: str = "model", keys: str = MODEL_KEYS) -> None:
    """StageError when the module ``build()`` makes cannot be trained in this machine's memory:
    its size is counted on the meta device first (no memory), so an absurd width ends in one line
    naming the figures and ``keys`` instead of an allocator traceback or a machine that swaps."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build().parameters())
    need, have = n_params * TRAIN_BYTES_PER_PARAMETER, available_memory()
    if need > have:
        raise StageError(f"{what} of {n_params / 1e6:,.1f}M parameters needs about {need / 2**30:,.1f} GiB to train "
                         f"(weights, gradients, AdamW state) but {have / 2**30:,.1f} GiB is available; make it smaller ({keys})")


def new_model(model_cfg: ModelConfig, vocab_size: int) -> Transformer:
    """A freshly initialised model, after checking that it can be trained here (``check_trainable``)."""
    check_trainable(lambda: Transformer(model_cfg, vocab_size))
    return Transformer(model_cfg, vocab_size)


SAMPLED_BYTES_PER_TOKEN = 17
"what the sampler keeps per row and token slot at the least: token id (8), log-prob (4), entropy (4), mask (1)"


def sampling_bytes(rows: int, tokens: int, model_cfg: ModelConfig | None = None, vocab_size: int = 0, itemsize: int = 4) -> int:
    """A lower bound on the bytes ``rollout.sample`` holds at once for ``rows`` completions of up to
    ``tokens`` tokens: its per-token outputs (``SAMPLED_BYTES_PER_TOKEN``) and, given the model,
    the cache slots it allocates up front for every row's completion (GQA: keys and values of every
    layer; MLA: the latent and rotary key) and one row of next-token logits per row. The prompt's
    cache, the prefill logits and the activations come on top."""
    if model_cfg is None:  # no model has a longer context than config.MAX_SEQ_LEN, which caps each row's budget
        return rows * min(tokens, config_lib.MAX_SEQ_LEN) * SAMPLED_BYTES_PER_TOKEN
    m = model_cfg
    tokens = max(min(tokens, m.max_seq_len - 1), 1)  # a row's budget: what the context leaves after a prompt of >= 1 token
    if m.attention == "mla":
        cache_per_token = m.n_layers * (m.kv_lora_rank + m.qk_rope_head_dim) * itemsize
    else:
        cache_per_token = m.n_layers * 2 * m.n_kv_heads * (m.d_model // m.n_heads) * itemsize
    return rows * (tokens * (SAMPLED_BYTES_PER_TOKEN + cache_per_token) + vocab_size * itemsize)


def check_sampling(rows: int, tokens: int, keys: str, model: torch.nn.Module | None = None,
                   model_cfg: ModelConfig | None = None, vocab_size: int = 0) -> None:
    """StageError naming ``keys`` when ``rows`` completions of up to ``tokens`` tokens, sampled in
    one batch, cannot fit in memory. A lower bound (``sampling_bytes``), so it never refuses a
    batch that would fit; given the ``model`` (or its ``model_cfg`` and ``vocab_size`` before it is
    built) it counts the completions' cache and logits too, which dominate: without them a batch
    100x too large for the machine passed."""
    itemsize = 4
    if model is not None:
        model_cfg, vocab_size, itemsize = model.cfg, model.vocab_size, model.embed.weight.element_size()
    need, have = sampling_bytes(rows, tokens, model_cfg, vocab_size, itemsize), available_memory()
    if need > have:
        raise StageError(f"sampling {rows:,} completions of up to {tokens:,} tokens in one batch needs over {need / 2**30:,.1f} GiB "
                         f"but {have / 2**30:,.1f} GiB is available; lower {keys}")


def example_bytes(ex: object) -> int:
    """Bytes one drawn problem (an ``Example``: the object, its fields and their strings) holds."""
    fields = vars(ex)
    return sys.getsizeof(ex) + sys.getsizeof(fields) + sum(sys.getsizeof(v) for v in fields.values())


def problem_counts(stage: str, cfg: Config) -> list[tuple[str, str, int, int, bool, int]]:
    """``(config key, split, count, seed, capped, sampled rows held per problem)`` of every set of
    distinct problems ``stage`` draws with ``Task.examples``. ``capped``: the stage takes a finite
    pool's size when it holds fewer (curate, the signal check, check-task); the others need that
    many. Rows held: an evaluation keeps every sample's prompt row of all its problems at once
    (counted with the run's tokenizer when ``check_problems`` gets one)."""
    e, r, d, rc = cfg.eval, cfg.rl, cfg.data, cfg.rejection
    evals = [("eval.n_problems", e.split, e.n_problems, e.seed, False, e.n_samples)]
    rl_evals = [("rl.eval_problems", "test", r.eval_problems, e.seed, False, 2)] if r.eval_every else []
    if r.monitor.enabled and r.monitor.probe_every:
        rl_evals.append(("rl.monitor.probe_problems", "test", r.monitor.probe_problems, r.monitor.probe_seed, False, 1))
    signal = [("data.signal_problems", "train", d.signal_problems, e.seed + 1, True, 0)] if d.signal_problems else []
    rejection = [("rejection.n_prompts", "train", rc.n_prompts, cfg.seed, False, 0)]
    return {
        "eval": evals,
        # check-task keeps every train draw and every RL prompt in a list (draws repeat: no pool bound)
        "check-task": [("eval.n_problems", "test", e.n_problems, e.seed, True, 0), ("check.train_samples", "train", cfg.check.train_samples, cfg.seed + 1, True, 0),
                       ("rl.steps x rl.prompts_per_step", "train", r.steps * r.prompts_per_step, cfg.seed, True, 0)],
        "zero": evals + rl_evals + signal,
        "r1": evals + rl_evals + signal + rejection + [("r1.cold_start_examples", "train", cfg.r1.cold_start_examples, cfg.seed, True, 0)],
        "rl": rl_evals + (signal if d.signal_check else []),
        "curate": [("data.curate_problems", "train", d.curate_problems, cfg.seed, True, 0)],
        "rejection-sample": rejection,
        "distill": rejection if cfg.distill.mode == "sequence" else [],
        "prm": [("prm.n_problems", cfg.prm.split, cfg.prm.n_problems, cfg.seed, False, 0)] if cfg.prm.action == "label" else [],
    }.get(stage, [])


def check_problems(stage: str, cfg: Config, task, tok: BaseTokenizer | None = None, draw: bool = False) -> None:
    """StageError naming the key, before any work, when a count of distinct problems
    (``problem_counts``) exceeds what the task can give or what memory can hold: more than a
    finite pool's distinct questions, or more problems than fit in memory (a lower bound: one drawn
    problem's bytes, plus its prompt rows where the stage holds them). ``draw``: also draw them now
    (``Task.examples``; a generator with a small space fails fast), for pipelines whose evaluation
    comes after training: ``r1lab zero --eval.n_problems 100000`` on chain used to pretrain, then fail."""
    for key, split, n, seed, capped, rows in problem_counts(stage, cfg):
        try:
            ex = task.sample(random.Random(seed), split)
        except ValueError:  # a split the task cannot draw here (humaneval's train; scenes outside janus): the stage says so
            continue
        pool = task.pool(split)
        if pool is not None:
            distinct = len({ex.question for ex in pool})
            if n > distinct and not capped:  # (a capped count is drawn with repeats, or cut to the pool)
                raise StageError(f"{key} {n:,}: task {task.name}'s {split} split holds {distinct:,} distinct problems; lower {key}")
            n = min(n, distinct)
        per = example_bytes(ex) + (rows * sys.getsizeof(tok.prompt_ids(ex.question)) if tok is not None else 0)
        need, have = n * per, available_memory()
        if need > have:
            culprit = f"{key} {n:,}" + (f" x eval.n_samples {rows:,}" if key == "eval.n_problems" and rows else "")
            lower = key + (" or eval.n_samples" if key == "eval.n_problems" and rows else "")
            raise StageError(f"{culprit}: holding that many {task.name} problems and samples needs over {need / 2**30:,.1f} GiB "
                             f"({per:,} bytes a problem at the least) but {have / 2**30:,.1f} GiB is available; lower {lower}")
        if draw and not capped:
            try:
                task.examples(split, n, seed)
            except ValueError as err:
                raise StageError(f"{key}: {err}") from None


def preflight(stage: str, cfg: Config, task) -> None:
    """What the CLI checks after the config and task, before any stage starts: the problem counts
    (``check_problems``) and, for the pipelines that build a fresh model and sample from it after
    training it (zero, r1), their sampled batches against that model's cache and logits
    (``check_sampling``): a batch too large used to fail only after pretraining."""
    try:
        tok = load_tokenizer(cfg.init)
    except (ValueError, OSError):  # a bad --init: the stage itself says so, naming it
        tok = None
    check_problems(stage, cfg, task, tok, draw=stage in ("zero", "r1"))
    d = cfg.data
    if stage == "curate" or stage in ("zero", "r1") and d.signal_problems or stage == "rl" and (d.signal_check or d.prompts == "pass_rate"):
        # pass-rate estimates sample data.samples completions of each prompt in one call at least
        check_sampling(d.samples, cfg.rl.sample.max_new_tokens, "data.samples")
    if stage in ("zero", "r1") and not cfg.init:
        vocab = CharTokenizer.build().vocab_size
        r, rc = cfg.rl, cfg.rejection
        check_sampling(r.prompts_per_step * r.group_size, r.sample.max_new_tokens, "rl.prompts_per_step x rl.group_size", model_cfg=cfg.model, vocab_size=vocab)
        if stage == "r1":
            check_sampling(min(rc.prompts_per_batch, rc.n_prompts) * rc.samples_per_prompt, rc.sample.max_new_tokens,
                           "rejection.prompts_per_batch x rejection.samples_per_prompt (or rejection.sample.max_new_tokens)", model_cfg=cfg.model, vocab_size=vocab)


def model_state(model: Transformer) -> dict:
    """What a checkpoint must hold to rebuild the model without the run's config."""
    state = {"model_config": dataclasses.asdict(model.cfg), "vocab_size": model.vocab_size}
    adapters = lora.settings(model)
    return {**state, "lora": adapters} if adapters else state  # LoRA runs save base + adapters


def resolve_checkpoint(path: str | Path) -> checkpoint.Checkpoint:
    """A checkpoint folder, a run folder (its newest good checkpoint), or a `zero` run folder
    (its RL stage if it has one, else its pretraining stage)."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"init path {path} does not exist")
    if (path / checkpoint.MODEL_FILE).is_file() or (path / checkpoint.STATE_FILE).is_file():  # a step folder (sharded ones have no model file)
        return checkpoint.load(path)
    for candidate in (path, path / "rl", path / "pretrain"):
        if checkpoint.latest_step(candidate) is not None:
            ckpt = checkpoint.load_latest(candidate)
            if ckpt is not None:
                return ckpt
    raise StageError(f"init path {path} holds no checkpoint (looked for {checkpoint.MODEL_FILE} and checkpoints/step_N/)")


def load_tokenizer(init: str | Path) -> BaseTokenizer:
    """The tokenizer that goes with ``init``: a Hugging Face folder's (``hf:PATH``), else the
    ``tokenizer.json`` of the checkpoint folder, of its run folder, or of a `zero` run's root;
    the character tokenizer for a fresh model (empty ``init``) or a folder that has none."""
    init = str(init)
    if not init:
        return CharTokenizer.build()
    if init.startswith(HF_PREFIX):
        folder = Path(init[len(HF_PREFIX):])
        hf.read_config(folder)  # a wrong folder is reported by its config.json, not its tokenizer
        return tokenizer_lib.load(folder)
    path = Path(init)
    run = path.parent.parent if path.parent.name == checkpoint.checkpoints_dir(Path()).name else path
    for folder in (path, run, run.parent if run.name in ("pretrain", "rl") else run):
        if (folder / tokenizer_lib.TOKENIZER_FILE).is_file():
            return tokenizer_lib.load(folder)
    return CharTokenizer.build()


def check_vocab(tok: BaseTokenizer, vocab_size: int, where: object) -> None:
    """Every token id must have an embedding row. The character tokenizer must match exactly;
    an imported tokenizer may be smaller (Qwen2.5 pads its embedding to a multiple of 128)."""
    exact = isinstance(tok, CharTokenizer)
    if tok.vocab_size > vocab_size or (exact and tok.vocab_size != vocab_size):
        raise StageError(f"{where}: vocabulary size {vocab_size} of the embedding does not fit the tokenizer's {tok.vocab_size} tokens (tokenizer.json)")


def load_model(path: str | Path) -> tuple[Transformer, checkpoint.Checkpoint]:
    """The model of a run or checkpoint folder, or of a Hugging Face folder given as ``hf:PATH``,
    checked against its tokenizer (``load_tokenizer``)."""
    if str(path).startswith(HF_PREFIX):
        folder = str(path)[len(HF_PREFIX):]
        model, tok, _ = hf.load(folder)  # checks config.json first, then the tokenizer against it
        check_vocab(tok, model.vocab_size, Path(folder) / hf.CONFIG_FILE)
        # A step-0 pseudo-checkpoint naming the folder: the stages print and resume from ckpt.path.
        return model, checkpoint.Checkpoint(path=Path(folder), step=0, model_state={}, optimizer_state=None, state=model_state(model))
    ckpt = resolve_checkpoint(path)
    tok = load_tokenizer(path)
    state_file = ckpt.path / checkpoint.STATE_FILE
    try:
        saved = dict(ckpt.state["model_config"])
        vocab_size = int(ckpt.state["vocab_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise StageError(f"checkpoint {ckpt.path} has no usable model_config in state.json ({err})") from None
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise StageError(f"{state_file}: field model_config.{unknown[0]} is unknown to this r1lab (saved by a newer version?)")
    check_vocab(tok, vocab_size, f"checkpoint {ckpt.path}")
    model = Transformer(ModelConfig(**saved), vocab_size)
    adapters = ckpt.state.get("lora")
    if adapters:  # a LoRA run: rebuild its adapters, load, then fold them into the weights
        lora.apply(model, int(adapters["rank"]), float(adapters["alpha"]), list(adapters["targets"]))
    checkpoint.apply(model, ckpt)
    return (lora.merge(model) if adapters else model), ckpt


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; matrices decay, norms and vectors do not (as in nanoGPT and LLaMA)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio * peak`` at ``total`` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


EXPERT_LOAD_FILE = "expert_load.jsonl"


class ExpertLoadLog:
    """``<run>/expert_load.jsonl``: one line per optimizer step of an MoE model,
    ``{"step": N, "load_LE": [[fraction of the step's routed token-slots per expert] per MoE
    layer]}``. On resume, lines after ``resume_step`` are dropped (as ``tracking.Tracker`` does).
    A dense model (``load_LE`` None) writes nothing."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = Path(run_dir) / EXPERT_LOAD_FILE
        if resume_step is not None and self.path.exists():
            kept = [ln for ln, row in tracking._parse_lines(self.path.read_text(encoding="utf-8"), self.path) if row["step"] <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._file = None

    def log(self, step: int, load_LE: torch.Tensor | None) -> None:
        if load_LE is None:
            return
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        frac_LE = load_LE / load_LE.sum(dim=1, keepdim=True).clamp(min=1e-9)
        self._file.write(json.dumps({"step": int(step), "load_LE": [[round(float(v), 6) for v in row] for row in frac_LE]}) + "\n")
        self._file.flush()

    def __enter__(self) -> ExpertLoadLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


def expert_load_heatmap(run_dir: Path, stage: str, max_columns: int = 100) -> Path | None:
    """``<run>/expert_load.png``: rows are (MoE layer, expert), columns logged steps (averaged
    into at most ``max_columns`` bins), colour the expert's share of its layer's token-slots."""
    from r1lab.report import plots  # matplotlib costs an import only when a plot is drawn

    path = Path(run_dir) / EXPERT_LOAD_FILE
    if not path.exists():
        return None
    rows = [row for _, row in tracking._parse_lines(path.read_text(encoding="utf-8"), path)]
    if not rows:
        return None
    load_SLE = np.asarray([r["load_LE"] for r in rows], dtype=float)  # (steps, L, E)
    S, L, E = load_SLE.shape
    bins = np.array_split(np.arange(S), min(S, max_columns))
    matrix = np.stack([load_SLE[b].mean(0).reshape(L * E) for b in bins], axis=1)  # (L*E, bins)
    labels = [f"L{l} E{e}" for l in range(L) for e in range(E)] if L * E <= 64 else None
    return plots.heatmap(Path(run_dir) / "expert_load.png", matrix, title=f"{stage}: expert load over steps ({rows[0]['step']}-{rows[-1]['step']})",
                         xlabel=f"step bin ({-(-S // len(bins))} logged steps each)", ylabel="MoE layer, expert", colorbar="share of layer's token-slots", yticklabels=labels)


def print_stage_summary(run_dir: Path, stage: str, keys: list[str]) -> None:
    """The short table a stage ends with: first and last logged values of ``keys``, and the
    stage's wall time from its metrics file."""
    rows = tracking.read_metrics(run_dir / "metrics.jsonl")
    if not rows:
        return
    table = [{"": label, "step": row["step"], **{k: row[k] for k in keys if k in row}} for label, row in (("first", rows[0]), ("last", rows[-1]))]
    print(tracking.format_table(table, title=f"{stage}: {run_dir}, {rows[-1]['time'] - rows[0]['time']:.0f} s from first to last logged step"))
