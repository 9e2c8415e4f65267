"""What the running kernel and this process allow: privileges, BTF, tracefs."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path

BTF_PATH = Path("/sys/kernel/btf/vmlinux")
TRACEFS = Path("/sys/kernel/tracing")
_DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")

CAP_DAC_READ_SEARCH = 2
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


class EnvironmentProblem(Exception):
    """The machine or the process cannot trace; the message says why, in one line."""


class NotPermitted(EnvironmentProblem):
    pass


class NoBTF(EnvironmentProblem):
    pass


class NoTracefs(EnvironmentProblem):
    pass


def kernel_version() -> tuple[int, int]:
    """The running kernel's (major, minor), from its release (6.1.0-57-amd64: (6, 1))."""
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def has_cap(caps: int, cap: int) -> bool:
    return bool(caps >> cap & 1)


def may_load_bpf(caps: int) -> bool:
    """Root's CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON: what loading tracing programs needs."""
    return has_cap(caps, CAP_SYS_ADMIN) or (has_cap(caps, CAP_BPF) and has_cap(caps, CAP_PERFMON))


def read_sysctl(name: str) -> int | None:
    """An integer sysctl such as ``kernel.perf_event_paranoid``; None if it does not exist."""
    try:
        return int(Path("/proc/sys", *name.split(".")).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# perf_event_open(2): libc has no wrapper, and the number differs by architecture
_PERF_EVENT_OPEN_NR = {"x86_64": 298, "aarch64": 241, "riscv64": 241, "ppc64le": 319,
                       "s390x": 331}
_PERF_TYPE_SOFTWARE = 1
_PERF_COUNT_SW_DUMMY = 9
_PERF_ATTR_SIZE_VER0 = 64
_PERF_ATTR_DISABLED_EXCLUDE_KERNEL_HV = 1 << 0 | 1 << 5 | 1 << 6
_PERF_FLAG_FD_CLOEXEC = 1 << 3


def perf_events_allowed() -> bool:
    """Whether this process may open a perf event at all: the way tracepoints are attached.

    Debian's kernels (and Android's) carry a patch that makes kernel.perf_event_paranoid=3
    refuse every perf_event_open without CAP_SYS_ADMIN, CAP_PERFMON or not; upstream
    kernels (this 6.18 one) accept 3 and ignore it. Only asking the kernel tells which:
    a disabled dummy software event on this process, closed at once.
    """
    number = _PERF_EVENT_OPEN_NR.get(os.uname().machine)
    if number is None:  # unknown architecture: assume the strict (patched) kernel
        return False
    attr = struct.pack("<IIQQQQQ", _PERF_TYPE_SOFTWARE, _PERF_ATTR_SIZE_VER0,
                       _PERF_COUNT_SW_DUMMY, 0, 0, 0, _PERF_ATTR_DISABLED_EXCLUDE_KERNEL_HV)
    attr = attr.ljust(_PERF_ATTR_SIZE_VER0, b"\0")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(ctypes.c_long(number), ctypes.c_char_p(attr), ctypes.c_int(0),
                      ctypes.c_int(-1), ctypes.c_int(-1), ctypes.c_ulong(_PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        return ctypes.get_errno() not in (errno.EACCES, errno.EPERM)
    os.close(fd)
    return True


PARANOID_FIX = "run as root (sudo echo-open), or: sysctl kernel.perf_event_paranoid=2"


def paranoid_problem(caps: int | None = None) -> str | None:
    """Why kernel.perf_event_paranoid stops this process attaching tracepoints, or None."""
    caps = effective_caps() if caps is None else caps
    paranoid = read_sysctl("kernel.perf_event_paranoid")
    if has_cap(caps, CAP_SYS_ADMIN) or paranoid is None or paranoid <= 2:
        return None
    if perf_events_allowed():
        return None
    return (f"kernel.perf_event_paranoid is {paranoid}: on this kernel only CAP_SYS_ADMIN "
            f"may then attach tracepoints; {PARANOID_FIX}")


def check_privileges() -> None:
    caps = effective_caps()
    if not may_load_bpf(caps):
        raise NotPermitted("echo-open needs root, or CAP_BPF and CAP_PERFMON "
                           "(try: sudo echo-open)")
    problem = paranoid_problem(caps)
    if problem:
        # refused up front: at attach time it would be a bare "Permission denied"
        raise NotPermitted(problem)


def check_btf() -> None:
    if not BTF_PATH.exists():
        raise NoBTF(f"the kernel has no BTF ({BTF_PATH} is missing): echo-open needs a kernel "
                    "built with CONFIG_DEBUG_INFO_BTF=y")


def tracefs_root() -> Path:
    """Where tracefs is mounted; mounts it at /sys/kernel/tracing if it is not."""
    for root in (TRACEFS, _DEBUGFS_TRACING):
        if _has_events(root):
            return root
    if not TRACEFS.is_dir():
        raise NoTracefs(f"tracefs is not available: {TRACEFS} does not exist "
                        "(kernel without CONFIG_TRACING?)")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", bytes(TRACEFS), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        if err != errno.EBUSY:
            raise NoTracefs(f"tracefs is not mounted and mounting it at {TRACEFS} failed: "
                            f"{os.strerror(err)} (run: mount -t tracefs nodev {TRACEFS})")
    if not (TRACEFS / "events").is_dir():
        raise NoTracefs(f"tracefs at {TRACEFS} has no events directory")
    return TRACEFS


def _has_events(root: Path) -> bool:
    try:
        return (root / "events").is_dir()
    except PermissionError:
        raise NoTracefs(f"cannot read {root}: permission denied (tracepoints are looked up "
                        "there: run as root, or add CAP_DAC_READ_SEARCH)") from None


def tracepoint_exists(root: Path, category: str, name: str) -> bool:
    return (root / "events" / category / name).is_dir()


def check_all() -> Path:
    """Run every check, in the order a user can fix them; return the tracefs root."""
    check_privileges()
    check_btf()
    return tracefs_root()


def descendants(pids: Iterable[int]) -> set[int]:
    """The live processes descended from ``pids`` (not the pids themselves), from
    /proc/*/stat's parent pids as they are now."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:  # gone since the listing
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    pending = list(pids)
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found - set(pids)


_BTF_MAGIC = 0xEB9F
_BTF_KIND_FUNC = 12
_kernel_functions: dict[str, bool] = {}


def kernel_has_function(name: str) -> bool:
    """Whether the running kernel's BTF has a function ``name`` (a kfunc, say): False
    without BTF. Cached per process. A byte search, not a parse of ~150k types (libbpf's
    takes ~0.1 s): the name's offset in the (deduplicated) strings, then a FUNC type whose
    first two words are that offset and its kind, at a type-aligned offset."""
    if name not in _kernel_functions:
        try:
            data = BTF_PATH.read_bytes()
        except OSError:
            return False
        _kernel_functions[name] = _btf_has_function(data, name.encode())
    return _kernel_functions[name]


def _btf_has_function(data: bytes, name: bytes) -> bool:
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
        struct.unpack_from("<HBBIIIII", data)
    if magic != _BTF_MAGIC:
        return False
    strings = hdr_len + str_off
    at = data.find(b"\0" + name + b"\0", strings, strings + str_len) - strings
    if at < 0:
        return False
    types_start, types_end = hdr_len + type_off, hdr_len + type_off + type_len
    for linkage in range(3):  # static, global, extern: the vlen bits of a FUNC
        pattern = struct.pack("<II", at + 1, _BTF_KIND_FUNC << 24 | linkage)
        found = data.find(pattern, types_start, types_end)
        while found >= 0:
            if (found - types_start) % 4 == 0:
                return True
            found = data.find(pattern, found + 1, types_end)
    return False
