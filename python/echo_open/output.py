"""The events' file (-o FILE): written whole lines at a time, rotated by size, reopened
on request (after logrotate renamed it). Knows nothing of events or terminals: it takes
bytes that are whole lines.

    with EventFile("opens.jsonl", max_size=64 << 20, max_files=5) as out:
        out.write(b'{"pid": 1, ...}\\n')
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

Writer = Callable[[int, memoryview], None]

DEFAULT_MAX_FILES = 5
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC


def write_all(fd: int, data: memoryview) -> None:
    """Every byte of data to fd (a write may take only part)."""
    while data:
        data = data[os.write(fd, data):]


class EventFile:
    """FILE, created or truncated; with ``max_size`` (bytes), rotated before a write
    would take it past that: FILE -> FILE.1 -> FILE.2 ... up to FILE.<max_files>, the
    oldest dropped, and a new FILE opened. A write is cut only between lines, so no line
    is split across files; a line longer than max_size gets a file of its own.
    With max_size, a FILE that exists at start is rotated away, not truncated (a restarted
    service keeps what it wrote before).

    ``request_reopen()`` may be called from a signal handler: the next
    ``reopen_if_requested()`` (or write) closes FILE and opens the path again, appending,
    so what logrotate renamed is left alone and the events go on in a new FILE.
    """

    def __init__(self, path: str | os.PathLike, *, max_size: int | None = None,
                 max_files: int = DEFAULT_MAX_FILES) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError("max_size must be at least 1 byte")
        if max_files < 1:
            raise ValueError("max_files must be at least 1")
        self.path = os.fspath(path)
        self.max_size = max_size
        self.max_files = max_files
        self.rotations = 0
        self.reopens = 0
        self._reopen = False
        if max_size is not None and _nonempty_file(self.path):
            self._shift()
        self._fd = os.open(self.path, _FLAGS | os.O_TRUNC, 0o644)
        self.size = 0  # bytes in the current FILE
        if max_size is not None and not stat.S_ISREG(os.fstat(self._fd).st_mode):
            self.close()  # a FIFO or device has no size to keep and must not be renamed
            raise ValueError(f"{self.path} is not a regular file: it cannot be rotated")

    def fileno(self) -> int:
        return self._fd

    def request_reopen(self) -> None:
        """Async-signal-safe: only sets a flag."""
        self._reopen = True

    def reopen_if_requested(self) -> bool:
        if not self._reopen:
            return False
        self._reopen = False
        fd = os.open(self.path, _FLAGS | os.O_APPEND, 0o644)
        os.close(self._fd)
        self._fd = fd
        self.size = os.fstat(fd).st_size
        self.reopens += 1
        return True

    def write(self, data: bytes | memoryview, writer: Writer = write_all) -> None:
        """Whole lines to FILE, rotating between lines as max_size asks; ``writer`` does
        each write (the CLI's can give up on a stalled FIFO)."""
        self.reopen_if_requested()
        view = memoryview(data).cast("B")
        limit = self.max_size
        while view:
            room = len(view) if limit is None else limit - self.size
            if len(view) <= room:
                cut = len(view)
            else:
                # the whole lines that still fit; none: a new file, unless this one is
                # empty (then the line is longer than max_size and goes in alone)
                cut = bytes(view[:max(room, 0)]).rfind(b"\n") + 1
                if cut == 0 and self.size:
                    self.rotate()
                    continue
                if cut == 0:
                    end = bytes(view).find(b"\n")
                    cut = len(view) if end < 0 else end + 1
            writer(self._fd, view[:cut])
            self.size += cut
            view = view[cut:]
            if view:
                self.rotate()

    def rotate(self) -> None:
        """FILE becomes FILE.1 (the older ones move up), and a new, empty FILE is opened."""
        self._shift()
        fd = os.open(self.path, _FLAGS | os.O_TRUNC, 0o644)
        os.close(self._fd)
        self._fd = fd
        self.size = 0
        self.rotations += 1

    def _shift(self) -> None:
        for index in range(self.max_files - 1, 0, -1):
            older = f"{self.path}.{index}"
            if os.path.lexists(older):
                os.replace(older, f"{self.path}.{index + 1}")
        if os.path.lexists(self.path):  # (someone may have moved it away)
            os.replace(self.path, f"{self.path}.1")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> EventFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _nonempty_file(path: str) -> bool:
    try:
        return os.stat(path).st_size > 0 and os.path.isfile(path)
    except OSError:
        return False
