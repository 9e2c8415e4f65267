"""Exceptions for libbpf failures, and the one place that turns -errno into them."""

from __future__ import annotations

import os

from ._binding import ffi, lib

# libbpf's own error codes (LIBBPF_ERRNO__START): libbpf_strerror knows them, strerror does not
_LIBBPF_ERRNO_START = 4000


def strerror(errno: int) -> str:
    """The text for an errno, libbpf's own codes (e.g. 4001, "Invalid ELF format") included."""
    if errno < _LIBBPF_ERRNO_START:
        return os.strerror(errno)
    buf = ffi.new("char[]", 128)
    lib.libbpf_strerror(errno, buf, len(buf))
    return ffi.string(buf).decode("utf-8", "replace")


class BPFError(OSError):
    """A libbpf call failed: ``errno`` and the operation it was doing."""

    def __init__(self, errno: int, operation: str, log: str = "") -> None:
        super().__init__(errno, f"{operation}: {strerror(errno)}")
        self.operation = operation
        self.log = log

    def __str__(self) -> str:
        return f"{self.operation}: {strerror(self.errno)} (errno {self.errno})"


class LoadError(BPFError):
    """``bpf_object__load`` failed; ``log`` holds libbpf's output, the verifier log included."""

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n{self.log}" if self.log else text


def check(ret: int, operation: str) -> int:
    """Return ``ret`` if it is not an error; raise ``BPFError`` for ``-errno``."""
    if ret < 0:
        raise BPFError(-ret, operation)
    return ret
