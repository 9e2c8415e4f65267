"""Counting opens per path, per process and per error, a batch at a time (in C).

``Summary`` holds the counters of csrc/summary.c: feed it the raw batches a
``Tracer`` gives (``read_records``/``drain_records``) and ask for the top rows of
the interval or of the whole run. No Python object is made per event, so it
keeps up with what the ring buffer delivers. Memory is bounded: past
``max_paths`` distinct paths (or ``max_path_bytes`` of their text) and
``max_processes`` processes, a record counts in ``other``, so totals stay exact.

Library code: nothing here knows about terminals (the CLI renders).

    from echo_open import Summary, Tracer

    summary = Summary()
    with Tracer() as tracer:
        for _ in range(10):
            summary.feed(tracer.read_records(timeout=1.0))
    for row in summary.top(10, by="opens", cumulative=True).paths:
        print(row.opens, row.errors, row.path)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple

from echo_open._summary import ffi as _ffi
from echo_open._summary import lib as _c

from .flags import errno_name
from .layout import EVENT_SIZE, MAX_TAIL

if TYPE_CHECKING:  # only a hint: the CLI imports this module even where libbpf does not load
    from .loader import RecordBatch

MAX_KEYS = _c.EOS_MAX_KEYS
MAX_TOP = _c.EOS_MAX_TOP
ERRNO_SLOTS = _c.EOS_ERRNO_SLOTS


class SortKey(str, Enum):
    """The order of the rows: most opens, most failed opens, or by key (path, pid, errno)."""

    opens = "opens"
    errors = "errors"
    name = "name"


_C_SORT = {SortKey.opens: _c.EOS_BY_OPENS, SortKey.errors: _c.EOS_BY_ERRORS,
           SortKey.name: _c.EOS_BY_KEY}


class PathCount(NamedTuple):
    """Opens of one path (as passed to the syscall)."""

    path_bytes: bytes
    opens: int
    errors: int
    truncated: bool    # the path is cut at its end (longer than 4095 bytes)
    unreadable: bool   # the opener's memory could not be read: no path at all
    last_errno: int | None  # of the last failed open, None if none failed

    @property
    def path(self) -> str:
        """Decoded as ``os.fsdecode`` does: ``os.fsencode(row.path) == row.path_bytes``."""
        return os.fsdecode(self.path_bytes)

    @property
    def last_error(self) -> str | None:
        return None if self.last_errno is None else errno_name(self.last_errno)


class ProcessCount(NamedTuple):
    """Opens of one process: a pid with one name (a process that execs shows twice)."""

    pid: int
    comm_bytes: bytes
    opens: int
    errors: int
    last_errno: int | None

    @property
    def comm(self) -> str:
        return self.comm_bytes.decode("utf-8", "surrogateescape")

    @property
    def last_error(self) -> str | None:
        return None if self.last_errno is None else errno_name(self.last_errno)


class ErrorCount(NamedTuple):
    """Failed opens with one errno."""

    errno: int
    count: int

    @property
    def error(self) -> str:
        return errno_name(self.errno)


class Counts(NamedTuple):
    opens: int
    errors: int


@dataclass(frozen=True)
class Totals:
    """Counts of one scope (the interval or the whole run), and what the tables hold."""

    opens: int               # every record fed
    errors: int              # of which failed opens
    other_paths: Counts      # records whose path did not fit the path table
    other_processes: Counts  # records whose process did not fit the process table
    other_errnos: int        # failed opens with an errno the table has no slot for
    paths: int               # distinct keys held now
    processes: int
    path_bytes: int          # bytes of path text held now
    pruned_paths: int        # keys dropped to make room (see Summary.reset_interval)
    pruned_processes: int


@dataclass(frozen=True)
class Top:
    """The first rows of each table, in the order asked for, and the scope's totals."""

    paths: list[PathCount]
    processes: list[ProcessCount]
    errors: list[ErrorCount]
    totals: Totals


class Summary:
    """Counters of opens per path, process and errno, fed whole batches (see the module).

    ``feed(batch)`` counts a batch (``ValueError`` if its lengths disagree; then nothing
    of it is counted); ``top(n, by, cumulative)`` the first rows; ``totals()``;
    ``reset_interval()`` starts a new interval.
    """

    def __init__(self, *, max_paths: int = 65536, max_processes: int = 16384,
                 max_path_bytes: int = 16 << 20) -> None:
        for name, value in (("max_paths", max_paths), ("max_processes", max_processes)):
            if not 1 <= value <= MAX_KEYS:
                raise ValueError(f"{name} must be 1 to {MAX_KEYS}, not {value}")
        if not MAX_TAIL // 2 <= max_path_bytes <= 1 << 40:
            raise ValueError(f"max_path_bytes must hold a whole path ({MAX_TAIL // 2} bytes) "
                             f"and be at most 1 TiB, not {max_path_bytes}")
        self.max_paths = max_paths
        self.max_processes = max_processes
        self.max_path_bytes = max_path_bytes
        limits = _ffi.new("struct eos_limits *")
        limits.max_paths = max_paths
        limits.max_processes = max_processes
        limits.max_path_bytes = max_path_bytes
        state = _c.eos_new(limits)
        if state == _ffi.NULL:
            raise MemoryError("no memory for the summary's tables")
        self._state = _ffi.gc(state, _c.eos_free)
        self._rows = _ffi.new("struct eos_row[]", MAX_TOP)
        self._totals = _ffi.new("struct eos_totals *")
        self._bad = _ffi.new("uint64_t *")

    def feed(self, batch: RecordBatch) -> None:
        """Count every record of a batch (as ``Tracer.read_records`` returns it)."""
        count = len(batch)
        if not count:
            return
        if batch.head_size != EVENT_SIZE:
            raise ValueError(f"batch heads are {batch.head_size} bytes, events {EVENT_SIZE}")
        if getattr(batch.tail_sizes, "itemsize", None) != 4:
            raise ValueError("a batch's tail_sizes is an array('I')")
        status = _c.eos_feed(self._state, _ffi.from_buffer("char[]", batch.heads),
                             len(batch.heads), EVENT_SIZE,
                             _ffi.from_buffer("char[]", batch.tails), len(batch.tails),
                             _ffi.from_buffer("uint32_t[]", batch.tail_sizes), count, self._bad)
        if status != _c.EOS_FED:
            raise ValueError(f"record {self._bad[0]} of the batch lies outside its buffers or "
                             f"is longer than {MAX_TAIL} bytes after its head: nothing counted")

    def _rows_of(self, table: int, n: int, by: SortKey, cumulative: bool) -> list:
        got = _c.eos_top(self._state, table, _C_SORT[by], cumulative, self._rows, n)
        rows = []
        for i in range(got):
            row = self._rows[i]
            counts = row.total if cumulative else row.interval
            if table == _c.EOS_PATHS:
                rows.append(PathCount(
                    bytes(_ffi.buffer(row.key, row.key_len)), counts.opens, counts.errors,
                    bool(row.status & _c.EOS_PATH_TRUNCATED),
                    bool(row.status & _c.EOS_PATH_UNREADABLE),
                    row.number if counts.errors else None))
            elif table == _c.EOS_PROCESSES:
                rows.append(ProcessCount(row.pid, _ffi.string(row.comm, _c.EOS_COMM_LEN),
                                         counts.opens, counts.errors,
                                         row.number if counts.errors else None))
            else:
                rows.append(ErrorCount(row.number, counts.opens))
        return rows

    def top(self, n: int = 10, by: SortKey | str = SortKey.opens,
            cumulative: bool = False) -> Top:
        """The first ``n`` (at most MAX_TOP) paths, processes and errors by ``by``, counting
        this interval or (``cumulative``) the whole run; keys without opens are left out."""
        if not 0 <= n <= MAX_TOP:
            raise ValueError(f"n must be 0 to {MAX_TOP}, not {n}")
        by = SortKey(by)
        return Top(self._rows_of(_c.EOS_PATHS, n, by, cumulative),
                   self._rows_of(_c.EOS_PROCESSES, n, by, cumulative),
                   self._rows_of(_c.EOS_ERRORS, n, by, cumulative),
                   self.totals(cumulative))

    def totals(self, cumulative: bool = False) -> Totals:
        _c.eos_totals(self._state, self._totals)
        t = self._totals
        scope = t.total if cumulative else t.interval
        return Totals(scope.all.opens, scope.all.errors,
                      Counts(scope.other_paths.opens, scope.other_paths.errors),
                      Counts(scope.other_processes.opens, scope.other_processes.errors),
                      scope.other_errnos, t.paths, t.processes, t.path_bytes,
                      t.pruned_paths, t.pruned_processes)

    def reset_interval(self) -> None:
        """Start a new interval. A table more than half full first drops the keys that had
        no opens in the interval that ends (their whole-run counts go to ``other``): a
        long-running view keeps room for new keys; a table at most half full keeps all."""
        _c.eos_reset_interval(self._state)
