"""The judge's side of the sandbox: a pool of pre-forked workers and the batch API.

``Sandbox(workers=n)`` starts ``n`` worker processes (``worker.py``), each one slot: its own
namespaces and, as root, its own uid. ``run_many`` spreads a batch of programs over the slots
from one thread with ``selectors`` (no threads to leak, nothing to join at exit), and enforces a
backstop deadline on each worker in case a worker itself stops answering: the worker is then
killed and replaced.

What crosses back is an ``Execution``: exit status, flags and two capped byte strings. Turning it
into a verdict is ``judge.py``'s job; nothing here interprets what the program printed.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import logging
import os
import pwd
import selectors
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field

from r1lab.sandbox import values
from r1lab.sandbox.layers import Layers, Limits

log = logging.getLogger("r1lab.sandbox")

WORKER_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
# Layers that a mode lacks by design (reported, but not a degradation of that mode).
BY_DESIGN = {"root": set(), "user": {"uid per slot"}}
WORKER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
STARTUP_TIMEOUT_S = 30.0
BACKSTOP_S = 10.0  # a worker that has not answered this long after a run's own timeout is replaced


@dataclass(frozen=True)
class Program:
    """What a slot runs. With ``entry_point`` set ("calls" mode) the program is loaded and the
    function is called once per item of ``inputs`` (each a list of positional arguments), one
    result record per call; otherwise ("script" mode) it runs as ``__main__`` on ``stdin`` and its
    stdout is the result."""

    code: str
    entry_point: str = ""
    inputs: tuple = ()
    stdin: bytes = b""
    limits: Limits = field(default_factory=Limits)

    def request(self) -> dict:
        return {
            "mode": "calls" if self.entry_point else "script",
            "code": self.code,
            "entry_point": self.entry_point,
            "inputs": values.encode([list(args) for args in self.inputs]),
            "stdin": base64.b64encode(self.stdin).decode("ascii") if self.stdin else "",
            "limits": self.limits.to_json(),
        }


@dataclass(frozen=True)
class Execution:
    """The raw outcome of one run, as the worker saw it."""

    exit_code: int | None
    """The child's exit status; None when it was killed by a signal (or never reported)."""
    signal: int | None
    timed_out: bool
    over_cap: str | None
    """"output" or "results" when the child wrote past a cap (it was killed then)."""
    setup_ok: bool
    """False when the sandbox could not be set up: none of the program ran."""
    output: bytes
    """stdout+stderr in calls mode, stderr in script mode (capped, for diagnostics)."""
    results: bytes
    """The result records in calls mode, stdout in script mode (capped)."""
    wall_ms: float
    error: str = ""
    """An infrastructure failure (the worker died or stopped answering)."""
    oom: bool = False
    """The slot's cgroup killed the run for using more than ``memory_mb``."""


def _worker_failure(error: str, wall_ms: float, timed_out: bool = False) -> Execution:
    return Execution(None, None, timed_out, None, False, b"", b"", wall_ms, error)


def hidden_paths() -> list[str]:
    """Directories the child must not see even without Landlock: this project (its tasks hold
    reference solutions), the judge's site-packages and home directory."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    found = {repo, os.path.expanduser("~")}
    for base in (sys.prefix, sys.base_prefix):  # the virtual environment's and the interpreter's own
        paths = sysconfig.get_paths(vars={"base": base, "platbase": base})
        found |= {paths["purelib"], paths["platlib"]}
    return sorted(found)


_RUNTIME_FILES: dict[str, list[str]] = {}  # interpreter -> shared libraries its workers bind
_uid_counter = 0
_uid_lock = threading.Lock()


def _pick_uid() -> int:
    """A uid no account uses, inside this user namespace's uid map, distinct for every slot this
    process creates (the pid spreads concurrent r1lab processes apart)."""
    global _uid_counter
    with _uid_lock:
        _uid_counter += 1
        serial = (os.getpid() * 64 + _uid_counter) % 4_000_000
    mapped = []
    with open("/proc/self/uid_map") as f:
        for line in f:
            inside, _outside, count = map(int, line.split())
            mapped.append((inside, inside + count))
    for base, span in ((1_900_000_000, 4_000_000), (61_000, 3_900), (100_000, 60_000)):
        uid = base + serial % span
        if any(lo <= uid < hi for lo, hi in mapped):
            try:
                pwd.getpwuid(uid)
            except KeyError:
                return uid
    raise RuntimeError("no free uid in this user namespace's uid map for a sandbox slot")


class _Slot:
    """One worker process and the parsing state of its current response."""

    def __init__(self, mode: str, python: str, disable: frozenset[str]):
        self.mode = mode
        # As root, in either mode, a slot gets a uid of its own (user mode maps it into the
        # namespace): the child never runs as uid 0, which RLIMIT_NPROC does not bind.
        self.uid = _pick_uid() if os.geteuid() == 0 else os.getuid()
        self.gid = self.uid if os.geteuid() == 0 else os.getgid()
        # Only used where the worker cannot mount its own tmpfs (no user namespace).
        self.fallback_scratch = tempfile.mkdtemp(prefix="r1lab-sbx-")
        if mode == "root":
            os.chown(self.fallback_scratch, self.uid, self.gid)
        config = {
            "mode": mode, "uid": self.uid, "gid": self.gid, "fallback_scratch": self.fallback_scratch,
            "disable": sorted(disable), "hide": hidden_paths(), "runtime_files": _RUNTIME_FILES.get(python, []),
            "cgroup": os.environ.get("R1LAB_SANDBOX_CGROUP", ""),
        }
        self.cgroup_dirs: list[str] = []
        self.python = python
        self.proc = subprocess.Popen(
            [python, "-S", "-s", "-B", WORKER_PY, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=WORKER_ENV, cwd="/",
            close_fds=True, start_new_session=True,  # a terminal's ^C is for the judge, not the workers
        )
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buffer = bytearray()
        self.job: tuple[int, float, float] | None = None  # (index, start, backstop deadline)

    def send(self, request: dict) -> None:
        body = json.dumps(request).encode()
        self.proc.stdin.write(struct.pack(">I", len(body)) + body)
        self.proc.stdin.flush()

    def feed(self) -> bool:
        """Read what is available; False on end of file (the worker is gone)."""
        try:
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
        except BlockingIOError:
            return True
        self.buffer += chunk
        return bool(chunk)

    def message(self) -> tuple[dict, list[bytes]] | None:
        """A complete message from the buffer, or None if more bytes are needed."""
        if len(self.buffer) < 4:
            return None
        (n,) = struct.unpack(">I", self.buffer[:4])
        if len(self.buffer) < 4 + n:
            return None
        header = json.loads(self.buffer[4 : 4 + n])
        end = 4 + n + sum(header["blobs"])
        if len(self.buffer) < end:
            return None
        blobs, at = [], 4 + n
        for size in header["blobs"]:
            blobs.append(bytes(self.buffer[at : at + size]))
            at += size
        del self.buffer[:end]
        return header, blobs

    def wait_ready(self) -> Layers:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while (msg := self.message()) is None:
                if time.monotonic() > deadline or (sel.select(deadline - time.monotonic()) and not self.feed()):
                    self.kill()
                    raise RuntimeError(f"sandbox worker failed to start (exit {self.proc.returncode}); see its stderr above")
        _RUNTIME_FILES.setdefault(self.python, msg[0].get("runtime_files", []))  # ldd runs once per interpreter
        self.cgroup_dirs = msg[0].get("cgroup_dirs", [])
        return Layers(**msg[0]["layers"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the worker leads its own session
        self.proc.wait()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a dead worker leaves a broken pipe
            self.proc.stdin.close()  # the worker exits on end of file
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc.stdout.close()
        for path in self.cgroup_dirs:  # empty now that the worker and its runs are gone
            with contextlib.suppress(OSError):
                os.rmdir(path)
        # rm is iterative: a deep chain left by a program (degraded mode only) cannot break it
        subprocess.run(["rm", "-rf", "--one-file-system", "--", self.fallback_scratch], env=WORKER_ENV,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Sandbox:
    """A pool of sandbox slots. ``mode`` is "root" (a uid per slot; needs root) or "user" (an
    unprivileged user namespace); by default root when running as root. ``disable`` turns layers
    off ("landlock", "seccomp", "pid namespace", "ipc namespace", "user namespace", "minimal root",
    "cgroups") to test the others or measure their cost."""

    def __init__(self, workers: int | None = None, mode: str | None = None, python: str = sys.executable, disable: frozenset[str] = frozenset()):
        self.mode = mode or ("root" if os.geteuid() == 0 else "user")
        if self.mode == "root" and os.geteuid() != 0:
            raise PermissionError("sandbox mode 'root' needs root; use mode='user'")
        self.python, self.disable = python, frozenset(disable)
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        try:
            for _ in range(workers or os.cpu_count() or 1):
                self._slots.append(_Slot(self.mode, python, self.disable))
            reports = [slot.wait_ready() for slot in self._slots]
        except BaseException:
            self.close()
            raise
        self.layers = reports[0]
        self._report()
        atexit.register(self.close)

    def _report(self) -> None:
        degraded = {k: v for k, v in self.layers.missing.items() if k not in BY_DESIGN[self.mode]}
        if degraded:
            warnings.warn("r1lab sandbox is DEGRADED: " + self.layers.summary(), RuntimeWarning, stacklevel=3)
        log.info(self.layers.summary())

    @property
    def workers(self) -> int:
        return len(self._slots)

    def run(self, program: Program) -> Execution:
        return self.run_many([program])[0]

    def run_many(self, programs: list[Program]) -> list[Execution]:
        """Run a batch over all slots; results come back in the order of ``programs``."""
        with self._lock:
            if not self._slots:
                raise RuntimeError("the sandbox is closed")
            return self._run_many(programs)

    def _run_many(self, programs: list[Program]) -> list[Execution]:
        results: list[Execution | None] = [None] * len(programs)
        todo = list(range(len(programs)))[::-1]
        with selectors.DefaultSelector() as sel:
            for slot in self._slots:
                sel.register(slot.proc.stdout, selectors.EVENT_READ, slot)
            while todo or any(s.job for s in self._slots):
                for i, slot in enumerate(self._slots):
                    if slot.job is None and todo:
                        index = todo.pop()
                        now = time.monotonic()
                        slot.job = (index, now, now + programs[index].limits.timeout_s + BACKSTOP_S)
                        try:
                            slot.send(programs[index].request())
                        except (BrokenPipeError, OSError):
                            results[index] = _worker_failure("sandbox worker died", 0.0)
                            self._replace(sel, i)
                busy = [s for s in self._slots if s.job]
                if not busy:
                    continue
                wait = max(0.0, min(s.job[2] for s in busy) - time.monotonic())
                for key, _ in sel.select(wait):
                    slot = key.data
                    alive = slot.feed()
                    if slot.job and (msg := slot.message()) is not None:
                        header, (output, res) = msg
                        results[slot.job[0]] = Execution(
                            header["exit_code"], header["signal"], header["timed_out"], header["over_cap"],
                            header["setup_ok"], output, res, header["wall_ms"], oom=header.get("oom", False),
                        )
                        slot.job = None
                    elif not alive:
                        index, start = slot.job[:2] if slot.job else (None, 0.0)
                        if index is not None:
                            results[index] = _worker_failure("sandbox worker died", (time.monotonic() - start) * 1000)
                        self._replace(sel, self._slots.index(slot))
                now = time.monotonic()
                for i, slot in enumerate(self._slots):
                    if slot.job and now > slot.job[2]:
                        results[slot.job[0]] = _worker_failure("sandbox worker stopped answering", (now - slot.job[1]) * 1000, True)
                        self._replace(sel, i)
        return results  # type: ignore[return-value]

    def _replace(self, sel: selectors.BaseSelector, i: int) -> None:
        old = self._slots[i]
        sel.unregister(old.proc.stdout)
        old.kill()
        old.close()
        new = _Slot(self.mode, self.python, self.disable)
        new.wait_ready()
        self._slots[i] = new
        sel.register(new.proc.stdout, selectors.EVENT_READ, new)

    def close(self) -> None:
        """Stop every worker (idempotent). Their namespaces, tmpfs and children go with them."""
        slots, self._slots = self._slots, []
        for slot in slots:
            slot.close()
        atexit.unregister(self.close)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default: Sandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> Sandbox:
    """The process-wide pool (one slot per core), created on first use, closed at exit."""
    global _default
    with _default_lock:
        if _default is None or not _default._slots:
            _default = Sandbox()
        return _default
