"""Traces to label: where they come from and how a completion is cut into steps.

A step is one non-empty line of the ``<think>`` text, the unit that process-reward work labels
(Lightman et al. 2023, "Let's Verify Step by Step", arXiv:2305.20050, labels solution lines too).
Traces come from a run folder (the samples that ``r1lab eval`` / ``r1lab zero`` wrote to
``eval/*.samples.jsonl``, drawn with a seed) or from a JSONL file of traces, one object a line:
``{"question", "completion" | "steps"[, "gold" | "answer", "task", "id"]}``; a label file is
such a file too, so a second annotator can label the traces a first one did (its labels unseen).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from r1lab.prm import steps as prm_steps
from r1lab.rewards import extract_answer
from r1lab.tasks import Example, get_task


class TraceError(ValueError):
    """A trace source that cannot be read; the message names the file (and line)."""


@dataclass(frozen=True)
class Trace:
    id: str
    task: str
    question: str
    gold: str
    steps: list[str]
    answer: str | None = None  # the model's extracted answer, shown for context

    def checks(self) -> list[bool | None] | None:
        """The task's exact step check, or None when the task has none (or is not known here)."""
        if not self.task:
            return None
        try:
            task = get_task(self.task)
        except (ValueError, OSError):  # a jsonl:<path> task whose file is elsewhere, an unknown name
            return None
        return task.step_checks(Example(self.question, self.gold), list(self.steps))


def split_steps(completion: str) -> list[str]:
    """The non-empty lines of the ``<think>`` block (of the whole text before ``<answer>`` when
    there is no think block), stripped: ``r1lab.prm.split_steps`` with lines as steps."""
    return prm_steps.split_steps(completion)


def trace_id(task: str, question: str, steps: list[str]) -> str:
    return hashlib.sha1(json.dumps([task, question, steps]).encode("utf-8")).hexdigest()[:12]


def _from_row(row: object, where: str) -> Trace:
    if not isinstance(row, dict):
        raise TraceError(f"{where}: expected a JSON object, got {type(row).__name__}")
    question = row.get("question")
    if not isinstance(question, str) or not question:
        raise TraceError(f"{where}: needs a non-empty string \"question\"")
    if "steps" in row:
        steps = row["steps"]
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise TraceError(f"{where}: \"steps\" must be a list of strings")
        answer = None
    elif isinstance(row.get("completion"), str):
        steps = split_steps(row["completion"])
        answer = extract_answer(row["completion"])
    else:
        raise TraceError(f"{where}: needs \"completion\" (a string) or \"steps\" (a list of strings)")
    # "gold" is the reference; without it "answer" is (the jsonl task's own rows), and a
    # completion's extracted answer is the model's.
    gold = row["gold"] if "gold" in row else row.get("answer", "")
    task = row.get("task", "")
    if not isinstance(gold, str) or not isinstance(task, str):
        raise TraceError(f"{where}: \"gold\" and \"task\" must be strings")
    tid = row.get("id") or trace_id(task, question, steps)
    if not isinstance(tid, str):
        raise TraceError(f"{where}: \"id\" must be a string")
    return Trace(tid, task, question, gold, list(steps), answer)


def read_jsonl(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed object) of every non-blank line; TraceError on a bad line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not UTF-8 text") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((i, json.loads(line)))
            except ValueError as err:
                raise TraceError(f"{path}:{i}: not a JSON line ({err.msg})") from None
    return out


def load(source: str | Path, n: int, seed: int) -> list[Trace]:
    """Traces from a run folder (``n`` drawn with ``seed`` from its evaluation samples, traces
    with at least one step) or every trace of a JSONL file, in file order, duplicates dropped."""
    source = Path(source)
    if source.is_dir():
        files = sorted((source / "eval").glob("*.samples.jsonl"))
        if not files:
            raise TraceError(f"{source}: no eval/*.samples.jsonl (run `r1lab eval --init {source}` first, or pass a JSONL of traces)")
        pool = []
        for f in files:
            pool += [_from_row(row, f"{f}:{i}") for i, row in read_jsonl(f)]
        pool = [t for t in dict((t.id, t) for t in pool).values() if t.steps]
        if not pool:
            raise TraceError(f"{source}: its evaluation samples hold no reasoning steps to label")
        picked = sorted(random.Random(seed).sample(range(len(pool)), min(n, len(pool))))
        return [pool[i] for i in picked]
    if not source.is_file():
        raise TraceError(f"{source}: no such file or folder")
    traces = [_from_row(row, f"{source}:{i}") for i, row in read_jsonl(source)]
    traces = list(dict((t.id, t) for t in traces).values())
    if not traces:
        raise TraceError(f"{source}: holds no traces")
    return traces
