"""``r1lab <stage>``: one entry point for every stage.

    r1lab zero                                  pretrain -> eval -> GRPO -> eval, embedded defaults
    r1lab r1                                    pretrain -> cold-start SFT -> GRPO -> rejection sampling -> SFT -> GRPO
    r1lab pretrain --out runs/base              pretrain from scratch
    r1lab rl --init runs/base --rl.group_size 16
    r1lab eval --init runs/rl --eval.n_samples 16 --eval.ks "[1, 16]"
    r1lab sft --init runs/base --sft.data jsonl:cold_start.jsonl
    r1lab rejection-sample --init runs/rl --out traces.jsonl --rejection.samples_per_prompt 8
    r1lab distill --distill.teacher runs/rl --model.ffn dense --distill.mode token
    r1lab sample "7+5*2-3" --init runs/rl
    r1lab check-task countdown                  leak check of a task's splits, corpus and RL prompts
    r1lab report runs/zero-x                    (re)write report.html of a run or experiment folder
    r1lab label --from runs/zero-x --out labels.jsonl   label reasoning steps in the browser
    r1lab prm label --init runs/base --out steps.jsonl  Math-Shepherd step labels (then prm train, prm eval)
    r1lab curate --init runs/base --task gym:gcd --out gcd.jsonl   keep prompts the model sometimes solves

Configuration: defaults < ``--config FILE.yaml`` < dotted overrides. Bad input (config, dataset,
checkpoint, task name, an unwritable path or a full disk) ends in one line on stderr and exit code 2
(``--debug`` shows the traceback instead).

Exit codes: 0 done; 2 bad input or a failed checkpoint write; 3 stopped after ``max_bad_steps``
consecutive non-finite steps; 130 (Ctrl-C) or 143 (SIGTERM) stopped gracefully after a step and a
checkpoint; continue a stopped run with ``--resume``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys

from r1lab import config as config_lib
from r1lab import distributed
from r1lab.checkpoint import CheckpointError
from r1lab.config import ConfigError
from r1lab.recipes.common import RunStopped, StageError

# stage -> (module with main(cfg), one-line description, config sections it reads)
STAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "zero": ("r1lab.recipes.zero", "the R1-Zero recipe end to end: pretrain, eval, GRPO, eval, summary", ("model", "pretrain", "rl", "eval", "data")),
    "r1": ("r1lab.recipes.r1", "the DeepSeek-R1 pipeline: pretrain, cold-start SFT, GRPO, rejection sampling, SFT, GRPO, eval after each", ("model", "pretrain", "sft", "rl", "rejection", "r1", "eval", "data")),
    "pretrain": ("r1lab.recipes.pretrain", "pretrain a model from scratch on a task's corpus", ("model", "pretrain", "dist")),
    "rl": ("r1lab.recipes.rl", "GRPO with verifiable rewards from --init", ("rl", "eval", "lora", "data", "dist")),
    "eval": ("r1lab.recipes.eval", "pass@k / maj@k of --init on a task split", ("eval", "dist")),
    "sample": ("r1lab.recipes.sample", "print completions of --init for questions given as arguments", ("generate",)),
    "check-task": ("r1lab.recipes.check_task", "leak check: test problems with a twin in training, the corpus or RL prompts (exit 1 if any)", ("check", "model", "pretrain", "rl", "eval")),
    "report": ("r1lab.recipes.report", "write report.html into a run or experiment folder given as argument", ()),
    "label": ("r1lab.recipes.label", "serve a web page to label the steps of traces (--from RUN_OR_JSONL --out labels.jsonl)", ("label",)),
    "export": ("r1lab.recipes.export", "r1lab export RUN_OR_CHECKPOINT OUT_DIR: write a Hugging Face folder (Llama/Qwen2/DeepseekV3)", ("export",)),
    "curate": ("r1lab.recipes.curate", "r1lab curate --init RUN --task T --out data.jsonl: keep train prompts whose pass rate under RUN is in a band (for jsonl:)", ("data", "rl")),
    "janus": ("r1lab.recipes.janus", "Janus in miniature: VQ tokenizer + one transformer that understands and draws images, staged training, eval", ("model", "janus", "eval")),
    "import": ("r1lab.recipes.import_hf", "r1lab import HF_DIR OUT_DIR: convert a local Hugging Face folder into an r1lab run folder", ()),
    "sft": ("r1lab.recipes.sft", "supervised fine-tuning of --init (or a fresh model) on prompt/completion records (--sft.data)", ("model", "sft")),
    "rejection-sample": ("r1lab.recipes.rejection_sample", "sample --init n times per train prompt, keep verified well-formed answers: an SFT jsonl at --out (+ .stats.json)", ("rejection",)),
    "distill": ("r1lab.recipes.distill", "distil --distill.teacher into --init (or a fresh model): SFT on its verified samples, or token-level KL", ("model", "sft", "rejection", "distill")),
    "prm": ("r1lab.recipes.prm", "r1lab prm label|train|eval: Math-Shepherd step labels, a process/outcome reward model, its accuracy against exact labels", ("prm", "model")),
}
# Stages whose leading positional arguments stand for keys: `r1lab export SRC DST` = `--init SRC --out DST`.
POSITIONAL: dict[str, tuple[str, ...]] = {"export": ("init", "out"), "import": ("init", "out")}
# Stages that start from a model given as --init (or, for r1, may); the others train from scratch or
# read other inputs, and refuse --init rather than ignore it.
READS_INIT = ("rl", "eval", "sample", "curate", "sft", "rejection-sample", "distill", "prm", "export", "import", "r1")
COMMON_KEYS = ("task", "out", "init", "seed", "threads", "resume", "save_every", "keep_checkpoints", "max_bad_steps", "tensorboard", "device")


def usage() -> str:
    lines = ["usage: r1lab <stage> [--config FILE] [--section.key VALUE ...] [--debug] [--help]", "", "stages:"]
    lines += [f"  {name:<9} {desc}" for name, (_, desc, _) in STAGES.items()]
    lines += ["", "r1lab <stage> --help lists every key the stage reads, with its default and meaning."]
    return "\n".join(lines)


def stage_help(stage: str) -> str:
    _, desc, sections = STAGES[stage]
    rows = [r for r in config_lib.describe() if r[0] in COMMON_KEYS or r[0].split(".")[0] in sections]
    width = max(len(k) for k, _, _ in rows)
    out = [f"usage: r1lab {stage} [--config FILE] [--section.key VALUE ...] [--debug]", "", desc, "", "options (key, default, meaning):"]
    if stage in distributed.STAGES:
        out[0] += " [--nproc N]"
        out.insert(3, "--nproc N launches torchrun with N processes on this machine (docs/distributed.md)")
    for key, default, doc in rows:
        out.append(f"  --{key:<{width}}  {default:<14} {doc}")
    return "\n".join(out)


def parse(argv: list[str]) -> tuple[str, config_lib.Config, bool]:
    """(stage, validated config, debug) from the command line."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0)
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if "-h" in rest or "--help" in rest:
        print(stage_help(stage))
        raise SystemExit(0)
    debug = "--debug" in rest
    rest = [a for a in rest if a != "--debug"]
    layers = []
    if "--config" in rest:
        i = rest.index("--config")
        if i + 1 >= len(rest):
            raise ConfigError("--config needs a file path")
        layers.append(config_lib.load_yaml(rest[i + 1]))
        rest = rest[:i] + rest[i + 2 :]
    # `r1lab sample Q1 Q2 --init X`: leading positional arguments are questions.
    questions = []
    while rest and not rest[0].startswith("--") and stage == "sample":
        questions.append(rest.pop(0))
    # `r1lab check-task TASK`: the task may be given as the first argument.
    task_arg = rest.pop(0) if stage == "check-task" and rest and not rest[0].startswith("--") else None
    # `r1lab report FOLDER`: the folder is the one the report is written into.
    if stage == "report" and rest and not rest[0].startswith("--"):
        if "--out" in rest:
            raise ConfigError("report takes its folder either as an argument or as --out, not both")
        rest = ["--out", rest[0], *rest[1:]]
    if stage == "label":
        rest = label_flags(rest)
    # `r1lab prm ACTION ...`: the first word is the action (prm.action).
    prm_action = None
    if stage == "prm":
        if not rest or rest[0] not in PRM_ACTIONS:
            raise ConfigError(f"r1lab prm needs an action first: {' | '.join(PRM_ACTIONS)} (r1lab prm label --init RUN --out labels.jsonl)")
        prm_action = rest.pop(0)
    positional = []
    while rest and not rest[0].startswith("--") and stage in POSITIONAL:
        positional.append(rest.pop(0))
    if len(positional) > len(POSITIONAL.get(stage, ())):
        raise ConfigError(f"r1lab {stage} takes at most {len(POSITIONAL[stage])} arguments ({' '.join(k.upper() for k in POSITIONAL[stage])}), got {len(positional)}")
    overrides = config_lib.parse_overrides(rest)
    overrides.update(zip(POSITIONAL.get(stage, ()), positional))
    if task_arg is not None:
        overrides["task"] = task_arg
    if questions:
        overrides.setdefault("generate", {})["questions"] = questions
    if prm_action is not None:
        if isinstance(overrides.get("prm"), dict) and "action" in overrides["prm"]:  # was: silently replaced by the first word
            raise ConfigError(f"--prm.action: the action is the first word (r1lab prm {prm_action} ...), not a flag")
        overrides.setdefault("prm", {})["action"] = prm_action
    return stage, config_lib.build(*layers, overrides), debug


PRM_ACTIONS = ("label", "train", "eval")
"`r1lab prm ACTION`: the actions, in the order a user runs them"


# `r1lab label` short flags -> their config keys; --agreement takes two files.
LABEL_FLAGS = {"--from": "--label.source", "--port": "--label.port", "--host": "--label.host", "--token": "--label.token"}


def label_flags(rest: list[str]) -> list[str]:
    out = []
    while rest:
        arg = rest.pop(0)
        if arg == "--agreement":
            if len(rest) < 2 or any(a.startswith("--") for a in rest[:2]):
                raise ConfigError("--agreement needs two label files: --agreement A.jsonl B.jsonl")
            out += ["--label.agreement", json.dumps(rest[:2])]
            rest = rest[2:]
        else:
            out.append(LABEL_FLAGS.get(arg, arg))
    return out


def seq_len_given(argv: list[str]) -> bool:
    """Whether the user set model.max_seq_len: a flag, or a key of the ``--config`` YAML file."""
    for i, arg in enumerate(argv):
        if arg.startswith("--") and arg[2:].partition("=")[0].replace("-", "_") == "model.max_seq_len":
            return True
        if arg == "--config" and i + 1 < len(argv):
            model = config_lib.load_yaml(argv[i + 1]).get("model")
            if isinstance(model, dict) and "max_seq_len" in model:
                return True
    return False


def size_context(cfg: config_lib.Config, task) -> None:
    """A fresh model's context sized from the task (recipes/context.py), said when it grows."""
    from r1lab.recipes import common, context

    n, m = context.size(cfg, task, common.load_tokenizer(cfg.init))
    if n != cfg.model.max_seq_len:
        print(f"r1lab: model.max_seq_len {n}, sized from {task.name} (longest prompt {m.prompt} tokens + budget "
              f"{context.budget(cfg)[0]}, longest document {m.document}); set --model.max_seq_len to choose it")
    cfg.model.max_seq_len = n


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        return _run(argv, debug)
    except BrokenPipeError:
        # `r1lab rl --help | head`: the reader left. Point stdout at /dev/null so that Python's
        # final flush does not raise again, and exit quietly as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def nproc_flag(argv: list[str]) -> tuple[int, list[str]]:
    """(N of ``--nproc N``, or 0 when absent; ``argv`` without it)."""
    if "--nproc" not in argv:
        return 0, argv
    i = argv.index("--nproc")
    value = argv[i + 1] if i + 1 < len(argv) else ""
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"--nproc needs a positive number of processes, got {value!r}")
    return int(value), argv[:i] + argv[i + 2 :]


def _run(argv: list[str], debug: bool) -> int:
    try:
        nproc, argv = nproc_flag(argv)
        stage, cfg, debug = parse(argv)
        if cfg.init and stage not in READS_INIT:
            raise ConfigError(f"r1lab {stage} does not read --init (it starts from scratch); the stages that start from a model: {', '.join(READS_INIT)}")
        from r1lab.tasks import get_task

        task = get_task(cfg.task, seed=cfg.seed)  # fail on an unknown task before any work
        if "model" in STAGES[stage][2] and not seq_len_given(argv):
            size_context(cfg, task)
        from r1lab.recipes import common

        common.preflight(stage, cfg, task)  # problem counts and sampled batches the task and memory cannot give, before any work
        if nproc > 1 and not distributed.launched():
            if stage not in distributed.STAGES:
                raise ConfigError(f"--nproc: r1lab {stage} runs in one process; only {', '.join(distributed.STAGES)} run under torchrun")
            distributed.launch(nproc, argv)  # does not return: this process becomes torchrun
        with distributed.session(stage, cfg):
            importlib.import_module(STAGES[stage][0]).main(cfg)
    except BrokenPipeError:  # stdout's reader left: not the user's input, handled in main()
        raise
    except RunStopped as err:  # a graceful stop (signal, non-finite steps): checkpoints intact
        print(f"r1lab: {err}", file=sys.stderr)
        return err.exit_code
    except (ConfigError, StageError, CheckpointError, ValueError, OSError) as err:
        # OSError: a path the user gave that cannot be read or written (missing, a folder, no
        # permission, a full disk); its message names the path.
        if debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"r1lab: error: {message}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:
        # An allocation the machine cannot grant, from a size the user chose (a batch, a sample
        # count, a model that passed the size check): one line with the figure, not a traceback.
        if debug or not out_of_memory(err):
            raise
        print(f"r1lab: error: out of memory: {out_of_memory(err)}; lower the batch, sample counts or model size (--debug shows where)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("r1lab: interrupted", file=sys.stderr)
        return 130
    return 0


def out_of_memory(err: BaseException) -> str:
    """What an allocator error says it tried to allocate ("" when ``err`` is no allocation failure):
    Python's MemoryError, torch's CPU allocator (a RuntimeError) or torch.OutOfMemoryError (CUDA)."""
    import torch

    text = str(err)
    cpu = re.search(r"you tried to allocate (\d+) bytes", text)
    if cpu:
        return f"tried to allocate {int(cpu.group(1)) / 2**30:,.1f} GiB"
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return text.strip().splitlines()[0] if text.strip() else "the allocation failed"
    return ""


if __name__ == "__main__":
    sys.exit(main())
