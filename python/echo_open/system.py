"""What the running kernel and this process allow: privileges, BTF, tracefs."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

BTF_PATH = Path("/sys/kernel/btf/vmlinux")
TRACEFS = Path("/sys/kernel/tracing")
_DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")

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


def effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges() -> None:
    caps = effective_caps()
    has = lambda cap: bool(caps >> cap & 1)  # noqa: E731
    if has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON)):
        return
    raise NotPermitted("echo-open needs root, or CAP_BPF and CAP_PERFMON "
                       "(try: sudo echo-open)")


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
