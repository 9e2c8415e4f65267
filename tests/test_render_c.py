"""The C formatter (csrc/render.c) against the Python reference renderer: the same
records must give the same bytes. Pure formatting: records built in memory."""

from __future__ import annotations

import itertools
import json
import random
from array import array

import pytest

from echo_open._layout import lib as c
from echo_open._render import lib as render_lib
from echo_open.events import decode_batch
from echo_open.layout import EVENT_FIELDS, EVENT_SIZE, EVENT_STRUCT
from echo_open.loader import RecordBatch
from echo_open.render import JsonRenderer, TableRenderer

WALL_OFFSET = 1_700_000_000_123_456_789
OWN_MNTNS = 4026531841

PATHS = [
    b"/etc/hostname", b"relative/file", b"", b"/", b"/tmp/", b"/a/./b", b"/a/../b", b"//x",
    b"/with space/and\ttab", b'/quote"d', b"/back\\slash", b"/nl\nline", b"/esc\x1b[2J",
    b"/del\x7f", b"/ctl\x01\x02\x08\x0c", b"/" + b"x" * 4094, b"/" + b"\x01" * 300,
    "/caf\u00e9".encode(), b"/bad\xff\xfe", "/rtl\u202e".encode(), b"a/.hidden",
    b"/a -> /b", b" lead", b"trail ",
]
COMMS = [b"cat\0stale", b"exactly16bytes!!", b"", b"tab\there", b'q"uote', "\u00e9t\u00e9".encode(),
         b"\xff\0", b"x     -1 ENOENT", b"a -> b"]


def record(rng: random.Random) -> tuple[bytes, bytes]:
    path = rng.choice(PATHS)
    how = rng.choice([c.EO_RESOLVED_NONE, c.EO_RESOLVED_FILE, c.EO_RESOLVED_JOINED])
    resolved = b"" if how == c.EO_RESOLVED_NONE else rng.choice([*PATHS[:14], b"/cwd/" + path])
    resolved = resolved[-(c.EO_PATH_MAX - 1):]  # the kernel cuts it so, keeping the leaf end
    values = {name: 0 for name in EVENT_FIELDS}
    values.update(
        ts_ns=rng.randrange(1 << 50), latency_ns=rng.randrange(1 << 32),
        ret=rng.choice([0, 3, 1234, -1, -2, -13, -300, -4095]),
        flags=rng.choice([0, 1, 2, 3, 0o2000000, 0o100 | 0o1000 | 1, 0o20200000, 0o4010000,
                          0o4000000, 1 << 40, rng.randrange(1 << 32)]),
        resolve=rng.choice([0, 0x10, 0x3F]), pid=rng.randrange(1 << 32),
        tid=rng.randrange(1 << 22), ppid=rng.randrange(1 << 22), uid=rng.choice([0, 1000, 65534]),
        gid=rng.randrange(1 << 16), dfd=rng.choice([-100, 3, 77]),
        mode=rng.choice([0, 0o644, 0o7777, 0o100000]),
        mntns=OWN_MNTNS, resolved_mntns=rng.choice([0, OWN_MNTNS, OWN_MNTNS + 1]),
        path_len=len(path), resolved_len=len(resolved),
        syscall=rng.randrange(7), resolved_how=how, status=rng.randrange(64),
        comm=rng.choice(COMMS))
    return EVENT_STRUCT.pack(*(values[name] for name in EVENT_FIELDS)), path + resolved


def batch_of(records: list[tuple[bytes, bytes]]) -> RecordBatch:
    return RecordBatch(EVENT_SIZE, b"".join(head for head, _ in records),
                       b"".join(tail for _, tail in records),
                       array("I", [len(tail) for _, tail in records]))


def rendered_in_c(renderer, batch: RecordBatch) -> bytes:
    return b"".join(bytes(chunk) for chunk in renderer.render_batch(batch, WALL_OFFSET))


def rendered_in_python(renderer, batch: RecordBatch) -> bytes:
    return renderer.lines(decode_batch(batch, WALL_OFFSET)).encode("utf-8")


TABLE_OPTIONS = [dict(zip(("timestamp", "uid", "extended", "resolved"), combo, strict=True))
                 for combo in itertools.product((False, True), repeat=4)]


@pytest.mark.parametrize("options", TABLE_OPTIONS, ids=lambda o: "-".join(
    name for name, on in o.items() if on) or "plain")
def test_table_rows_from_c_equal_the_reference(options):
    rng = random.Random(str(options))
    batch = batch_of([record(rng) for _ in range(1500)])
    renderer = TableRenderer(own_mntns=OWN_MNTNS, **options)
    assert rendered_in_c(renderer, batch) == rendered_in_python(TableRenderer(
        own_mntns=OWN_MNTNS, **options), batch)


def test_json_lines_from_c_equal_the_reference():
    rng = random.Random(5)
    batch = batch_of([record(rng) for _ in range(3000)])
    assert rendered_in_c(JsonRenderer(), batch) == rendered_in_python(JsonRenderer(), batch)


def test_records_c_leaves_alone_come_back_in_order():
    rng = random.Random(9)
    records = [record(rng) for _ in range(200)]
    batch = batch_of(records)
    text = rendered_in_c(JsonRenderer(), batch).decode("ascii")
    lines = text.splitlines()
    assert len(lines) == 200
    non_ascii = sum(1 for head, tail in records
                    if any(b >= 0x80 for b in tail + EVENT_STRUCT.unpack(head)[
                        EVENT_FIELDS.index("comm")]))
    assert non_ascii > 10  # the Python path really was taken, and spliced in place


def test_output_bigger_than_the_buffer_comes_in_several_chunks():
    # 700 paths of 4095 control bytes: each grows six-fold in JSON, ~17 MB in all
    rng = random.Random(1)
    head, _ = record(rng)
    fields = list(EVENT_STRUCT.unpack(head))
    fields[EVENT_FIELDS.index("path_len")] = 4095
    fields[EVENT_FIELDS.index("resolved_len")] = 0  # the tail is the path alone
    fields[EVENT_FIELDS.index("resolved_how")] = c.EO_RESOLVED_NONE
    fields[EVENT_FIELDS.index("comm")] = b"storm"
    path = b"/" + b"\x01" * 4094
    batch = batch_of([(EVENT_STRUCT.pack(*fields), path)] * 700)
    renderer = JsonRenderer()
    chunks = [bytes(chunk) for chunk in renderer.render_batch(batch, WALL_OFFSET)]
    assert len(chunks) > 3
    assert b"".join(chunks) == rendered_in_python(JsonRenderer(), batch)


def test_an_empty_batch_renders_nothing():
    assert rendered_in_c(TableRenderer(), batch_of([])) == b""


def _malformed(rng: random.Random) -> list[RecordBatch]:
    """Batches whose lengths disagree: each must be refused, never read out of bounds."""
    good = [record(rng) for _ in range(4)]
    batch = batch_of(good)
    sizes = batch.tail_sizes
    return [
        RecordBatch(EVENT_SIZE, batch.heads[:-1], batch.tails, sizes),            # short heads
        RecordBatch(EVENT_SIZE, batch.heads[:EVENT_SIZE], batch.tails, sizes),    # one head
        RecordBatch(EVENT_SIZE, batch.heads, batch.tails[:-1], sizes),            # short tails
        RecordBatch(EVENT_SIZE, batch.heads, b"", sizes),                         # no tails
        RecordBatch(EVENT_SIZE, batch.heads, batch.tails,
                    array("I", [*sizes[:-1], 0xFFFFFFFF])),                       # huge length
        RecordBatch(EVENT_SIZE, batch.heads, batch.tails + b"x" * 9000,
                    array("I", [*sizes[:-1], sizes[-1] + 9000])),                 # over a tail
        RecordBatch(EVENT_SIZE, batch.heads, batch.tails, array("i", [-1] * 4)),  # negative
    ]


@pytest.mark.parametrize("renderer", [TableRenderer, JsonRenderer,
                                      lambda: TableRenderer(resolved=True, extended=True)])
def test_a_batch_whose_lengths_disagree_is_refused_not_read_out_of_bounds(renderer):
    for batch in _malformed(random.Random(7)):
        with pytest.raises(ValueError):
            rendered_in_c(renderer(), batch)
        with pytest.raises(ValueError):
            rendered_in_python(renderer(), batch)


def test_sizes_that_are_not_uint32_are_refused():
    batch = batch_of([record(random.Random(3))])
    with pytest.raises(ValueError, match="array"):
        rendered_in_c(JsonRenderer(), RecordBatch(EVENT_SIZE, batch.heads, batch.tails,
                                                  array("Q", batch.tail_sizes)))


# cgroup ids as the kernel reports them, and the paths a cgroup2 walk would find for them
_CONTAINER_HEX = "0123456789abcdef" * 4
_CGROUP_PATHS = {
    1: "/", 7: f"/system.slice/docker-{_CONTAINER_HEX}.scope",
    8: f"/kubepods/besteffort/pod1/{_CONTAINER_HEX}/sub",
    9: "/machine.slice/machine-box\\x2d1.scope", 10: "/machine.slice/machine-caf\u00e9.scope",
    11: "/user.slice/caf\u00e9", 12: "/deep" * 200 + f"/docker-{_CONTAINER_HEX}.scope",
    13: '/machine.slice/machine-q"uote.scope',
}


@pytest.mark.parametrize("renderer", [
    lambda: TableRenderer(print_container=True), lambda: TableRenderer(
        print_container=True, uid=True, extended=True, resolved=True), JsonRenderer],
    ids=["table-C", "table-C-everything", "json"])
def test_cgroups_and_containers_from_c_equal_the_reference(monkeypatch, renderer):
    # the resolver is the system's part (test_namespaces.py); here only the formatting
    from echo_open import cgroups, render

    monkeypatch.setattr(cgroups, "path_of", _CGROUP_PATHS.get)
    monkeypatch.setattr(render, "_cgroup_path", _CGROUP_PATHS.get)
    rng = random.Random(11)
    records = []
    for _ in range(2000):
        head, tail = record(rng)
        fields = list(EVENT_STRUCT.unpack(head))
        # the ids above, an unknown one, and ones that share a cache slot
        slots = render_lib.EOR_CGROUP_SLOTS
        fields[EVENT_FIELDS.index("cgroup_id")] = rng.choice(
            [*_CGROUP_PATHS, 0, 99, 7 + slots, 1 + 5 * slots])
        records.append((EVENT_STRUCT.pack(*fields), tail))
    batch = batch_of(records)
    assert rendered_in_c(renderer(), batch) == rendered_in_python(renderer(), batch)
    if isinstance(renderer(), JsonRenderer):
        shown = {json.loads(line)["container"]
                 for line in rendered_in_c(renderer(), batch).splitlines()}
        assert shown == {None, _CONTAINER_HEX, "box-1", "caf\u00e9", 'q"uote'}
