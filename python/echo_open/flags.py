"""Names for open flags, errnos and syscalls: pure functions, no kernel."""

from __future__ import annotations

import errno as _errno
import os

# Kernel ABI values (asm-generic/fcntl.h); arm64 moves four of them.
_GENERIC = {
    "O_WRONLY": 0o1, "O_RDWR": 0o2, "O_CREAT": 0o100, "O_EXCL": 0o200, "O_NOCTTY": 0o400,
    "O_TRUNC": 0o1000, "O_APPEND": 0o2000, "O_NONBLOCK": 0o4000, "O_DSYNC": 0o10000,
    "O_ASYNC": 0o20000, "O_DIRECT": 0o40000, "O_LARGEFILE": 0o100000,
    "O_DIRECTORY": 0o200000, "O_NOFOLLOW": 0o400000, "O_NOATIME": 0o1000000,
    "O_CLOEXEC": 0o2000000, "__O_SYNC": 0o4000000, "O_PATH": 0o10000000,
    "__O_TMPFILE": 0o20000000,
}
_ARM64 = {"O_DIRECTORY": 0o40000, "O_NOFOLLOW": 0o100000, "O_DIRECT": 0o200000,
          "O_LARGEFILE": 0o400000}

OPEN_FLAGS: dict[str, int] = dict(_GENERIC)
if os.uname().machine in ("aarch64", "arm64"):
    OPEN_FLAGS.update(_ARM64)
# composites as userspace spells them
OPEN_FLAGS["O_SYNC"] = OPEN_FLAGS["__O_SYNC"] | OPEN_FLAGS["O_DSYNC"]
OPEN_FLAGS["O_TMPFILE"] = OPEN_FLAGS["__O_TMPFILE"] | OPEN_FLAGS["O_DIRECTORY"]
OPEN_FLAGS["O_RDONLY"] = 0
OPEN_FLAGS["O_NDELAY"] = OPEN_FLAGS["O_NONBLOCK"]
OPEN_FLAGS["O_RSYNC"] = OPEN_FLAGS["O_SYNC"]
O_ACCMODE = 0o3

# the order flags are printed in; composites first so their parts are not repeated
_PRINT_ORDER = ["O_TMPFILE", "O_SYNC", "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND",
                "O_NONBLOCK", "O_DSYNC", "O_ASYNC", "O_DIRECT", "O_LARGEFILE", "O_DIRECTORY",
                "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC", "O_PATH"]
_ACCESS = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR", 3: "O_ACCMODE"}


def flags_text(flags: int) -> str:
    """``O_WRONLY|O_CREAT|O_CLOEXEC``; unknown bits as octal."""
    parts = [_ACCESS[flags & O_ACCMODE]]
    rest = flags & ~O_ACCMODE
    for name in _PRINT_ORDER:
        value = OPEN_FLAGS[name]
        if value and rest & value == value:
            parts.append(name)
            rest &= ~value
    if rest:
        parts.append(oct(rest))
    return "|".join(parts)


def flags_text_table() -> tuple[list[str], list[tuple[str, int]]]:
    """What flags_text works from, for a formatter in C: the names of the four
    access modes, and (name, value) of the other flags in print order."""
    return [_ACCESS[mode] for mode in range(4)], [(name, OPEN_FLAGS[name]) for name in _PRINT_ORDER]


def parse_open_flag(text: str) -> int:
    """``O_CREAT``, ``creat`` or a number (``0o100``, ``64``) -> the flag's value."""
    name = text.strip().upper()
    if not name.startswith("O_") and name.isalpha():
        name = "O_" + name
    if name in OPEN_FLAGS and not name.startswith("__"):
        return OPEN_FLAGS[name]
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"unknown open flag {text!r}") from None


def errno_name(number: int) -> str:
    """``ENOENT``; a number without a name as ``E<number>``."""
    return _errno.errorcode.get(number, f"E{number}")
