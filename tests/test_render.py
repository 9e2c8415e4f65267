"""Decoding and formatting, pure: records built in memory, no kernel needed."""

from __future__ import annotations

import base64
import json

import pytest

from echo_open._layout import lib as c
from echo_open.events import decode_batch
from echo_open.layout import EVENT_FIELDS, EVENT_SIZE, EVENT_STRUCT
from echo_open.loader import RecordBatch
from echo_open.render import JSON_KEYS, JsonRenderer, TableRenderer, escape


def make_event(path: bytes, resolved: bytes = b"", **fields):
    values = {name: 0 for name in EVENT_FIELDS}
    values.update(ts_ns=1_000, pid=42, tid=43, comm=b"cat\0stale", ret=3,
                  syscall=c.EO_SYS_OPENAT, dfd=-100)
    values.update(fields)
    values["path_len"] = len(path)
    values["resolved_len"] = len(resolved)
    if resolved and "resolved_how" not in fields:
        values["resolved_how"] = c.EO_RESOLVED_FILE
    head = EVENT_STRUCT.pack(*(values[name] for name in EVENT_FIELDS))
    batch = RecordBatch(EVENT_SIZE, head, path + resolved, [len(path) + len(resolved)])
    (event,) = decode_batch(batch, wall_offset_ns=1_700_000_000_000_000_000)
    return event


@pytest.mark.parametrize(("raw", "shown"), [
    (b"/etc/hostname", "/etc/hostname"),
    (b"a\nb", "a\\nb"),
    (b"a\rb\tc", "a\\rb\\tc"),
    (b"\x1b[2Jx", "\\x1b[2Jx"),
    (b"back\\slash", "back\\\\slash"),
    (b"\xff\xfe", "\\xff\\xfe"),
    ("caf\u00e9".encode(), "caf\u00e9"),
    ("rtl\u202efdp.exe".encode(), "rtl\\u202efdp.exe"),
    ("c1\u0085".encode(), "c1\\u0085"),
    (b"del\x7f", "del\\x7f"),
])
def test_escape(raw, shown):
    assert escape(raw) == shown


def test_comm_is_cut_at_the_first_nul():
    assert make_event(b"/x").comm == "cat"


def test_table_row_and_error_names():
    ok = make_event(b"/etc/hostname")
    failed = make_event(b"/nope", ret=-2)
    text = TableRenderer().lines([ok, failed])
    first, second = text.splitlines()
    assert first.split() == ["42", "43", "cat", "3", "/etc/hostname"]
    assert second.split() == ["42", "43", "cat", "-1", "ENOENT", "/nope"]


def test_resolved_markers_sit_before_the_slash():
    renderer = TableRenderer(resolved=True, own_mntns=7)
    deleted = make_event(b"f", b"/tmp/f", status=c.EO_ST_RESOLVED_DELETED, resolved_mntns=7)
    foreign = make_event(b"f", b"/etc/f", resolved_mntns=9)
    anon = make_event(b"/proc/self/fd/3", b"/memfd:x",
                      status=c.EO_ST_RESOLVED_ANON | c.EO_ST_RESOLVED_DELETED)
    cut = make_event(b"f", b"/deep/f", status=c.EO_ST_RESOLVED_TRUNCATED, resolved_mntns=7)
    none = make_event(b"relative", ret=-2)
    rows = [line.split()[-1] for line in renderer.lines([deleted, foreign, anon, cut, none])
            .splitlines()]
    assert rows == ["(deleted)/tmp/f", "(mnt:9)/etc/f", "(anon)/memfd:x", ".../deep/f", "?"]


def test_failed_relative_open_is_joined_and_normalised():
    event = make_event(b"../x/./y", b"/a/b/../x/./y", ret=-2,
                       resolved_how=c.EO_RESOLVED_JOINED)
    assert event.resolved == "/a/x/y"
    assert not event.resolved_canonical


def test_json_round_trips_bytes_that_are_not_utf8():
    path = b"/tmp/\xff\n\x1b"
    comm = b"c\xfe\0"
    event = make_event(path, path, comm=comm)
    line = JsonRenderer().lines([event])
    assert line.count("\n") == 1 and line.isascii()
    record = json.loads(line)
    assert tuple(record) == JSON_KEYS
    assert base64.b64decode(record["path_b64"]) == path
    assert base64.b64decode(record["resolved_b64"]) == path
    assert base64.b64decode(record["comm_b64"]) == b"c\xfe"
    assert record["path"] == path.decode("utf-8", "replace")


def test_json_utf8_needs_no_base64():
    record = json.loads(JsonRenderer().lines([make_event("/tmp/\u00e9\n".encode())]))
    assert record["path"] == "/tmp/\u00e9\n" and record["path_b64"] is None
    assert record["time"] == "2023-11-14T22:13:20.000001Z"
    assert (record["fd"], record["errno"], record["error"]) == (3, None, None)


def test_a_process_name_cannot_forge_the_fd_and_error_columns():
    # prctl(PR_SET_NAME) takes any 15 bytes: spaces must not read as column breaks
    forged = make_event(b"/etc/hostname", comm=b"x     -1 ENOENT")
    (row,) = TableRenderer().lines([forged]).splitlines()
    assert row.split() == ["42", "43", "x\\x20\\x20\\x20\\x20\\x20-1\\x20ENOENT", "3",
                           "/etc/hostname"]


def test_with_both_paths_the_first_arrow_is_the_separator():
    tricky = make_event(b"/a -> /b", b"/real/file")
    (row,) = TableRenderer(extended=True, resolved=True).lines([tricky]).splitlines()
    passed, resolved = row.split(" -> ", 1)
    assert passed.endswith("/a\\x20->\\x20/b") and resolved == "/real/file"
    # the path alone, as the last field, keeps its spaces
    (row,) = TableRenderer().lines([tricky]).splitlines()
    assert row.endswith(" /a -> /b")


def test_a_cut_path_is_marked_where_no_file_name_reaches():
    cut = make_event(b"/" + b"x" * 4095, status=c.EO_ST_PATH_TRUNCATED)
    whole = make_event(b"/ends-with\\...")
    (cut_row, whole_row) = TableRenderer().lines([cut, whole]).splitlines()
    assert cut_row.endswith("x\\...") and whole_row.endswith("/ends-with\\\\...")
