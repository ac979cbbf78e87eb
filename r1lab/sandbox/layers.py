"""Linux isolation primitives through ctypes: namespaces, mounts, prctl, capabilities, Landlock,
seccomp, rlimits.

Python 3.11 has no ``os.unshare``, and Landlock/seccomp have no standard-library binding, so the
few system calls are made through libc. Each function either does its job or raises OSError; the
worker decides which layers are required and reports the rest (``Layers``). Follows the kernel
documentation (Documentation/userspace-api/landlock.rst, seccomp_filter.rst, user_namespaces(7));
the seccomp policy is an allow list (default deny) in the spirit of Chromium's and gVisor's, for
x86_64 and aarch64.

Imports only the standard library: the worker loads this file outside the ``r1lab`` package.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct
from dataclasses import asdict, dataclass, field

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

CLONE_THREAD = 0x00010000
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_ALL_NS = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 1 << 14, 1 << 18
MNT_DETACH = 2
# Mount flags a bind mount inherits and, in a user namespace, may not drop ("locked"):
# rdonly, nosuid, nodev, noexec, synchronous, mandlock, noatime, nodiratime, relatime.
_KEPT_FLAGS = 1 | 2 | 4 | 8 | 16 | 64 | 1024 | 2048 | 4096
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_GET_SECCOMP, PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 21, 22, 36, 38
SECCOMP_MODE_FILTER = 2


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def umount(target: str) -> None:
    """Detach ``target`` (and everything below it); the kernel frees it once unused."""
    _check(_libc.umount2(target.encode(), ctypes.c_int(MNT_DETACH)), f"umount {target}")


def bind_readonly(source: str, target: str) -> None:
    """Bind ``source`` (a path or /proc/self/fd/N) on ``target``, then make it read-only, nosuid
    and nodev, keeping the flags the source mount has (a user namespace may not clear them)."""
    mount(source, target, None, MS_BIND)
    kept = os.statvfs(target).f_flag & _KEPT_FLAGS
    mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | kept)


def pivot_root(new_root: str) -> None:
    """Make ``new_root`` (a mount point) this mount namespace's root and detach the old root
    (pivot_root(".", ".") as in pivot_root(2)'s notes: no directory for the old root needed)."""
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: no system call number for {platform.machine()}")
    os.chdir(new_root)
    _check(_libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
    umount(".")
    os.chdir("/")


def prctl(option: int, arg2: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, 0, 0, 0), f"prctl({option})")


def drop_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets (capset, _LINUX_CAPABILITY_VERSION_3).

    Needed in a user namespace, where the worker is "root" of the namespace and the child never
    execs (exec is what would normally drop capabilities for a non-zero uid)."""
    header = struct.pack("II", 0x20080522, 0)
    data = bytes(24)  # two __user_cap_data_struct {effective, permitted, inheritable}, all zero
    _check(_libc.capset(header, data), "capset")


def write_id_maps(inside: int, uid: int, gid: int) -> None:
    """Map uid and gid ``inside`` of this new user namespace to the real uid/gid (the only
    mapping an unprivileged user may write)."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{inside} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{inside} {gid} 1")


# --- rlimits -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits. Defaults suit short test programs (HumanEval, code tasks)."""

    timeout_s: float = 5.0
    """Wall-clock limit, enforced by the supervisor (SIGKILL of the whole pid namespace)."""
    memory_mb: int = 512
    """RLIMIT_AS per process (a memory bomb gets MemoryError, not the host's OOM killer) and, where
    the slot has a cgroup, the memory of the whole run (else a run is one process)."""
    processes: int = 16
    """RLIMIT_NPROC (threads count too; the child is never uid 0, which it would not bind) and,
    with a cgroup, pids.max of the run: stops fork and thread bombs."""
    file_size_mb: int = 16
    """RLIMIT_FSIZE: the largest file the child may write."""
    open_files: int = 64
    """RLIMIT_NOFILE."""
    output_kb: int = 64
    """Cap on stdout+stderr (kept for diagnostics); more is an output_limit verdict."""
    results_kb: int = 1024
    """Cap on the result records; more is an output_limit verdict."""

    def to_json(self) -> dict:
        return asdict(self)


def apply_rlimits(limits: Limits) -> None:
    cpu = int(limits.timeout_s) + 1  # a CPU-bound loop gets SIGXCPU even if the supervisor were slow
    mb = 1024 * 1024
    for res, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (limits.memory_mb * mb,) * 2),
        (resource.RLIMIT_FSIZE, (limits.file_size_mb * mb,) * 2),
        (resource.RLIMIT_NOFILE, (limits.open_files,) * 2),
        (resource.RLIMIT_NPROC, (limits.processes,) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_MEMLOCK, (0, 0)),
        (resource.RLIMIT_MSGQUEUE, (0, 0)),
    ):
        resource.setrlimit(res, value)


# --- cgroups -------------------------------------------------------------------------------------

_CGROUP_FILES = {  # version -> (memory limit, memory usage, OOM events, process limit)
    2: ("memory.max", "memory.current", "memory.events", "pids.max"),
    1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.oom_control", "pids.max"),
}


class SlotCgroup:
    """A cgroup of a worker's own, which its runs inherit: memory and process limits that bind
    the whole run (every process of it together), unlike rlimits. cgroup v2 where the machine
    delegates a subtree with the memory and pids controllers; else, as root, v1's memory and pids
    hierarchies. Opened by descriptor so that it still works after pivot_root."""

    def __init__(self, version: int, paths: dict[str, str]):
        self.version, self.paths = version, paths
        self.fds = {c: os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) for c, p in paths.items()}
        self.limit_f, self.usage_f, self.events_f, self.pids_f = _CGROUP_FILES[version]
        self._set: dict[str, str] = {}
        self.base: int | None = None
        self.oom_seen = 0

    def _fd(self, controller: str) -> int:
        return self.fds["" if self.version == 2 else controller]

    def _read(self, controller: str, name: str) -> str:
        fd = os.open(name, os.O_RDONLY, dir_fd=self._fd(controller))
        try:
            return os.read(fd, 4096).decode()
        finally:
            os.close(fd)

    def _write(self, controller: str, name: str, value: str) -> None:
        if self._set.get(name) == value:
            return
        fd = os.open(name, os.O_WRONLY, dir_fd=self._fd(controller))
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
        self._set[name] = value

    def join(self) -> None:
        """Move this process (the worker) in; every run it forks then starts inside."""
        for fd in self.fds.values():
            cfd = os.open("cgroup.procs", os.O_WRONLY, dir_fd=fd)
            try:
                os.write(cfd, str(os.getpid()).encode())
            finally:
                os.close(cfd)

    def set_limits(self, memory_bytes: int, processes: int) -> None:
        """Limits for the next run, over what the worker itself held when it started (which the
        run shares). Written only when they change: nothing to do for most runs."""
        if self.base is None:
            self.base = int(self._read("memory", self.usage_f))
        mib = 1 << 20
        self._write("memory", self.limit_f, str((self.base + memory_bytes + mib - 1) // mib * mib))
        self._write("pids", self.pids_f, str(processes + 2))  # + the worker and the run's shim

    def oom_kills(self) -> int:
        for line in self._read("memory", self.events_f).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def procs(self) -> list[int]:
        """The processes in the cgroup (the worker and whatever a run left behind)."""
        return [int(p) for p in self._read("pids", "cgroup.procs").split()]

    def new_oom_kills(self) -> bool:
        """Whether the kernel killed a process of this cgroup for memory since the last call."""
        count = self.oom_kills()
        new, self.oom_seen = count > self.oom_seen, count
        return new

    def describe(self) -> str:
        return f"cgroup v{self.version} per slot (memory, pids: per run)"


def _mounts() -> list[tuple[str, str, set[str]]]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _source, options = (right.split() + ["", ""])[:3]
            found.append((left.split()[4], fstype, set(options.split(","))))
    return found


def find_cgroup(name: str, delegated: str = "") -> tuple[SlotCgroup | None, str]:
    """Create cgroup ``name`` for one slot, or say why not. v2: under ``delegated`` (a folder the
    caller was given) or this process's own cgroup, if its controllers include memory and pids
    and they can be enabled for its children. v1: beside this process in the memory and pids
    hierarchies (needs root)."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(","):
                own[c] = path
    mounts = _mounts()
    reasons = []
    for point, fstype, _ in mounts:
        if fstype != "cgroup2" or "" not in own:
            continue
        base = delegated or point + own[""]
        try:
            with open(os.path.join(base, "cgroup.controllers")) as f:
                available = set(f.read().split())
            if not {"memory", "pids"} <= available:
                reasons.append(f"v2 at {base} lacks the memory or pids controller (has: {' '.join(sorted(available)) or 'none'})")
                continue
            with open(os.path.join(base, "cgroup.subtree_control")) as f:
                enabled = set(f.read().split())
            if not {"memory", "pids"} <= enabled:
                with open(os.path.join(base, "cgroup.subtree_control"), "w") as f:
                    f.write("+memory +pids")
            path = os.path.join(base, name)
            os.makedirs(path, exist_ok=True)
            return SlotCgroup(2, {"": path}), ""
        except OSError as e:
            reasons.append(f"v2 at {base}: {e.strerror}")
    v1 = {}
    for controller in ("memory", "pids"):
        for point, fstype, options in mounts:
            if fstype == "cgroup" and controller in options and controller in own:
                v1[controller] = os.path.join(point + own[controller], name)
    if len(v1) == 2:
        try:
            for path in v1.values():
                os.makedirs(path, exist_ok=True)
            return SlotCgroup(1, v1), ""
        except OSError as e:
            reasons.append(f"v1: {e.strerror}")
    elif not reasons:
        reasons.append("no cgroup v2 with memory and pids, nor v1 memory and pids hierarchies")
    return None, "; ".join(reasons)


# --- Landlock ------------------------------------------------------------------------------------

_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
FS_MAKE_SYM, FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
READ_ONLY = FS_READ_FILE | FS_READ_DIR
READ_WRITE = (1 << 16) - 1 & ~(FS_EXECUTE | FS_MAKE_CHAR | FS_MAKE_BLOCK | FS_IOCTL_DEV)
_FILE_ONLY = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


def landlock_abi() -> int:
    """The Landlock ABI version of the running kernel, 0 when Landlock is missing or disabled."""
    ret = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(ret), 0)


def landlock_ruleset(abi: int, rules: list[tuple[str, int]]) -> int:
    """A ruleset fd that denies every file-system right not granted by ``rules`` (path, rights),
    every TCP bind/connect (ABI >= 4), and signals and abstract unix sockets across the domain
    boundary (ABI >= 6). Paths that do not exist are skipped."""
    handled_fs = _FS_BY_ABI.get(abi, _FS_BY_ABI[5])
    attr = struct.pack("Q", handled_fs)
    if abi >= 4:
        attr += struct.pack("Q", NET_BIND_TCP | NET_CONNECT_TCP)
    if abi >= 6:
        attr += struct.pack("Q", SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    ruleset = _check(_libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0)), "landlock_create_ruleset")
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            if not os.path.isdir(path):
                rights &= _FILE_ONLY
            rule = struct.pack("=Qi", rights & handled_fs, fd)  # packed landlock_path_beneath_attr
            _check(_libc.syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), rule, ctypes.c_uint32(0)), f"landlock_add_rule {path}")
        finally:
            os.close(fd)
    return ruleset


def landlock_restrict_self(ruleset_fd: int) -> None:
    """Enter the ruleset's domain (needs no_new_privs first). Irreversible, inherited by children."""
    _check(_libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)), "landlock_restrict_self")


# --- seccomp -------------------------------------------------------------------------------------

# Allow lists: the system calls that CPython and its standard library make for a program that
# computes, reads and writes files in its scratch, uses threads, pipes and socketpairs. Anything
# else fails with EPERM, including every system call newer than this list (listmount, statmount,
# ...), SysV and POSIX IPC (shm*, msg*, sem*, mq_*), memfd_create (memory outside RLIMIT_AS),
# exec, ptrace, mounts, namespaces, keyrings, BPF, io_uring, perf, userfaultfd and pidfd_getfd.
# Three calls are checked by argument below: clone (no namespace flags), clone3 (ENOSYS: its
# flags lie in memory BPF cannot read, so libc falls back to clone) and socket (AF_UNIX only).
# Numbers from the kernel's uapi headers (asm/unistd_64.h; asm-generic/unistd.h for aarch64).
_X86_64 = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6, "poll": 7, "lseek": 8,
    "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13, "rt_sigprocmask": 14,
    "rt_sigreturn": 15, "ioctl": 16, "pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "access": 21,
    "pipe": 22, "select": 23, "sched_yield": 24, "mremap": 25, "msync": 26, "mincore": 27, "madvise": 28,
    "dup": 32, "dup2": 33, "pause": 34, "nanosleep": 35, "getitimer": 36, "alarm": 37, "setitimer": 38,
    "getpid": 39, "sendfile": 40, "connect": 42, "accept": 43, "sendto": 44, "recvfrom": 45, "sendmsg": 46,
    "recvmsg": 47, "shutdown": 48, "bind": 49, "listen": 50, "getsockname": 51, "getpeername": 52,
    "socketpair": 53, "setsockopt": 54, "getsockopt": 55, "fork": 57, "vfork": 58, "exit": 60, "wait4": 61,
    "kill": 62, "uname": 63, "fcntl": 72, "flock": 73, "fsync": 74, "fdatasync": 75, "truncate": 76,
    "ftruncate": 77, "getdents": 78, "getcwd": 79, "chdir": 80, "fchdir": 81, "rename": 82, "mkdir": 83,
    "rmdir": 84, "creat": 85, "link": 86, "unlink": 87, "symlink": 88, "readlink": 89, "chmod": 90,
    "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94, "umask": 95, "gettimeofday": 96, "getrlimit": 97,
    "getrusage": 98, "sysinfo": 99, "times": 100, "getuid": 102, "getgid": 104, "geteuid": 107,
    "getegid": 108, "setpgid": 109, "getppid": 110, "getpgrp": 111, "setsid": 112, "getgroups": 115,
    "getresuid": 118, "getresgid": 120, "getpgid": 121, "getsid": 124, "capget": 125, "rt_sigpending": 127,
    "rt_sigtimedwait": 128, "rt_sigqueueinfo": 129, "rt_sigsuspend": 130, "sigaltstack": 131, "utime": 132,
    "statfs": 137, "fstatfs": 138, "getpriority": 140, "sched_getparam": 143, "sched_getscheduler": 145,
    "sched_get_priority_max": 146, "sched_get_priority_min": 147, "arch_prctl": 158, "setrlimit": 160,
    "gettid": 186, "tkill": 200, "time": 201, "futex": 202, "sched_getaffinity": 204, "epoll_create": 213,
    "getdents64": 217, "set_tid_address": 218, "restart_syscall": 219, "fadvise64": 221,
    "clock_gettime": 228, "clock_getres": 229, "clock_nanosleep": 230, "exit_group": 231, "epoll_wait": 232,
    "epoll_ctl": 233, "tgkill": 234, "utimes": 235, "waitid": 247, "openat": 257, "mkdirat": 258,
    "fchownat": 260, "futimesat": 261, "newfstatat": 262, "unlinkat": 263, "renameat": 264, "linkat": 265,
    "symlinkat": 266, "readlinkat": 267, "fchmodat": 268, "faccessat": 269, "pselect6": 270, "ppoll": 271,
    "set_robust_list": 273, "get_robust_list": 274, "splice": 275, "tee": 276, "utimensat": 280,
    "epoll_pwait": 281, "signalfd": 282, "timerfd_create": 283, "eventfd": 284, "fallocate": 285,
    "timerfd_settime": 286, "timerfd_gettime": 287, "accept4": 288, "signalfd4": 289, "eventfd2": 290,
    "epoll_create1": 291, "dup3": 292, "pipe2": 293, "preadv": 295, "pwritev": 296, "rt_tgsigqueueinfo": 297,
    "prlimit64": 302, "getcpu": 309, "renameat2": 316, "getrandom": 318, "membarrier": 324,
    "copy_file_range": 326, "preadv2": 327, "pwritev2": 328, "statx": 332, "rseq": 334, "close_range": 436,
    "faccessat2": 439, "epoll_pwait2": 441,
}
_AARCH64 = {
    "getcwd": 17, "eventfd2": 19, "epoll_create1": 20, "epoll_ctl": 21, "epoll_pwait": 22, "dup": 23,
    "dup3": 24, "fcntl": 25, "ioctl": 29, "flock": 32, "mkdirat": 34, "unlinkat": 35, "symlinkat": 36,
    "linkat": 37, "renameat": 38, "statfs": 43, "fstatfs": 44, "truncate": 45, "ftruncate": 46,
    "fallocate": 47, "faccessat": 48, "chdir": 49, "fchdir": 50, "fchmod": 52, "fchmodat": 53,
    "fchownat": 54, "fchown": 55, "openat": 56, "close": 57, "pipe2": 59, "getdents64": 61, "lseek": 62,
    "read": 63, "write": 64, "readv": 65, "writev": 66, "pread64": 67, "pwrite64": 68, "preadv": 69,
    "pwritev": 70, "sendfile": 71, "pselect6": 72, "ppoll": 73, "signalfd4": 74, "splice": 76, "tee": 77,
    "readlinkat": 78, "newfstatat": 79, "fstat": 80, "fsync": 82, "fdatasync": 83, "timerfd_create": 85,
    "timerfd_settime": 86, "timerfd_gettime": 87, "utimensat": 88, "capget": 90, "exit": 93,
    "exit_group": 94, "waitid": 95, "set_tid_address": 96, "futex": 98, "set_robust_list": 99,
    "get_robust_list": 100, "nanosleep": 101, "getitimer": 102, "setitimer": 103, "clock_gettime": 113,
    "clock_getres": 114, "clock_nanosleep": 115, "sched_getscheduler": 120, "sched_getparam": 121,
    "sched_getaffinity": 123, "sched_yield": 124, "sched_get_priority_max": 125,
    "sched_get_priority_min": 126, "restart_syscall": 128, "kill": 129, "tkill": 130, "tgkill": 131,
    "sigaltstack": 132, "rt_sigsuspend": 133, "rt_sigaction": 134, "rt_sigprocmask": 135,
    "rt_sigpending": 136, "rt_sigtimedwait": 137, "rt_sigqueueinfo": 138, "rt_sigreturn": 139,
    "getpriority": 141, "getresuid": 148, "getresgid": 150, "times": 153, "setpgid": 154, "getpgid": 155,
    "getsid": 156, "setsid": 157, "getgroups": 158, "uname": 160, "getrlimit": 163, "setrlimit": 164,
    "getrusage": 165, "umask": 166, "getcpu": 168, "gettimeofday": 169, "getpid": 172, "getppid": 173,
    "getuid": 174, "geteuid": 175, "getgid": 176, "getegid": 177, "gettid": 178, "sysinfo": 179,
    "socketpair": 199, "bind": 200, "listen": 201, "accept": 202, "connect": 203, "getsockname": 204,
    "getpeername": 205, "sendto": 206, "recvfrom": 207, "setsockopt": 208, "getsockopt": 209,
    "shutdown": 210, "sendmsg": 211, "recvmsg": 212, "brk": 214, "munmap": 215, "mremap": 216, "mmap": 222,
    "fadvise64": 223, "mprotect": 226, "msync": 227, "mincore": 232, "madvise": 233,
    "rt_tgsigqueueinfo": 240, "accept4": 242, "wait4": 260, "prlimit64": 261, "renameat2": 276,
    "getrandom": 278, "membarrier": 283, "copy_file_range": 285, "preadv2": 286, "pwritev2": 287,
    "statx": 291, "rseq": 293, "close_range": 436, "faccessat2": 439, "epoll_pwait2": 441,
}
_ARCHES = {  # machine -> (AUDIT_ARCH_*, allow list, clone, clone3, socket, x32 bit)
    "x86_64": (0xC000003E, _X86_64, 56, 435, 41, 0x40000000),
    "aarch64": (0xC00000B7, _AARCH64, 220, 435, 198, 0),
}
_AF_UNIX = 1

_RET_KILL_PROCESS, _RET_ALLOW = 0x80000000, 0x7FFF0000
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # struct seccomp_data; arg0's low 32 bits (little-endian)


def _ret_errno(err: int) -> int:
    return 0x00050000 | err


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_program(machine: str | None = None, processes: bool = True) -> bytes | None:
    """The default-deny BPF filter for ``machine`` (this one by default), or None where no allow
    list is written for the architecture. ``processes=False`` allows threads but no new process
    (fork, vfork, clone without CLONE_THREAD): without a cgroup, RLIMIT_AS then bounds the
    memory of the whole run, not of each of its processes."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, allowed, clone, clone3, sock, x32 = arch
    deny = _insn(_RET_K, 0, 0, _ret_errno(errno.EPERM))
    # another architecture's calling convention (i386 int 0x80 on x86_64, say): kill
    prog = [_insn(_LD_W_ABS, 0, 0, _OFF_ARCH), _insn(_JEQ_K, 1, 0, audit_arch), _insn(_RET_K, 0, 0, _RET_KILL_PROCESS)]
    prog += [_insn(_LD_W_ABS, 0, 0, _OFF_NR)]
    if x32:
        prog += [_insn(_JGE_K, 0, 1, x32), deny]
    for name, nr in sorted(allowed.items(), key=lambda kv: kv[1]):
        if processes or name not in ("fork", "vfork"):
            prog += [_insn(_JEQ_K, 0, 1, nr), _insn(_RET_K, 0, 0, _RET_ALLOW)]
    prog += [_insn(_JEQ_K, 0, 1, clone3), _insn(_RET_K, 0, 0, _ret_errno(errno.ENOSYS))]
    # clone: threads (and fork, if ``processes``) are fine, new namespaces are not
    prog += [_insn(_JEQ_K, 0, 4 if processes else 6, clone), _insn(_LD_W_ABS, 0, 0, _OFF_ARG0), _insn(_JSET_K, 0, 1, _ALL_NS), deny]
    if not processes:
        prog += [_insn(_JSET_K, 1, 0, CLONE_THREAD), deny]
    prog += [_insn(_RET_K, 0, 0, _RET_ALLOW)]
    # socket: unix sockets only (socketpair, multiprocessing); no inet, netlink, packet, vsock...
    prog += [_insn(_JEQ_K, 0, 4, sock), _insn(_LD_W_ABS, 0, 0, _OFF_ARG0), _insn(_JEQ_K, 1, 0, _AF_UNIX),
             _insn(_RET_K, 0, 0, _ret_errno(errno.EAFNOSUPPORT)), _insn(_RET_K, 0, 0, _RET_ALLOW)]
    prog += [deny]
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_install(program: bytes) -> None:
    """Install the filter on this thread (needs no_new_privs); inherited by all children."""
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "seccomp")


# --- the report ----------------------------------------------------------------------------------


@dataclass
class Layers:
    """Which isolation layers a worker has in force. ``missing`` holds a reason per absent layer."""

    mode: str = ""
    """"root" (uid per slot) or "user" (unprivileged user namespace)."""
    active: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"sandbox ({self.mode}): active: {', '.join(self.active) or 'none'}"
        if self.missing:
            text += "; MISSING: " + "; ".join(f"{k} ({v})" for k, v in self.missing.items())
        return text
