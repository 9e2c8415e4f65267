"""OpenEvent, and decoding a ring-buffer batch into events a batch at a time."""

from __future__ import annotations

import datetime as _dt
import gc
import posixpath
from collections import namedtuple

from echo_open._layout import lib as _c

from .containers import Container, container_of
from .flags import errno_name, flags_text
from .layout import EVENT_FIELDS, EVENT_SIZE, EVENT_STRUCT, MAX_TAIL
from .loader import RecordBatch

SYSCALL_NAMES = {
    _c.EO_SYS_OPEN: "open",
    _c.EO_SYS_OPENAT: "openat",
    _c.EO_SYS_OPENAT2: "openat2",
    _c.EO_SYS_CREAT: "creat",
    _c.EO_SYS_OPEN_BY_HANDLE_AT: "open_by_handle_at",
    _c.EO_SYS_IO_URING: "io_uring",
}

_ST_PATH_TRUNCATED = _c.EO_ST_PATH_TRUNCATED
_ST_PATH_FAULT = _c.EO_ST_PATH_FAULT
_ST_RESOLVED_TRUNCATED = _c.EO_ST_RESOLVED_TRUNCATED
_ST_RESOLVED_DELETED = _c.EO_ST_RESOLVED_DELETED
_ST_RESOLVED_ANON = _c.EO_ST_RESOLVED_ANON
_ST_FIXED_FILE = _c.EO_ST_FIXED_FILE
_ST_RESOLVED_UNSURE = _c.EO_ST_RESOLVED_UNSURE
_RESOLVED_FILE = _c.EO_RESOLVED_FILE
_RESOLVED_JOINED = _c.EO_RESOLVED_JOINED

# OpenEvent is the unpacked header followed by these; field names as in echo_open.h,
# except the two that would shadow a property
_RENAMED = {"syscall": "syscall_id", "comm": "comm_raw"}
_FIELDS = (*(_RENAMED.get(name, name) for name in EVENT_FIELDS),
           "path_bytes", "resolved_raw", "wall_ns")
# a namedtuple's fields are read by C-level descriptors, as fast as slots
_EventFields = namedtuple("_EventFields", _FIELDS)


def _normalize(path: bytes) -> bytes:
    """Lexical normalisation of an absolute path ('.', '..', '//')."""
    if b"/." not in path and b"//" not in path and (len(path) == 1 or path[-1:] != b"/"):
        return path
    norm = posixpath.normpath(path)
    return b"/" + norm.lstrip(b"/")


class OpenEvent(_EventFields):
    """One open, as the kernel saw it (immutable).

    Paths are bytes as the kernel has them (``path_bytes``, ``resolved_bytes``);
    ``path`` and ``resolved`` decode them the way ``os.fsdecode`` does, so
    ``os.fsencode(event.path) == event.path_bytes``.

    A named tuple underneath: decoding a batch makes one object per event.
    """

    __slots__ = ()

    # the fields, from _EventFields
    ts_ns: int
    latency_ns: int
    ret: int
    flags: int
    resolve: int
    pid: int
    tid: int
    ppid: int
    uid: int
    gid: int
    dfd: int
    mode: int
    mntns: int
    resolved_mntns: int
    path_len: int
    resolved_len: int
    syscall_id: int
    resolved_how: int
    status: int
    comm_raw: bytes
    pidns: int
    netns: int
    userns: int
    nspid: int
    cgroup_id: int
    path_bytes: bytes
    resolved_raw: bytes
    wall_ns: int

    @property
    def comm_bytes(self) -> bytes:
        """The process name, up to the first NUL (stale bytes may follow it)."""
        raw = self.comm_raw
        nul = raw.find(b"\0")
        return raw if nul < 0 else raw[:nul]

    @property
    def comm(self) -> str:
        return self.comm_bytes.decode("utf-8", "surrogateescape")

    # ---- where it ran: namespaces and cgroup

    @property
    def cgroup(self) -> str | None:
        """The opener's cgroup v2 path ("/system.slice/x.scope"), found from
        ``cgroup_id`` in the cgroup2 hierarchy (cached); None if it is not there (gone,
        or no cgroup2 mount shows it). The root cgroup is "/" even without a mount."""
        from .cgroups import path_of

        return path_of(self.cgroup_id)

    @property
    def container_info(self) -> Container | None:
        """The container the opener's cgroup belongs to (containers.container_of)."""
        return container_of(self.cgroup)

    @property
    def container(self) -> str | None:
        """The container's full id (64 hex digits; an nspawn machine's name), or None
        outside containers."""
        found = container_of(self.cgroup)
        return None if found is None else found.id

    # ---- result

    @property
    def ok(self) -> bool:
        return self.ret >= 0

    @property
    def fd(self) -> int | None:
        """The new descriptor (None if the open failed or went to an io_uring fixed slot)."""
        return self.ret if self.ret >= 0 and not self.fixed_file else None

    @property
    def errno(self) -> int | None:
        return -self.ret if self.ret < 0 else None

    @property
    def error(self) -> str | None:
        """``ENOENT`` etc., None when the open succeeded."""
        return errno_name(-self.ret) if self.ret < 0 else None

    # ---- what was opened

    @property
    def syscall(self) -> str:
        return SYSCALL_NAMES.get(self.syscall_id, str(self.syscall_id))

    @property
    def flags_text(self) -> str:
        return flags_text(self.flags)

    @property
    def path(self) -> str:
        return self.path_bytes.decode("utf-8", "surrogateescape")

    @property
    def truncated(self) -> bool:
        """The path was longer than 4095 bytes and is cut."""
        return bool(self.status & _ST_PATH_TRUNCATED)

    @property
    def path_unreadable(self) -> bool:
        return bool(self.status & _ST_PATH_FAULT)

    @property
    def fixed_file(self) -> bool:
        """An io_uring open into a fixed (direct) descriptor slot."""
        return bool(self.status & _ST_FIXED_FILE)

    @property
    def resolved_bytes(self) -> bytes | None:
        """The absolute path, from the root of mount namespace ``resolved_mntns``.

        For a successful open: the opened file itself (canonical), walked to the
        namespace root (a chroot does not stop it). For a failed one: the
        directory the path was looked up from (the dfd's, the cwd, or for an
        absolute path the process root) joined with the path, normalised
        lexically (not canonical) unless it was cut. When the kernel side
        resolved nothing, an absolute path as passed (normalised) if it arrived
        whole, else None.
        """
        raw = self.resolved_raw
        if self.resolved_how == _RESOLVED_FILE:
            return raw
        if self.resolved_how == _RESOLVED_JOINED:
            # a cut path's leading '..' would pop what was cut off: leave it as built
            return raw if self.resolved_truncated else _normalize(raw)
        path = self.path_bytes
        if path.startswith(b"/") and not self.status & (_ST_PATH_TRUNCATED | _ST_PATH_FAULT):
            return _normalize(path)
        return None

    @property
    def resolved(self) -> str | None:
        raw = self.resolved_bytes
        return None if raw is None else raw.decode("utf-8", "surrogateescape")

    @property
    def resolved_canonical(self) -> bool:
        """True when ``resolved`` names the opened file itself (symlinks, '..' and mounts done)."""
        return self.resolved_how == _RESOLVED_FILE

    @property
    def resolved_truncated(self) -> bool:
        """The resolved path was longer than 4095 bytes; it holds the leaf end."""
        return bool(self.status & _ST_RESOLVED_TRUNCATED)

    @property
    def resolved_deleted(self) -> bool:
        return bool(self.status & _ST_RESOLVED_DELETED)

    @property
    def resolved_anonymous(self) -> bool:
        """On an internal mount (pipe, socket, memfd, anon inode): no path in any namespace."""
        return bool(self.status & _ST_RESOLVED_ANON)

    @property
    def resolved_unsure(self) -> bool:
        """Resolved through an fd number (the new fd, or a failed open's dirfd) of a table
        the opener shares with other tasks (its threads): one of them could have closed
        that number and opened another file into it before the kernel side read it, so
        ``resolved`` may name that file. Never set for a process with a table of its own."""
        return bool(self.status & _ST_RESOLVED_UNSURE)

    # ---- time

    @property
    def time(self) -> _dt.datetime:
        """Wall-clock time of the syscall's entry, UTC."""
        seconds, ns = divmod(self.wall_ns, 1_000_000_000)
        return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).replace(
            microsecond=ns // 1000)

    def __repr__(self) -> str:
        outcome = f"fd={self.ret}" if self.ret >= 0 else self.error
        return (f"<OpenEvent {self.syscall} pid={self.pid} comm={self.comm!r} "
                f"{outcome} path={self.path!r}>")



_I_PATH_LEN = EVENT_FIELDS.index("path_len")
_I_RESOLVED_LEN = EVENT_FIELDS.index("resolved_len")
_I_TS = EVENT_FIELDS.index("ts_ns")


def decode_batch(batch: RecordBatch, wall_offset_ns: int = 0) -> list[OpenEvent]:
    """Decode every record of a ring-buffer batch.

    ``wall_offset_ns`` turns the kernel's CLOCK_MONOTONIC into wall-clock time.
    """
    if batch.head_size != EVENT_SIZE:
        raise ValueError(f"batch heads are {batch.head_size} bytes, events {EVENT_SIZE}")
    if len(batch.heads) != len(batch) * EVENT_SIZE:
        raise ValueError(f"the batch has {len(batch)} tail sizes and {len(batch.heads)} bytes "
                         f"of {EVENT_SIZE}-byte heads")
    if len(batch) and not 0 <= min(batch.tail_sizes) <= max(batch.tail_sizes) <= MAX_TAIL:
        raise ValueError(f"a record of the batch has a tail size outside 0..{MAX_TAIL}")
    # thousands of new tuples per call would set off cyclic-GC passes over every
    # young object (a third of the decode time); these tuples hold no cycles
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _decode(batch, wall_offset_ns)
    finally:
        if collecting:
            gc.enable()


def _decode(batch: RecordBatch, wall_offset_ns: int) -> list[OpenEvent]:
    events: list[OpenEvent] = []
    append = events.append
    new = tuple.__new__
    tails = batch.tails
    offset = 0
    i_path, i_resolved, i_ts = _I_PATH_LEN, _I_RESOLVED_LEN, _I_TS
    # the tail is the path, then the resolved path
    heads = EVENT_STRUCT.iter_unpack(batch.heads)
    for fields, tail_size in zip(heads, batch.tail_sizes, strict=True):
        path_len = fields[i_path]
        if path_len + fields[i_resolved] != tail_size:
            # a path read past its record would show the next record's bytes as its own
            raise ValueError(f"record {len(events)} of the batch: its path and resolved "
                             f"lengths ({path_len} + {fields[i_resolved]}) are not its "
                             f"{tail_size}-byte tail")
        path_end = offset + path_len
        # concatenation: faster than (*fields, ...) on this hot path
        append(new(OpenEvent, fields + (tails[offset:path_end],  # noqa: RUF005
                                        tails[path_end:offset + tail_size],
                                        fields[i_ts] + wall_offset_ns)))
        offset += tail_size
    if offset > len(tails):
        raise ValueError(f"the batch's tail sizes add up to {offset} bytes, its tails hold "
                         f"{len(tails)}")
    return events
