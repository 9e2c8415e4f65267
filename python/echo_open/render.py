"""Turning events into text: the table and JSON lines. Pure functions of events.

Two ways, one output: ``lines(events)`` formats decoded OpenEvents in Python
(the reference, and what the library's users call); ``render_batch(batch)``
formats a raw ring-buffer batch in C (csrc/render.c, the CLI's hot path) and
hands back to ``lines`` only the records C leaves alone (non-ASCII bytes, paths
to normalise). The tests hold the two to the same bytes.

Escaping rule (table): bytes 0x20-0x7e print as themselves, except the
backslash, which prints as ``\\\\``. ``\\n``, ``\\r`` and ``\\t`` print as those two
characters; every other control byte and every byte that is not valid UTF-8
prints as ``\\xNN``; valid UTF-8 that is not printable (C1 controls, bidi and
other format characters, non-ASCII spaces) prints as ``\\uNNNN``. So no path or
process name can move the cursor, end a line, or hide a character. A field that other
fields follow on its line (the process name; the path before `` -> `` with ``-e -F``) also
prints a space as ``\\x20``, so columns split on white space and the first `` -> `` is the
separator; a path cut at its end is followed by ``\\...``, which no file name prints.

Resolved paths always start with ``/``; anything the tool adds goes before
that slash, where no file name can reach: ``(deleted)/tmp/x``,
``(anon)/memfd:x``, ``(mnt:4026532201)/etc/hostname`` (a file in another mount
namespace), ``(unsure)/x`` (resolved through an fd number another thread could have
reused), ``...`` (a resolved path cut at its start), ``?`` (nothing resolved).
"""

from __future__ import annotations

import base64
import datetime as _dt
import os
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_string
from operator import attrgetter

from echo_open._render import ffi as _ffi
from echo_open._render import lib as _c

from .cgroups import path_of as _cgroup_path
from .containers import container_of
from .events import SYSCALL_NAMES, OpenEvent, decode_batch
from .flags import errno_name, flags_text_table
from .layout import EVENT_FIELDS, EVENT_SIZE, EVENT_STRUCT, MAX_TAIL
from .loader import RecordBatch

# bytes that print as themselves; deleting them from a path leaves nothing when it is
# safe (bytes.translate scans ~3x faster than a regular expression)
_SAFE = bytes(range(0x20, 0x7F)).replace(b"\\", b"")
_SAFE_IN_FIELD = _SAFE.replace(b" ", b"")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# after a path cut at its end; a file name's backslash prints as two, so it cannot forge it
CUT_MARK = "\\..."


def escape(raw: bytes, field: bool = False) -> str:
    """Bytes as text that cannot forge, hide or move anything on a terminal. A field
    (followed by others on its line) also escapes spaces, which would read as separators."""
    if not raw.translate(None, _SAFE_IN_FIELD if field else _SAFE):
        return raw.decode("ascii")
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif field and ch == " ":
            out.append("\\x20")
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


def resolved_marks(event: OpenEvent, own_mntns: int) -> str:
    """What goes before a resolved path's leading slash (see the module's docstring)."""
    marks = []
    if event.resolved_anonymous:
        marks.append("(anon)")
    elif event.resolved_mntns and own_mntns and event.resolved_mntns != own_mntns:
        marks.append(f"(mnt:{event.resolved_mntns})")
    if event.resolved_deleted and not event.resolved_anonymous:
        marks.append("(deleted)")
    if event.resolved_unsure:
        marks.append("(unsure)")
    if event.resolved_truncated:
        marks.append("...")
    return "".join(marks)


def resolved_text(event: OpenEvent, own_mntns: int) -> str:
    """The resolved path as the table shows it: marks, then the escaped path."""
    raw = event.resolved_bytes
    return "?" if raw is None else resolved_marks(event, own_mntns) + escape(raw)


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


_MEMO_LIMIT = 4096


class _Memo:
    """The text made for an event's key, made once; forgotten past a bound."""

    __slots__ = ("key", "make", "texts")

    def __init__(self, key: Callable[[OpenEvent], Hashable],
                 make: Callable[[OpenEvent], str]) -> None:
        self.key = key
        self.make = make
        self.texts: dict[Hashable, str] = {}

    def __call__(self, event: OpenEvent) -> str:
        key = self.key(event)
        text = self.texts.get(key)
        if text is None:
            if len(self.texts) >= _MEMO_LIMIT:
                self.texts.clear()
            text = self.texts[key] = self.make(event)
        return text


_OUT_BYTES = 4 << 20


def _set_name(field, name: str) -> None:
    raw = name.encode("ascii")
    if len(raw) >= _c.EOR_NAME_LEN:
        raise ValueError(f"name too long for the C formatter: {name}")
    field[0:len(raw)] = raw


_I_CGROUP_ID = EVENT_FIELDS.index("cgroup_id")


def container_column(event: OpenEvent) -> str:
    """The table's CONTAINER text: the short id (12 hex digits; a machine name whole),
    "-" outside containers."""
    found = event.container_info
    return "-" if found is None else escape(found.short_id.encode(), field=True)


def _fill_cgroup_slot(slot, cgroup_id: int) -> None:
    """What the C formatter shows for a cgroup id, in its cache slot."""
    path = _cgroup_path(cgroup_id)
    container = container_of(path)
    raw_path = b"" if path is None else os.fsencode(path)
    raw_id = b"" if container is None else container.id.encode("utf-8", "surrogateescape")
    short = b"" if container is None else container.short_id.encode("utf-8", "surrogateescape")
    slot.id = cgroup_id
    slot.has_path = path is not None
    slot.has_container = container is not None
    # C escapes ASCII only; anything else (or too long for the slot) Python renders
    if (len(raw_path) > _c.EOR_CGROUP_PATH_LEN or len(raw_id) > _c.EOR_CONTAINER_LEN
            or not raw_path.isascii() or not raw_id.isascii()):
        slot.state = 2
        slot.path_len = slot.container_len = slot.short_len = 0
        return
    slot.state = 1
    slot.path[0:len(raw_path)] = raw_path
    slot.path_len = len(raw_path)
    slot.container[0:len(raw_id)] = raw_id
    slot.container_len = len(raw_id)
    slot.short_len = len(short)


class _BatchRenderer:
    """``render_batch``: a raw batch to text through csrc/render.c."""

    _options = None

    def lines(self, events: list[OpenEvent]) -> str:
        raise NotImplementedError

    def _configure(self, options) -> None:
        """Set the options that belong to this kind of output."""
        raise NotImplementedError

    def _c_options(self):
        if self._options is None:
            options = _ffi.new("struct eor_options *")
            access, flags = flags_text_table()
            for mode, name in enumerate(access):
                _set_name(options.access_names[mode], name)
            for i, (name, value) in enumerate(flags):
                _set_name(options.flag_names[i].name, name)
                options.flag_names[i].value = value
            options.n_flag_names = len(flags)
            for number in range(_c.EOR_ERRNO_NAMES):
                _set_name(options.errno_names[number], errno_name(number))
            for number, name in SYSCALL_NAMES.items():
                _set_name(options.syscall_names[number], name)
            options.clock_second = -1
            self._configure(options)
            self._options = options
            self._out = _ffi.new("char[]", _OUT_BYTES)
            self._cursor = _ffi.new("struct eor_cursor *")
        return self._options

    def render_batch(self, batch: RecordBatch, wall_offset_ns: int = 0) -> Iterator[memoryview]:
        """The batch's text as UTF-8, in chunks; each is valid until the next is asked for."""
        count = len(batch)
        if not count:
            return
        if batch.head_size != EVENT_SIZE:
            raise ValueError(f"batch heads are {batch.head_size} bytes, events {EVENT_SIZE}")
        options = self._c_options()
        options.wall_offset_ns = wall_offset_ns
        out, cursor = self._out, self._cursor
        cursor.record = cursor.tail_offset = cursor.out_len = 0
        if getattr(batch.tail_sizes, "itemsize", None) != 4:
            raise ValueError("a batch's tail_sizes is an array('I')")
        heads = _ffi.from_buffer("char[]", batch.heads)
        tails = _ffi.from_buffer("char[]", batch.tails)
        sizes = _ffi.from_buffer("uint32_t[]", batch.tail_sizes)
        events = None
        while True:
            stop = _c.eor_render(options, heads, len(heads), EVENT_SIZE, tails, len(tails),
                                 sizes, count, cursor, out, _OUT_BYTES)
            if stop == _c.EOR_DONE:
                break
            if stop == _c.EOR_CGROUP:
                # a cgroup not seen yet (or evicted): found once, then C goes on
                head = EVENT_STRUCT.unpack_from(batch.heads, cursor.record * EVENT_SIZE)
                cgroup_id = head[_I_CGROUP_ID]
                _fill_cgroup_slot(options.cgroups[cgroup_id % _c.EOR_CGROUP_SLOTS], cgroup_id)
                continue
            if stop == _c.EOR_BAD:
                raise ValueError(f"record {cursor.record} of the batch lies outside its "
                                 f"buffers, is longer than {MAX_TAIL} bytes after its head, "
                                 f"or its path lengths disagree with its size")
            if stop == _c.EOR_SLOW:
                # one record for the reference renderer; the rest go on in C
                if events is None:
                    events = decode_batch(batch, wall_offset_ns)
                line = self.lines([events[cursor.record]]).encode("utf-8")
                if _OUT_BYTES - cursor.out_len < len(line):
                    yield memoryview(_ffi.buffer(out, cursor.out_len))
                    cursor.out_len = 0
                _ffi.memmove(out + cursor.out_len, line, len(line))
                cursor.out_len += len(line)
                cursor.tail_offset += batch.tail_sizes[cursor.record]
                cursor.record += 1
            else:  # EOR_FULL
                yield memoryview(_ffi.buffer(out, cursor.out_len))
                cursor.out_len = 0
        if cursor.out_len:
            yield memoryview(_ffi.buffer(out, cursor.out_len))


class TableRenderer(_BatchRenderer):
    """opensnoop-style columns; the path (or paths) last."""

    def __init__(self, *, timestamp: bool = False, uid: bool = False, extended: bool = False,
                 resolved: bool = False, own_mntns: int = 0,
                 print_container: bool = False) -> None:
        self.timestamp = timestamp
        self.uid = uid
        self.print_container = print_container
        self.extended = extended
        self.resolved = resolved
        self.own_mntns = own_mntns
        self._clock = _Clock("%H:%M:%S", utc=False)
        # the columns before the path repeat (a process opening with the same
        # flags and outcome): formatted once per distinct combination
        self._columns = _Memo(attrgetter("tid", "pid", "uid", "comm_raw", "ret", "status",
                                         "syscall_id", "flags", "mode", "cgroup_id"),
                              self._columns_text)
        self._marks = _Memo(attrgetter("status", "resolved_how", "resolved_mntns"),
                            lambda e: resolved_marks(e, own_mntns))

    def header(self) -> str:
        cols = []
        if self.timestamp:
            cols.append(f"{'TIME':<15} ")
        if self.uid:
            cols.append(f"{'UID':<7} ")
        if self.print_container:
            cols.append(f"{'CONTAINER':<12} ")
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

    def _configure(self, options) -> None:
        options.timestamp = self.timestamp
        options.uid = self.uid
        options.print_container = self.print_container
        options.extended = self.extended
        options.resolved = self.resolved
        options.own_mntns = self.own_mntns

    def _columns_text(self, e: OpenEvent) -> str:
        uid = f"{e.uid:<7} " if self.uid else ""
        if self.print_container:
            uid += f"{container_column(e):<12} "
        if e.ret < 0:
            outcome = f"{-1:>3} {e.error:<7} "
        else:
            outcome = f"{'-' if e.fixed_file else e.ret:>3} {'':<7} "
        how = f"{e.syscall:<8} {e.flags_text:<24} {e.mode:06o} " if self.extended else ""
        return f"{uid}{e.pid:<7} {e.tid:<7} {escape(e.comm_bytes, field=True):<16} {outcome}{how}"

    def lines(self, events: list[OpenEvent]) -> str:
        columns = self._columns
        clock = self._clock if self.timestamp else None
        marks = self._marks if self.resolved else None
        out = []
        append = out.append
        for e in events:
            line = columns(e)
            path = e.path_bytes
            if marks is None:
                text = escape(path) + (CUT_MARK if e.truncated else "")
            else:
                raw = e.resolved_bytes
                resolved = "?" if raw is None else marks(e) + escape(raw)
                if self.extended:
                    # the path is a field before " -> ": the first " -> " is the separator
                    cut = CUT_MARK if e.truncated else ""
                    text = f"{escape(path, field=True)}{cut} -> {resolved}"
                else:
                    text = resolved
            if clock is not None:
                append(f"{clock(e.wall_ns):<15} {line}{text}\n")
            else:
                append(f"{line}{text}\n")
        return "".join(out)


_JSON_SAFE = _SAFE.replace(b'"', b"")  # and that JSON takes unescaped


def _text_fields(raw: bytes | None) -> tuple[str, str]:
    """JSON text of a byte string, and of its base64 twin (null unless not UTF-8)."""
    if raw is None:
        return "null", "null"
    if not raw.translate(None, _JSON_SAFE):
        return f'"{raw.decode("ascii")}"', "null"
    try:
        return _json_string(raw.decode("utf-8")), "null"
    except UnicodeDecodeError:
        return (_json_string(raw.decode("utf-8", "replace")),
                '"' + base64.b64encode(raw).decode("ascii") + '"')


def _optional_text(text: str | None) -> str:
    """A name the system gave (a cgroup path, a container id) as JSON text, or null."""
    return "null" if text is None else _text_fields(os.fsencode(text))[0]


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _null(value: object | None) -> str:
    return "null" if value is None else f"{value}"


def _quoted(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


@dataclass(frozen=True)
class JsonField:
    """One key of a JSON line: how Python writes its value (None: the wall-clock time,
    from the renderer's clock), whether the value repeats from one open to the next
    of a process (then its text is made once and memoised). C writes the value by the
    id ``EOR_JSON_<KEY>`` in csrc/render.c."""

    key: str
    value: Callable[[OpenEvent], str] | None
    repeats: bool = False


def _path_text(e: OpenEvent) -> tuple[str, str]:
    raw = e.path_bytes
    # the common case inline: printable ASCII needs no escaping and no base64
    if not raw.translate(None, _JSON_SAFE):
        return f'"{raw.decode("ascii")}"', "null"
    return _text_fields(raw)


def _resolved_text(e: OpenEvent) -> tuple[str, str]:
    raw = e.resolved_bytes
    return _path_text(e) if raw == e.path_bytes else _text_fields(raw)


# The keys of a JSON line, in order: the one table both writers follow (the README's
# schema lists the same keys; the tests check it).
JSON_FIELDS: tuple[JsonField, ...] = (
    JsonField("ts_ns", lambda e: f"{e.ts_ns}"),
    JsonField("time", None),
    JsonField("latency_ns", lambda e: f"{e.latency_ns}"),
    JsonField("pid", lambda e: f"{e.pid}", repeats=True),
    JsonField("tid", lambda e: f"{e.tid}", repeats=True),
    JsonField("ppid", lambda e: f"{e.ppid}", repeats=True),
    JsonField("uid", lambda e: f"{e.uid}", repeats=True),
    JsonField("gid", lambda e: f"{e.gid}", repeats=True),
    JsonField("mntns", lambda e: f"{e.mntns}", repeats=True),
    JsonField("pidns", lambda e: f"{e.pidns}", repeats=True),
    JsonField("netns", lambda e: f"{e.netns}", repeats=True),
    JsonField("userns", lambda e: f"{e.userns}", repeats=True),
    JsonField("nspid", lambda e: f"{e.nspid}", repeats=True),
    JsonField("cgroup_id", lambda e: f"{e.cgroup_id}", repeats=True),
    JsonField("cgroup", lambda e: _optional_text(e.cgroup), repeats=True),
    JsonField("container", lambda e: _optional_text(e.container), repeats=True),
    JsonField("comm", lambda e: _text_fields(e.comm_bytes)[0], repeats=True),
    JsonField("comm_b64", lambda e: _text_fields(e.comm_bytes)[1], repeats=True),
    JsonField("syscall", lambda e: f'"{e.syscall}"', repeats=True),
    JsonField("dfd", lambda e: f"{e.dfd}", repeats=True),
    JsonField("flags", lambda e: f"{e.flags}", repeats=True),
    JsonField("flags_text", lambda e: f'"{e.flags_text}"', repeats=True),
    JsonField("mode", lambda e: f"{e.mode}", repeats=True),
    JsonField("resolve", lambda e: f"{e.resolve}", repeats=True),
    JsonField("ret", lambda e: f"{e.ret}", repeats=True),
    JsonField("fd", lambda e: _null(e.fd), repeats=True),
    JsonField("errno", lambda e: _null(e.errno), repeats=True),
    JsonField("error", lambda e: _quoted(e.error), repeats=True),
    JsonField("truncated", lambda e: _bool(e.truncated), repeats=True),
    JsonField("resolved_truncated", lambda e: _bool(e.resolved_truncated), repeats=True),
    JsonField("resolved_canonical", lambda e: _bool(e.resolved_canonical), repeats=True),
    JsonField("resolved_deleted", lambda e: _bool(e.resolved_deleted), repeats=True),
    JsonField("resolved_anonymous", lambda e: _bool(e.resolved_anonymous), repeats=True),
    JsonField("resolved_unsure", lambda e: _bool(e.resolved_unsure), repeats=True),
    JsonField("resolved_mntns", lambda e: f"{e.resolved_mntns}", repeats=True),
    JsonField("path", lambda e: _path_text(e)[0]),
    JsonField("path_b64", lambda e: _path_text(e)[1]),
    JsonField("resolved", lambda e: _resolved_text(e)[0]),
    JsonField("resolved_b64", lambda e: _resolved_text(e)[1]),
)
JSON_KEYS = tuple(field.key for field in JSON_FIELDS)
# what a memoised run of repeating fields depends on
_REPEAT_KEY = attrgetter("tid", "pid", "ppid", "uid", "gid", "mntns", "comm_raw", "syscall_id",
                         "dfd", "flags", "mode", "resolve", "ret", "status", "resolved_how",
                         "resolved_mntns", "pidns", "netns", "userns", "nspid", "cgroup_id")


def _json_key_text(index: int, key: str) -> str:
    return ("{" if index == 0 else ",") + f'"{key}":'


def _json_segments(clock: _Clock) -> list[Callable[[OpenEvent], str]]:
    """The line as a list of writers, each of a run of keys: runs of repeating
    fields are memoised as one text."""
    segments: list[Callable[[OpenEvent], str]] = []
    run: list[tuple[str, JsonField]] = []

    def close_run() -> None:
        if run:
            fields = tuple(run)
            segments.append(_Memo(_REPEAT_KEY, lambda e: "".join(
                key + field.value(e) for key, field in fields)))
            run.clear()

    for index, field in enumerate(JSON_FIELDS):
        key = _json_key_text(index, field.key)
        if field.repeats:
            run.append((key, field))
            continue
        close_run()
        if field.value is None:
            segments.append(lambda e, key=key: f'{key}"{clock(e.wall_ns)}Z"')
        else:
            segments.append(lambda e, key=key, value=field.value: key + value(e))
    close_run()
    return segments


class JsonRenderer(_BatchRenderer):
    """One JSON object per line, keys as in JSON_FIELDS. Strings are ASCII-only JSON; a
    path, resolved path or comm that is not valid UTF-8 also comes as base64 of its exact
    bytes (``*_b64``)."""

    def __init__(self) -> None:
        self._segments = _json_segments(_Clock("%Y-%m-%dT%H:%M:%S", utc=True))

    def header(self) -> str:
        return ""

    def _configure(self, options) -> None:
        options.json = 1
        if len(JSON_FIELDS) > _c.EOR_JSON_MAX_FIELDS:
            raise ValueError("more JSON keys than the C formatter takes")
        for index, field in enumerate(JSON_FIELDS):
            options.json_fields[index] = getattr(_c, f"EOR_JSON_{field.key.upper()}")
            key = _json_key_text(index, field.key).encode("ascii")
            if len(key) >= _c.EOR_JSON_KEY_LEN:
                raise ValueError(f"JSON key too long for the C formatter: {field.key}")
            options.json_keys[index][0:len(key)] = key
            options.json_key_len[index] = len(key)
        options.n_json_fields = len(JSON_FIELDS)

    def lines(self, events: list[OpenEvent]) -> str:
        segments = self._segments
        return "".join("".join([segment(e) for segment in segments]) + "}\n" for e in events)
