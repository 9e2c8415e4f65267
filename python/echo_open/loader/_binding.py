"""The compiled cffi binding, and libbpf's log routed to Python ``logging``."""

from __future__ import annotations

import logging
import threading

from echo_open._libbpf import ffi, lib

__all__ = ["capture_log", "ffi", "lib", "libbpf_version", "possible_cpus"]

logger = logging.getLogger("echo_open.libbpf")
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
_capture = threading.local()


@ffi.def_extern()
def ldr_log(level: int, message) -> None:
    # Exceptions raised here would be swallowed by cffi: keep this trivial.
    text = ffi.string(message).decode("utf-8", "replace")
    lines = getattr(_capture, "lines", None)
    if lines is not None:
        lines.append(text)
    logger.log(_LEVELS.get(level, logging.DEBUG), "%s", text.rstrip("\n"))


lib.ldr_set_print(True)


class capture_log:
    """Collect libbpf's messages in this thread while the block runs (e.g. a verifier log)."""

    def __enter__(self) -> list[str]:
        self._previous = getattr(_capture, "lines", None)
        _capture.lines = []
        return _capture.lines

    def __exit__(self, *exc: object) -> None:
        _capture.lines = self._previous


def libbpf_version() -> tuple[int, int]:
    return lib.libbpf_major_version(), lib.libbpf_minor_version()


_cpus: list[int] = []


def possible_cpus() -> int:
    """Per-CPU map values hold one slot per possible CPU."""
    if not _cpus:
        _cpus.append(lib.libbpf_num_possible_cpus())
    return _cpus[0]
