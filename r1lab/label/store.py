"""The label file: an append-only JSONL log, durable per label, safe under concurrent writers.

Format (the process-reward stage trains on it): one JSON object a line,

    {"id", "task", "question", "gold", "steps": [...], "labels": ["good" | "bad" | "unsure" | null, ...]}

Every label given appends the trace's whole record with its labels so far, then flushes and
fsyncs before the page hears "saved": a kill -9 a moment later loses nothing. The last record of
an id wins, so the log is also a valid dataset; opening the store compacts it to one record per
trace (atomically: temporary file, fsync, rename). Writers take an exclusive ``flock`` on
``<file>.lock`` and first read what other writers appended since their last look, so two tabs,
or two servers, on one file never interleave half lines or lose each other's labels.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from r1lab.checkpoint import fsync_path
from r1lab.label.traces import Trace, TraceError

LABELS = ("good", "bad", "unsure")


def read_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """Last record of each id in a label file; a cut last line (a writer killed mid-line) is
    ignored; any other damage is a TraceError naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not UTF-8 text") from None
    records: dict[str, dict[str, Any]] = {}
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break
            raise TraceError(f"{path}:{i + 1}: not a JSON line") from None
        _validate(rec, f"{path}:{i + 1}")
        records[rec["id"]] = rec
    return records


def _validate(rec: Any, where: str) -> None:
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
        raise TraceError(f"{where}: a label record needs a string \"id\"")
    steps, labels = rec.get("steps"), rec.get("labels")
    if not isinstance(steps, list) or not isinstance(labels, list) or len(steps) != len(labels):
        raise TraceError(f"{where}: \"steps\" and \"labels\" must be lists of equal length")
    bad = [x for x in labels if x is not None and x not in LABELS]
    if bad:
        raise TraceError(f"{where}: unknown label {bad[0]!r}; labels are {', '.join(LABELS)} or null")


class LabelStore:
    """Labels of ``traces`` kept in ``path``. Thread-safe; process-safe through the lock file."""

    def __init__(self, path: str | Path, traces: list[Trace]):
        self.path = Path(path)
        self.traces = traces
        self.index = {t.id: i for i, t in enumerate(traces)}
        self._thread_lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._offset, self._inode = 0, None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        with self._locked():
            self._compact()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _compact(self) -> None:
        """Read the whole file and rewrite it with one record per id (traces of this session
        whose steps changed keep their old record under its id: nothing is dropped)."""
        self._records = read_records(self.path) if self.path.exists() else {}
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._records.values())
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_path(self.path.parent)
        st = os.stat(self.path)
        self._offset, self._inode = st.st_size, st.st_ino

    def _catch_up(self) -> None:
        """Apply what other writers appended since our last look (or reload a replaced file)."""
        st = os.stat(self.path)
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._records = read_records(self.path)
        elif st.st_size > self._offset:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read().decode("utf-8")
            for line in chunk.split("\n"):
                if line.strip():
                    try:
                        rec = json.loads(line)
                    except ValueError:  # another writer killed mid-line: its label was never confirmed
                        continue
                    _validate(rec, str(self.path))
                    self._records[rec["id"]] = rec
        self._offset, self._inode = st.st_size, st.st_ino

    def labels(self, trace: Trace) -> list[str | None]:
        rec = self._records.get(trace.id)
        if rec is None or rec["steps"] != trace.steps:
            return [None] * len(trace.steps)
        return list(rec["labels"])

    def refresh(self) -> None:
        with self._locked():
            self._catch_up()

    def set(self, trace_id: str, step: int, label: str) -> list[str | None]:
        """Record ``label`` for step ``step`` of trace ``trace_id``, durably; return its labels."""
        if trace_id not in self.index:
            raise KeyError(f"unknown trace id {trace_id!r}")
        trace = self.traces[self.index[trace_id]]
        if not 0 <= step < len(trace.steps):
            raise IndexError(f"trace {trace_id} has {len(trace.steps)} steps; no step {step}")
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}; labels are {', '.join(LABELS)}")
        with self._locked():
            self._catch_up()
            labels = self.labels(trace)
            labels[step] = label
            rec = {"id": trace.id, "task": trace.task, "question": trace.question, "gold": trace.gold,
                   "steps": trace.steps, "labels": labels}
            line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
            # O_APPEND: the kernel puts each write at the end, whoever else holds the file open.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            self._records[trace.id] = rec
            self._offset += len(line)
        return labels

    def done(self, trace: Trace) -> bool:
        return all(x is not None for x in self.labels(trace))

    def first_unlabelled(self, after: int = -1) -> int | None:
        """Index of the first trace not fully labelled after ``after`` (wrapping round), or None."""
        n = len(self.traces)
        for k in range(1, n + 1):
            i = (after + k) % n
            if not self.done(self.traces[i]):
                return i
        return None

    def progress(self) -> tuple[int, int]:
        """(fully labelled traces, traces)."""
        return sum(self.done(t) for t in self.traces), len(self.traces)
