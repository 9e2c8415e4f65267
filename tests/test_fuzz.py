"""The record decoder (events.decode_batch) and both renderers (render.py, and csrc/render.c
through render_batch) fed truncated, oversized and garbage records, made by hypothesis.

What must hold for every batch: either a ValueError (a clean refusal), or exactly one
event / one line per record, each made of that record's own bytes, with C and Python
writing the same bytes. Never a crash, never a hang (a watchdog alarm turns one into a
failure), never a record that silently shows another's bytes. Pure formatting: records
built in memory, as in test_render_c.py."""

from __future__ import annotations

import json
import re
import signal
from array import array
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from echo_open._layout import lib as c
from echo_open.events import decode_batch
from echo_open.layout import EVENT_FIELDS, EVENT_SIZE, EVENT_STRUCT, MAX_TAIL
from echo_open.loader import RecordBatch
from echo_open.render import JsonRenderer, TableRenderer

WALL_OFFSET = 1_700_000_000_123_456_789
OWN_MNTNS = 4026531841
# bounded: ~5 s for the three on this machine, ~2 min in the 6.1 guest under emulation
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WATCHDOG_SECONDS = 120

_FORMAT_RANGES = {"B": 8, "H": 16, "I": 32, "Q": 64, "b": -8, "h": -16, "i": -32, "q": -64}


def _field_ranges() -> list[tuple[str, st.SearchStrategy]]:
    """A strategy for every field of struct eo_event, over its whole C range."""
    codes = [(int(count or 1), code)
             for count, code in re.findall(r"(\d*)([a-zA-Z])", EVENT_STRUCT.format)
             if code != "x"]
    strategies = []
    for name, (count, code) in zip(EVENT_FIELDS, codes, strict=True):
        if code == "s":
            strategies.append((name, st.binary(max_size=count)))
            continue
        bits = _FORMAT_RANGES[code]
        lo, hi = (0, (1 << bits) - 1) if bits > 0 else (-(1 << (-bits - 1)),
                                                          (1 << (-bits - 1)) - 1)
        # the edges and small values, where length bugs live, more often than not
        strategies.append((name, st.one_of(st.sampled_from(sorted({lo, hi, 0, 1})),
                                           st.integers(0, 16), st.integers(lo, hi))))
    return strategies


_FIELDS = _field_ranges()
# bytes where the escaping rules have something to do
_TAIL_BYTES = st.binary(max_size=64) | st.sampled_from(
    [b"/etc/hostname", b"/a/../b//c/.", "/caf\u00e9".encode(), b"\xff\xfe", b"\n\r\t\x1b",
     "\u202e".encode(), b" -> ", b"\\...", b'"'])


@st.composite
def records(draw) -> tuple[bytes, bytes]:
    """One record: a head with every field drawn, and a tail that agrees with its lengths
    (well formed), is cut short, runs over, or is anything at all."""
    values = {name: draw(strategy) for name, strategy in _FIELDS}
    path = draw(_TAIL_BYTES)
    resolved = draw(_TAIL_BYTES)
    if draw(st.booleans()):
        path = path * draw(st.integers(1, 64))   # long paths, up to 4 KiB and past it
    values["resolved_how"] = draw(st.sampled_from(
        [c.EO_RESOLVED_NONE, c.EO_RESOLVED_FILE, c.EO_RESOLVED_JOINED, values["resolved_how"]]))
    shape = draw(st.sampled_from(["whole", "whole", "whole", "cut", "over", "lengths"]))
    values["path_len"] = len(path) & 0xFFFF
    values["resolved_len"] = len(resolved) & 0xFFFF
    tail = path + resolved
    if shape == "cut":
        tail = tail[:draw(st.integers(0, max(0, len(tail) - 1)))]
    elif shape == "over":
        tail += draw(st.binary(min_size=1, max_size=32))
    elif shape == "lengths":
        values["path_len"] = draw(_FIELDS[EVENT_FIELDS.index("path_len")][1])
        values["resolved_len"] = draw(_FIELDS[EVENT_FIELDS.index("resolved_len")][1])
    return EVENT_STRUCT.pack(*(values[name] for name in EVENT_FIELDS)), tail


def _batch(items: list[tuple[bytes, bytes]]) -> RecordBatch:
    return RecordBatch(EVENT_SIZE, b"".join(head for head, _ in items),
                       b"".join(tail for _, tail in items),
                       array("I", [len(tail) for _, tail in items]))


def _well_formed(items: list[tuple[bytes, bytes]]) -> bool:
    for head, tail in items:
        fields = dict(zip(EVENT_FIELDS, EVENT_STRUCT.unpack(head), strict=True))
        if len(tail) > MAX_TAIL or fields["path_len"] + fields["resolved_len"] != len(tail):
            return False
    return True


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """A hang in C or Python fails the test instead of stalling the suite."""
    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"no answer in {WATCHDOG_SECONDS} s: a hang")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(WATCHDOG_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _renderers() -> list:
    return [TableRenderer(own_mntns=OWN_MNTNS),
            TableRenderer(own_mntns=OWN_MNTNS, timestamp=True, uid=True, extended=True,
                          resolved=True),
            TableRenderer(own_mntns=OWN_MNTNS, resolved=True), JsonRenderer()]


@FUZZ
@given(st.lists(records(), max_size=12))
def test_decoder_refuses_a_bad_record_or_gives_each_its_own_bytes(items):
    batch = _batch(items)
    if not _well_formed(items):
        with pytest.raises(ValueError):
            decode_batch(batch, WALL_OFFSET)
        return
    events = decode_batch(batch, WALL_OFFSET)
    assert len(events) == len(items)
    for event, (head, tail) in zip(events, items, strict=True):
        assert EVENT_STRUCT.pack(*event[:len(EVENT_FIELDS)]) == head
        assert event.path_bytes + event.resolved_raw == tail
        assert len(event.path_bytes) == event.path_len
        assert event.wall_ns == event.ts_ns + WALL_OFFSET


@FUZZ
@given(st.lists(records(), max_size=12))
def test_both_renderers_refuse_the_same_batches_and_agree_on_the_rest(items):
    batch = _batch(items)
    well_formed = _well_formed(items)
    for renderer in _renderers():
        if not well_formed:
            with pytest.raises(ValueError):
                b"".join(bytes(chunk) for chunk in renderer.render_batch(batch, WALL_OFFSET))
            continue
        in_c = b"".join(bytes(chunk) for chunk in renderer.render_batch(batch, WALL_OFFSET))
        in_python = renderer.lines(decode_batch(batch, WALL_OFFSET)).encode("utf-8")
        assert in_c == in_python
        lines = in_c.decode("utf-8").split("\n")
        assert lines.pop() == "" and len(lines) == len(items)  # one line per record
        if isinstance(renderer, JsonRenderer):
            for line, (head, _) in zip(lines, items, strict=True):
                ret = EVENT_STRUCT.unpack(head)[EVENT_FIELDS.index("ret")]
                assert line.isascii() and json.loads(line)["ret"] == ret
        else:
            assert all(line.isprintable() for line in lines)


@FUZZ
@given(heads=st.binary(max_size=EVENT_SIZE * 6), tails=st.binary(max_size=512),
       sizes=st.lists(st.sampled_from([0, 1, 7, 64, 511, MAX_TAIL, MAX_TAIL + 1, 2**31,
                                       2**32 - 1]) | st.integers(0, 2**32 - 1), max_size=8),
       head_size=st.sampled_from([EVENT_SIZE, EVENT_SIZE, EVENT_SIZE - 1, 0, 8]))
def test_garbage_batches_are_refused_or_decoded_never_read_out_of_bounds(heads, tails, sizes,
                                                                          head_size):
    batch = RecordBatch(head_size, heads, tails, array("I", sizes))
    try:
        events = decode_batch(batch, WALL_OFFSET)
    except ValueError:
        events = None
    for renderer in _renderers():
        try:
            text = b"".join(bytes(chunk) for chunk in renderer.render_batch(batch, WALL_OFFSET))
        except ValueError:
            text = None
        # C refuses exactly what the decoder refuses (an empty batch renders nothing)
        assert (text is None) == (events is None and len(batch) > 0)
        if events is not None:
            assert text == renderer.lines(events).encode("utf-8")
