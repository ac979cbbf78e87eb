"""Linux isolation primitives through ctypes: namespaces, mounts, prctl, capabilities, Landlock,
seccomp, rlimits.

Python 3.11 has no ``os.unshare``, and Landlock/seccomp have no standard-library binding, so the
few system calls are made through libc. Each function either does its job or raises OSError; the
worker decides which layers are required and reports the rest (``Layers``). Follows the kernel
documentation (Documentation/userspace-api/landlock.rst, seccomp_filter.rst, user_namespaces(7));
the seccomp policy is a deny list in the spirit of Docker's and Chromium's default profiles, much
shorter: the other layers (pid/net/mount namespaces, uid, Landlock) carry most of the load.

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

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_ALL_NS = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 1 << 14, 1 << 18

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


def prctl(option: int, arg2: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, 0, 0, 0), f"prctl({option})")


def drop_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets (capset, _LINUX_CAPABILITY_VERSION_3).

    Needed in a user namespace, where the worker is "root" of the namespace and the child never
    execs (exec is what would normally drop capabilities for a non-zero uid)."""
    header = struct.pack("II", 0x20080522, 0)
    data = bytes(24)  # two __user_cap_data_struct {effective, permitted, inheritable}, all zero
    _check(_libc.capset(header, data), "capset")


def write_id_maps(uid: int, gid: int) -> None:
    """Map namespace root to the real uid/gid (the only mapping an unprivileged user may write)."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


# --- rlimits -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits. Defaults suit short test programs (HumanEval, code tasks)."""

    timeout_s: float = 5.0
    """Wall-clock limit, enforced by the supervisor (SIGKILL of the whole pid namespace)."""
    memory_mb: int = 512
    """RLIMIT_AS per process: a memory bomb gets MemoryError, not the host's OOM killer."""
    processes: int = 16
    """RLIMIT_NPROC (threads count too): stops fork and thread bombs."""
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

_AUDIT_ARCH_X86_64 = 0xC000003E
# x86_64 system call numbers denied with EPERM: debugging other processes, namespaces and mounts,
# kernel keyrings, BPF, io_uring (its operations bypass seccomp), modules, exec (the child never
# needs to exec; Landlock does not cover memfd exec), and the clock/system knobs.
_X86_64_DENY = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "setns": 308, "unshare": 272,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "kexec_load": 246, "kexec_file_load": 320, "init_module": 175,
    "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168,
    "acct": 163, "open_by_handle_at": 304, "name_to_handle_at": 303, "syslog": 103,
    "settimeofday": 164, "clock_settime": 227, "adjtimex": 159, "clock_adjtime": 305, "mknod": 133,
    "mknodat": 259, "fanotify_init": 300, "quotactl": 179, "vhangup": 153, "personality": 135,
    "execve": 59, "execveat": 322,
}
_X86_64_CLONE, _X86_64_CLONE3, _X86_64_SOCKET = 56, 435, 41
_AF_UNIX = 1

_RET_KILL_PROCESS, _RET_ALLOW = 0x80000000, 0x7FFF0000
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # struct seccomp_data; arg0's low 32 bits (little-endian)


def _ret_errno(err: int) -> int:
    return 0x00050000 | err


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_program() -> bytes | None:
    """The BPF filter for this machine, or None where no policy is written for the architecture."""
    if platform.machine() != "x86_64":
        return None
    prog = [_insn(_LD_W_ABS, 0, 0, _OFF_ARCH), _insn(_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64), _insn(_RET_K, 0, 0, _RET_KILL_PROCESS)]
    prog += [_insn(_LD_W_ABS, 0, 0, _OFF_NR), _insn(_JGE_K, 0, 1, 0x40000000), _insn(_RET_K, 0, 0, _ret_errno(errno.EPERM))]  # x32 ABI
    for nr in sorted(_X86_64_DENY.values()):
        prog += [_insn(_JEQ_K, 0, 1, nr), _insn(_RET_K, 0, 0, _ret_errno(errno.EPERM))]
    # clone3 passes its flags in memory that BPF cannot read: answer ENOSYS so libc falls back to clone
    prog += [_insn(_JEQ_K, 0, 1, _X86_64_CLONE3), _insn(_RET_K, 0, 0, _ret_errno(errno.ENOSYS))]
    # clone: threads and fork are fine, new namespaces are not
    prog += [_insn(_JEQ_K, 0, 4, _X86_64_CLONE), _insn(_LD_W_ABS, 0, 0, _OFF_ARG0), _insn(_JSET_K, 0, 1, _ALL_NS),
             _insn(_RET_K, 0, 0, _ret_errno(errno.EPERM)), _insn(_RET_K, 0, 0, _RET_ALLOW)]
    # socket: unix sockets only (multiprocessing uses them); no inet, netlink, packet, vsock...
    prog += [_insn(_JEQ_K, 0, 4, _X86_64_SOCKET), _insn(_LD_W_ABS, 0, 0, _OFF_ARG0), _insn(_JEQ_K, 1, 0, _AF_UNIX),
             _insn(_RET_K, 0, 0, _ret_errno(errno.EAFNOSUPPORT)), _insn(_RET_K, 0, 0, _RET_ALLOW)]
    prog += [_insn(_RET_K, 0, 0, _RET_ALLOW)]
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
