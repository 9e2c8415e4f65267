"""Turning events into text: the table and JSON lines. Pure functions of events.

Escaping rule (table): bytes 0x20-0x7e print as themselves, except the
backslash, which prints as ``\\\\``. ``\\n``, ``\\r`` and ``\\t`` print as those two
characters; every other control byte and every byte that is not valid UTF-8
prints as ``\\xNN``; valid UTF-8 that is not printable (C1 controls, bidi and
other format characters, non-ASCII spaces) prints as ``\\uNNNN``. So no path or
process name can move the cursor, end a line, or hide a character.

Resolved paths always start with ``/``; anything the tool adds goes before
that slash, where no file name can reach: ``(deleted)/tmp/x``,
``(anon)/memfd:x``, ``(mnt:4026532201)/etc/hostname`` (a file in another mount
namespace), ``...`` (a resolved path cut at its start), ``?`` (nothing
resolved).
"""

from __future__ import annotations

import base64
import datetime as _dt
import re
from json.encoder import encode_basestring_ascii as _json_string

from ..events import OpenEvent

_SAFE = re.compile(rb"[\x20-\x5b\x5d-\x7e]*")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(raw: bytes) -> str:
    """Bytes as text that cannot forge, hide or move anything on a terminal."""
    if _SAFE.fullmatch(raw):
        return raw.decode("ascii")
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif 0xDC80 <= code <= 0xDCFF:          # a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x7F or ch.isprintable():
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def resolved_text(event: OpenEvent, own_mntns: int) -> str:
    raw = event.resolved_bytes
    if raw is None:
        return "?"
    marks = []
    if event.resolved_anonymous:
        marks.append("(anon)")
    elif event.resolved_mntns and own_mntns and event.resolved_mntns != own_mntns:
        marks.append(f"(mnt:{event.resolved_mntns})")
    if event.resolved_deleted and not event.resolved_anonymous:
        marks.append("(deleted)")
    if event.resolved_truncated:
        marks.append("...")
    return "".join(marks) + escape(raw)


class _Clock:
    """Wall-clock text, the date part cached per second."""

    def __init__(self, fmt: str, utc: bool) -> None:
        self._fmt = fmt
        self._utc = utc
        self._second = -1
        self._prefix = ""

    def __call__(self, wall_ns: int) -> str:
        second, ns = divmod(wall_ns, 1_000_000_000)
        if second != self._second:
            tz = _dt.timezone.utc if self._utc else None
            stamp = _dt.datetime.fromtimestamp(second, tz)
            self._prefix = stamp.strftime(self._fmt)
            self._second = second
        return f"{self._prefix}.{ns // 1000:06d}"


class TableRenderer:
    """opensnoop-style columns; the path (or paths) last."""

    def __init__(self, *, timestamp: bool = False, uid: bool = False, extended: bool = False,
                 resolved: bool = False, own_mntns: int = 0) -> None:
        self.timestamp = timestamp
        self.uid = uid
        self.extended = extended
        self.resolved = resolved
        self.own_mntns = own_mntns
        self._clock = _Clock("%H:%M:%S", utc=False)

    def header(self) -> str:
        cols = []
        if self.timestamp:
            cols.append(f"{'TIME':<15} ")
        if self.uid:
            cols.append(f"{'UID':<7} ")
        cols.append(f"{'PID':<7} {'TID':<7} {'COMM':<16} {'FD':>3} {'ERR':<7} ")
        if self.extended:
            cols.append(f"{'SYSCALL':<8} {'FLAGS':<24} {'MODE':<6} ")
        if self.resolved and self.extended:
            cols.append("PATH -> RESOLVED")
        elif self.resolved:
            cols.append("RESOLVED")
        else:
            cols.append("PATH")
        return "".join(cols) + "\n"

    def lines(self, events: list[OpenEvent]) -> str:
        out = []
        clock = self._clock
        for e in events:
            parts = []
            if self.timestamp:
                parts.append(f"{clock(e.wall_ns):<15} ")
            if self.uid:
                parts.append(f"{e.uid:<7} ")
            ret = e.ret
            if ret >= 0:
                fd, err = ("-", "") if e.fixed_file else (ret, "")
            else:
                fd, err = -1, e.error
            comm = escape(e.comm_bytes)
            parts.append(f"{e.pid:<7} {e.tid:<7} {comm:<16} {fd:>3} {err:<7} ")
            if self.extended:
                parts.append(f"{e.syscall:<8} {e.flags_text:<24} {e.mode:06o} ")
            if self.resolved and self.extended:
                parts.append(f"{escape(e.path_bytes)} -> {resolved_text(e, self.own_mntns)}")
            elif self.resolved:
                parts.append(resolved_text(e, self.own_mntns))
            else:
                parts.append(escape(e.path_bytes))
            parts.append("\n")
            out.append("".join(parts))
        return "".join(out)


def _text_fields(raw: bytes | None) -> tuple[str, str]:
    """JSON text of a byte string, and of its base64 twin (null unless not UTF-8)."""
    if raw is None:
        return "null", "null"
    try:
        return _json_string(raw.decode("utf-8")), "null"
    except UnicodeDecodeError:
        return (_json_string(raw.decode("utf-8", "replace")),
                '"' + base64.b64encode(raw).decode("ascii") + '"')


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _quoted(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


def _null(value: object | None) -> str:
    return "null" if value is None else str(value)


# the keys, in order; README's schema and tests/test_json.py check this list
JSON_KEYS = (
    "ts_ns", "time", "pid", "tid", "ppid", "uid", "gid", "comm", "comm_b64", "syscall", "dfd",
    "flags", "flags_text", "mode", "resolve", "ret", "fd", "errno", "error", "latency_ns",
    "path", "path_b64", "truncated", "resolved", "resolved_b64", "resolved_truncated",
    "resolved_canonical", "resolved_deleted", "resolved_anonymous", "mntns", "resolved_mntns",
)


class JsonRenderer:
    """One JSON object per line. Strings are ASCII-only JSON; a path, resolved path or
    comm that is not valid UTF-8 also comes as base64 of its exact bytes (``*_b64``)."""

    def __init__(self) -> None:
        self._clock = _Clock("%Y-%m-%dT%H:%M:%S", utc=True)

    def header(self) -> str:
        return ""

    def lines(self, events: list[OpenEvent]) -> str:
        out = []
        clock = self._clock
        for e in events:
            comm, comm_b64 = _text_fields(e.comm_bytes)
            path, path_b64 = _text_fields(e.path_bytes)
            resolved, resolved_b64 = _text_fields(e.resolved_bytes)
            ret = e.ret
            error = e.error
            out.append(
                f'{{"ts_ns":{e.ts_ns},"time":"{clock(e.wall_ns)}Z","pid":{e.pid},'
                f'"tid":{e.tid},"ppid":{e.ppid},"uid":{e.uid},"gid":{e.gid},'
                f'"comm":{comm},"comm_b64":{comm_b64},"syscall":"{e.syscall}",'
                f'"dfd":{e.dfd},"flags":{e.flags},"flags_text":"{e.flags_text}",'
                f'"mode":{e.mode},"resolve":{e.resolve},"ret":{ret},"fd":{_null(e.fd)},'
                f'"errno":{_null(e.errno)},"error":{_quoted(error)},'
                f'"latency_ns":{e.latency_ns},"path":{path},"path_b64":{path_b64},'
                f'"truncated":{_bool(e.truncated)},"resolved":{resolved},'
                f'"resolved_b64":{resolved_b64},'
                f'"resolved_truncated":{_bool(e.resolved_truncated)},'
                f'"resolved_canonical":{_bool(e.resolved_canonical)},'
                f'"resolved_deleted":{_bool(e.resolved_deleted)},'
                f'"resolved_anonymous":{_bool(e.resolved_anonymous)},'
                f'"mntns":{e.mntns},"resolved_mntns":{e.resolved_mntns}}}\n')
        return "".join(out)
