"""The generic loader (echo_open.loader) against the real kernel.

Everything here loads tests/loader_progs.bpf.c, a small object that knows
nothing about file opens: a tracepoint on sys_enter_getppid counts this
process's calls per CPU and, when its .rodata settings say so, writes records
to a ring buffer. Assertions are on what the kernel shows: map contents read
back through the kernel, /proc/self/fd and fdinfo, and ``bpftool``.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from echo_open.loader import (
    BPF_EXIST,
    BPF_NOEXIST,
    BPFError,
    BPFObject,
    Link,
    LoadError,
    Map,
    RecordBatch,
    RingBuffer,
    possible_cpus,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOURCE = HERE / "loader_progs.bpf.c"

# struct settings in loader_progs.bpf.c: tgid, record, tag, pad, rb_flags
SETTINGS = struct.Struct("<IIIIQ")
HEAD = struct.Struct("<IIII")  # struct record's head: tag, seq, tgid, tail_len
MAX_TAIL = 32
BPF_RB_NO_WAKEUP = 1
ZERO = struct.pack("<I", 0)


# ---- helpers


@pytest.fixture(scope="session")
def object_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """loader_progs.bpf.c compiled once per session."""
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang is needed to build the test BPF object")
    out = tmp_path_factory.mktemp("loader") / "loader_progs.bpf.o"
    subprocess.run([clang, "-g", "-O2", "-target", "bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86",
                    "-Wall", "-Werror", f"-I{REPO / 'vmlinux' / 'x86'}",
                    "-c", str(SOURCE), "-o", str(out)], check=True)
    return out


@pytest.fixture
def obj(object_path: Path) -> Iterator[BPFObject]:
    """The test object, opened (not loaded); closed after the test."""
    with BPFObject.open(object_path) as opened:
        yield opened


def configure(obj: BPFObject, *, record: bool = False, tag: int = 0x5EC0DE,
              rb_flags: int = 0, tgid: int | None = None) -> bytes:
    """Write the program's .rodata settings; returns the bytes written."""
    raw = SETTINGS.pack(os.getpid() if tgid is None else tgid, int(record), tag, 0, rb_flags)
    view = obj.map(".rodata").initial_value()
    assert len(view) == SETTINGS.size
    view[:] = raw
    return raw


def loaded(obj: BPFObject, **settings: int | bool) -> BPFObject:
    configure(obj, **settings)
    obj.load()
    return obj


def call_getppid(times: int) -> None:
    for _ in range(times):
        os.getppid()


def per_cpu_counts(obj: BPFObject) -> list[int]:
    values = obj.map("counts").lookup(ZERO)
    assert isinstance(values, list)
    return [struct.unpack("<Q", value)[0] for value in values]


def total_count(obj: BPFObject) -> int:
    return sum(per_cpu_counts(obj))


def fdinfo(fd: int) -> dict[str, str]:
    lines = Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def map_id(bpf_map: Map) -> int:
    return int(fdinfo(bpf_map.fd)["map_id"])


def bpftool(*args: str) -> list | dict:
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool is not installed")
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def kernel_link_ids() -> set[int]:
    return {entry["id"] for entry in bpftool("link", "show")}


def record(seq: int, tag: int = 0x5EC0DE) -> bytes:
    """The record the program writes for call number ``seq`` of this process."""
    tail_len = seq % MAX_TAIL
    return HEAD.pack(tag, seq, os.getpid(), tail_len) + bytes((seq + i) & 0xFF
                                                              for i in range(tail_len))


def split(raw: bytes, head_size: int) -> tuple[bytes, bytes]:
    """What RecordBatch should hand back for a record: zero-padded head, tail."""
    return raw[:head_size].ljust(head_size, b"\0"), raw[head_size:]


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


# ---- open


def test_open_from_path_lists_programs_and_maps(obj: BPFObject) -> None:
    assert obj.name == "loader_progs.bpf.o"
    assert set(obj.programs) == {"count_calls", "count_exits", "bad_access"}
    assert obj.program("count_calls").section == "tracepoint/syscalls/sys_enter_getppid"
    # libbpf strips the "?" that turns autoload off
    assert obj.program("bad_access").section == "tracepoint/syscalls/sys_enter_getppid"
    assert {"counts", "array", "hash", "events"} <= set(obj.maps)
    hash_map = obj.map("hash")
    assert (hash_map.key_size, hash_map.value_size, hash_map.max_entries) == (4, 16, 64)
    assert obj.map("counts").percpu and not hash_map.percpu
    # libbpf names internal maps after the object; ".rodata" finds it by its section
    assert obj.map(".rodata").name.endswith(".rodata")
    assert obj.map(".rodata") is obj.maps[obj.map(".rodata").name]
    assert not obj.loaded


def test_open_from_bytes_loads_and_runs(object_path: Path) -> None:
    data = object_path.read_bytes()
    with BPFObject.from_bytes(data, name="from_memory") as obj:
        del data
        gc.collect()  # the object keeps its own reference to the ELF image
        assert obj.name == "from_memory"
        assert set(obj.programs) == {"count_calls", "count_exits", "bad_access"}
        # libbpf got the name too: its internal maps are named after it
        assert obj.map(".rodata").name == "from_mem.rodata"
        loaded(obj)
        with obj.program("count_calls").attach():
            call_getppid(10)
        assert total_count(obj) == 10


def test_open_errors_name_the_operation(tmp_path: Path) -> None:
    with pytest.raises(BPFError) as missing:
        BPFObject.open(tmp_path / "absent.bpf.o")
    assert missing.value.errno == errno.ENOENT
    assert "bpf_object__open_file" in str(missing.value)
    with pytest.raises(BPFError) as garbage:
        BPFObject.from_bytes(b"not an ELF file" * 8, name="garbage")
    assert "bpf_object__open_mem(garbage)" in str(garbage.value)
    # libbpf's own error codes (>= 4000) get libbpf's text, not "Unknown error"
    assert "Unknown error" not in str(garbage.value)


def test_unknown_names_raise_keyerror(obj: BPFObject) -> None:
    with pytest.raises(KeyError, match=r"no program 'nope' in loader_progs\.bpf\.o"):
        obj.program("nope")
    with pytest.raises(KeyError, match=r"no map 'nope' in loader_progs\.bpf\.o"):
        obj.map("nope")
    with pytest.raises(KeyError, match=r"no map '\.data'"):
        obj.map(".data")  # the object has .rodata and .bss, no .data


# ---- configure before load


def test_rodata_setting_takes_effect(object_path: Path) -> None:
    with BPFObject.open(object_path) as quiet, BPFObject.open(object_path) as talking:
        quiet_settings = configure(quiet, record=False)
        configure(talking, record=True, tag=77)
        quiet.load()
        talking.load()
        # the kernel holds what was written, frozen read-only
        rodata = talking.map(".rodata")
        assert rodata.lookup(ZERO) == SETTINGS.pack(os.getpid(), 1, 77, 0, 0)
        assert fdinfo(rodata.fd)["frozen"] == "1"
        assert quiet.map(".rodata").lookup(ZERO) == quiet_settings
        with RingBuffer(quiet.map("events"), head_size=16, max_tail=MAX_TAIL) as quiet_ring, \
                RingBuffer(talking.map("events"), head_size=16, max_tail=MAX_TAIL) as ring, \
                quiet.program("count_calls").attach(), talking.program("count_calls").attach():
            call_getppid(5)
            assert len(quiet_ring.consume()) == 0
            assert [head for head, _ in ring.consume()] == [record(s, 77)[:16] for s in range(5)]
        assert total_count(quiet) == total_count(talking) == 5


def test_rodata_tgid_setting_filters_other_processes(obj: BPFObject) -> None:
    loaded(obj, tgid=1)  # init never calls getppid (and is not us)
    with obj.program("count_calls").attach():
        call_getppid(20)
    assert total_count(obj) == 0


def test_initial_value_is_fixed_once_loaded(obj: BPFObject) -> None:
    view = obj.map(".rodata").initial_value()
    view[:] = SETTINGS.pack(os.getpid(), 0, 1, 0, 0)
    obj.load()
    with pytest.raises(ValueError, match="initial value"):
        obj.map(".rodata").initial_value()
    # a view taken before load can no longer be written: it would change nothing
    with pytest.raises(ValueError):
        view[0] = 1
    assert obj.map(".rodata").lookup(ZERO) == SETTINGS.pack(os.getpid(), 0, 1, 0, 0)


def test_initial_value_view_is_safe_after_close(object_path: Path) -> None:
    obj = BPFObject.open(object_path)
    view = obj.map(".rodata").initial_value()
    part = view[4:8]
    part[:] = b"\1\2\3\4"
    obj.close()
    # libbpf has freed its memory: the view is released, and a slice taken from
    # it reads the loader's own copy (this crashed when views were over libbpf's)
    with pytest.raises(ValueError):
        bytes(view)
    assert bytes(part) == b"\1\2\3\4"


def test_max_entries_set_before_load(obj: BPFObject) -> None:
    obj.map("array").max_entries = 8
    obj.map("hash").max_entries = 128
    obj.map("events").max_entries = 256 * 1024
    loaded(obj)
    shown = {name: bpftool("map", "show", "id", str(map_id(obj.map(name))))
             for name in ("array", "hash", "events")}
    assert shown["array"]["max_entries"] == 8
    assert shown["hash"]["max_entries"] == 128
    assert shown["events"]["max_entries"] == 256 * 1024
    assert shown["events"]["type"] == "ringbuf"
    assert obj.map("hash").max_entries == 128
    assert list(obj.map("array").keys()) == [struct.pack("<I", i) for i in range(8)]


def test_max_entries_after_load_raises_bpferror(obj: BPFObject) -> None:
    loaded(obj)
    with pytest.raises(BPFError) as info:
        obj.map("hash").max_entries = 4
    assert info.value.errno == errno.EBUSY
    assert "bpf_map__set_max_entries(hash, 4)" in str(info.value)
    assert f"errno {errno.EBUSY}" in str(info.value)
    assert bpftool("map", "show", "id", str(map_id(obj.map("hash"))))["max_entries"] == 64


def test_autoload_off_leaves_program_out(obj: BPFObject) -> None:
    assert obj.program("count_calls").autoload
    assert not obj.program("bad_access").autoload  # SEC("?...")
    obj.program("count_calls").autoload = False
    loaded(obj)
    for name in ("count_calls", "bad_access"):
        with pytest.raises(BPFError) as info:
            obj.program(name).fd  # noqa: B018
        assert info.value.errno == errno.ENOENT
        assert f"bpf_program__fd({name})" in str(info.value)
    # no program in the kernel uses the map only count_calls uses
    ours = map_id(obj.map("counts"))
    assert not [prog for prog in bpftool("prog", "show") if ours in prog.get("map_ids", [])]
    assert obj.program("count_exits").fd >= 0
    with pytest.raises(BPFError, match="attach count_calls") as unloaded:
        obj.program("count_calls").attach()
    assert unloaded.value.errno == errno.EINVAL


def test_autoload_on_program_is_in_the_kernel(obj: BPFObject) -> None:
    loaded(obj)
    program = obj.program("count_calls")
    prog_id = int(fdinfo(program.fd)["prog_id"])
    shown = bpftool("prog", "show", "id", str(prog_id))
    assert shown["name"] == "count_calls"
    assert shown["type"] == "tracepoint"
    assert map_id(obj.map("counts")) in shown["map_ids"]
    with pytest.raises(BPFError) as info:
        program.autoload = False  # too late
    assert "bpf_program__set_autoload(count_calls)" in str(info.value)


# ---- load failure and libbpf's messages


def test_load_failure_raises_loaderror_with_verifier_log(obj: BPFObject,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    obj.program("bad_access").autoload = True
    caplog.set_level(logging.DEBUG, logger="echo_open.libbpf")
    with pytest.raises(LoadError) as info:
        loaded(obj)
    exc = info.value
    assert exc.errno == errno.EACCES
    assert exc.operation == "bpf_object__load(loader_progs.bpf.o)"
    assert str(exc).startswith("bpf_object__load(loader_progs.bpf.o): Permission denied")
    assert "invalid access to map value, value_size=8 off=64 size=8" in exc.log
    assert "R0" in exc.log
    assert "bad_access" in exc.log
    assert exc.log in str(exc)
    # the same lines went to logging, as warnings
    warnings = "\n".join(r.getMessage() for r in caplog.records
                         if r.name == "echo_open.libbpf" and r.levelno == logging.WARNING)
    assert "invalid access to map value" in warnings
    assert not obj.loaded


def test_libbpf_messages_reach_logging(obj: BPFObject, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="echo_open.libbpf")
    loaded(obj)
    ours = [r for r in caplog.records if r.name == "echo_open.libbpf"]
    assert any("map 'counts': created successfully" in r.getMessage() and
               r.levelno == logging.DEBUG for r in ours)
    assert all(not r.getMessage().endswith("\n") for r in ours)


def test_logging_level_filters_libbpf_debug(obj: BPFObject,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="echo_open.libbpf")
    loaded(obj)
    assert not [r for r in caplog.records if r.name == "echo_open.libbpf"]


# ---- maps


def test_hash_map_round_trip(obj: BPFObject) -> None:
    loaded(obj)
    hash_map = obj.map("hash")
    key = struct.pack("<I", 7)
    value = struct.pack("<QQ", 1, 2)
    assert hash_map.lookup(key) is None
    assert list(hash_map.keys()) == []
    hash_map.update(key, value)
    assert hash_map.lookup(key) == value
    # what bpftool reads from the kernel agrees
    shown = bpftool("map", "lookup", "id", str(map_id(hash_map)), "key", "7", "0", "0", "0")
    assert [int(b, 16) for b in shown["value"]] == list(value)
    with pytest.raises(BPFError) as exists:
        hash_map.update(key, value, BPF_NOEXIST)
    assert exists.value.errno == errno.EEXIST
    with pytest.raises(BPFError) as absent:
        hash_map.update(struct.pack("<I", 8), value, BPF_EXIST)
    assert absent.value.errno == errno.ENOENT
    assert "bpf_map_update_elem(hash)" in str(absent.value)
    entries = {struct.pack("<I", k): struct.pack("<QQ", k, k * k) for k in range(10, 20)}
    for k, v in entries.items():
        hash_map.update(bytearray(k), memoryview(v))
    assert sorted(hash_map.keys()) == sorted([key, *entries])
    assert dict(hash_map.items()) == {key: value, **entries}
    assert hash_map.delete(key) is True
    assert hash_map.delete(key) is False
    assert hash_map.lookup(key) is None
    assert dict(hash_map.items()) == entries


def test_map_size_checks(obj: BPFObject) -> None:
    loaded(obj)
    hash_map = obj.map("hash")
    for bad_key in (b"\0" * 3, b"\0" * 8):
        with pytest.raises(ValueError, match="key is"):
            hash_map.lookup(bad_key)
        with pytest.raises(ValueError, match="key is"):
            hash_map.delete(bad_key)
        with pytest.raises(ValueError, match="key is"):
            hash_map.update(bad_key, b"\0" * 16)
    with pytest.raises(ValueError, match="value is"):
        hash_map.update(ZERO, b"\0" * 15)
    assert list(hash_map.keys()) == []


def test_map_full_raises(obj: BPFObject) -> None:
    obj.map("hash").max_entries = 2
    loaded(obj)
    hash_map = obj.map("hash")
    hash_map.update(struct.pack("<I", 1), b"\1" * 16)
    hash_map.update(struct.pack("<I", 2), b"\2" * 16)
    with pytest.raises(BPFError) as full:
        hash_map.update(struct.pack("<I", 3), b"\3" * 16)
    assert full.value.errno == errno.E2BIG


def test_array_map(obj: BPFObject) -> None:
    loaded(obj)
    array = obj.map("array")
    assert array.lookup(struct.pack("<I", 3)) == bytes(8)
    assert array.lookup(struct.pack("<I", 4)) is None  # past max_entries
    array.update(struct.pack("<I", 3), struct.pack("<Q", 99))
    assert array.lookup(struct.pack("<I", 3)) == struct.pack("<Q", 99)
    with pytest.raises(BPFError) as info:
        array.delete(struct.pack("<I", 3))  # array elements cannot be deleted
    assert info.value.errno == errno.EINVAL


def test_percpu_array_one_value_per_possible_cpu(obj: BPFObject) -> None:
    loaded(obj)
    counts = obj.map("counts")
    cpus = possible_cpus()
    possible = Path("/sys/devices/system/cpu/possible").read_text().strip()  # e.g. "0-1"
    assert cpus == int(possible.split(",")[-1].split("-")[-1]) + 1
    values = counts.lookup(ZERO)
    assert isinstance(values, list) and len(values) == cpus
    assert values == [bytes(8)] * cpus
    written = [struct.pack("<Q", 1000 + cpu) for cpu in range(cpus)]
    counts.update(ZERO, written)
    assert counts.lookup(ZERO) == written
    counts.update(ZERO, struct.pack("<Q", 5))  # one value: the same on every CPU
    assert counts.lookup(ZERO) == [struct.pack("<Q", 5)] * cpus
    with pytest.raises(ValueError, match="per-CPU values"):
        counts.update(ZERO, written[:-1] if cpus > 1 else [*written, written[0]])
    with pytest.raises(ValueError, match="value is"):
        counts.update(ZERO, [b"\0" * 4] * cpus)
    assert dict(counts.items()) == {ZERO: [struct.pack("<Q", 5)] * cpus}


def test_percpu_counts_land_on_the_cpu_that_ran(obj: BPFObject) -> None:
    loaded(obj)
    saved = os.sched_getaffinity(0)
    cpu = max(saved)
    try:
        os.sched_setaffinity(0, {cpu})
        with obj.program("count_calls").attach():
            call_getppid(40)
    finally:
        os.sched_setaffinity(0, saved)
    counts = per_cpu_counts(obj)
    assert counts[cpu] == 40
    assert sum(counts) == 40


# ---- attach and links


def test_attach_counts_and_link_detaches_on_exit(obj: BPFObject) -> None:
    loaded(obj)
    with obj.program("count_calls").attach() as link:
        assert isinstance(link, Link) and not link.closed
        fd = link.fd
        info = fdinfo(fd)
        link_id = int(info["link_id"])
        if "tp_name" in info:
            assert info["tp_name"] == "sys_enter_getppid"
        else:  # 6.1: a perf-event link's fdinfo names no tracepoint (the counts below do)
            assert info["link_type"] == "perf"
        assert int(info["prog_id"]) == int(fdinfo(obj.program("count_calls").fd)["prog_id"])
        assert link_id in kernel_link_ids()
        assert list(obj.links()) == [link]
        call_getppid(50)
        assert total_count(obj) == 50
        # the last call's sequence number, written by the program into `array`
        assert obj.map("array").lookup(ZERO) == struct.pack("<Q", 49)
    assert link.closed
    assert not Path(f"/proc/self/fd/{fd}").exists() or fdinfo(fd).get("link_id") != str(link_id)
    assert link_id not in kernel_link_ids()
    assert list(obj.links()) == []
    call_getppid(50)
    assert total_count(obj) == 50
    with pytest.raises(ValueError, match="closed"):
        link.fd  # noqa: B018
    link.close()  # twice is fine


def test_link_dropped_without_close_is_detached_when_collected(obj: BPFObject) -> None:
    loaded(obj)
    link = obj.program("count_calls").attach()
    link_id = int(fdinfo(link.fd)["link_id"])
    call_getppid(3)
    assert total_count(obj) == 3
    del link
    gc.collect()
    assert link_id not in kernel_link_ids()
    call_getppid(3)
    assert total_count(obj) == 3


def exits(obj: BPFObject) -> int:
    return struct.unpack("<Q", obj.map("array").lookup(struct.pack("<I", 1)))[0]


def test_a_link_keeps_its_object_alive(object_path: Path) -> None:
    obj = loaded(BPFObject.open(object_path))
    link = obj.program("count_calls").attach()
    alive = weakref.ref(obj)
    del obj
    gc.collect()
    still = alive()
    assert still is not None and not still.closed and not link.closed
    call_getppid(3)
    assert total_count(still) == 3
    del still
    link.close()
    del link
    gc.collect()
    assert alive() is None


def test_closing_the_object_detaches_its_links(object_path: Path) -> None:
    obj = loaded(BPFObject.open(object_path))
    program = obj.program("count_calls")
    first, second = program.attach(), obj.program("count_exits").attach()
    counts = obj.map("counts")
    ids = {int(fdinfo(link.fd)["link_id"]) for link in (first, second)}
    assert ids <= kernel_link_ids()
    call_getppid(4)
    assert total_count(obj) == exits(obj) == 4
    obj.close()
    assert obj.closed and first.closed and second.closed
    assert not ids & kernel_link_ids()
    # handles of a closed object refuse to be used rather than touch freed memory
    with pytest.raises(ValueError, match="closed"):
        counts.fd  # noqa: B018
    with pytest.raises(ValueError, match="closed"):
        program.fd  # noqa: B018
    with pytest.raises(ValueError, match="closed"):
        program.autoload = True
    with pytest.raises(ValueError, match="closed"):
        program.attach()
    with pytest.raises(ValueError, match="closed"):
        obj.load()
    obj.close()  # twice is fine


def test_attach_all_attaches_what_loads(obj: BPFObject) -> None:
    loaded(obj)
    links = obj.attach_all()
    assert sorted(link.program_name for link in links) == ["count_calls", "count_exits"]
    call_getppid(2)
    for link in links:
        link.close()
    call_getppid(2)
    assert total_count(obj) == exits(obj) == 2


# ---- ring buffers


@pytest.fixture
def recording(obj: BPFObject) -> Iterator[BPFObject]:
    """The object loaded with records on (kernel default wake-ups), attached."""
    loaded(obj, record=True)
    with obj.program("count_calls").attach():
        yield obj


def test_ring_records_arrive_exactly(recording: BPFObject) -> None:
    with RingBuffer(recording.map("events"), head_size=16, max_tail=MAX_TAIL) as ring:
        assert len(ring.poll(timeout=0)) == 0
        call_getppid(100)
        got: list[tuple[bytes, bytes]] = []
        for _ in range(50):
            got.extend(ring.poll(timeout=0.1))
            if len(got) >= 100:
                break
        assert got == [split(record(seq), 16) for seq in range(100)]
        assert len(ring.consume()) == 0
        assert ring.oversized == 0


@pytest.mark.parametrize("head_size", [8, 24, 48, 64])
def test_ring_batch_splits_head_and_tail(recording: BPFObject, head_size: int) -> None:
    call_getppid(64)
    with RingBuffer(recording.map("events"), head_size=head_size, max_tail=MAX_TAIL) as ring:
        batch = ring.consume()
    assert isinstance(batch, RecordBatch) and len(batch) == 64
    expected = [split(record(seq), head_size) for seq in range(64)]
    assert list(batch) == expected
    # the raw columns: heads at a fixed stride, tails back to back
    assert batch.head_size == head_size
    assert batch.heads == b"".join(head for head, _ in expected)
    assert batch.tails == b"".join(tail for _, tail in expected)
    assert list(batch.tail_sizes) == [len(tail) for _, tail in expected]


def test_ring_fileno_is_readable_after_a_wakeup(recording: BPFObject) -> None:
    with RingBuffer(recording.map("events"), head_size=16, max_tail=MAX_TAIL) as ring:
        fd = ring.fileno()
        assert not readable(fd, 0)
        call_getppid(3)
        assert readable(fd, 2.0)
        epoll = select.epoll()
        try:
            epoll.register(fd, select.EPOLLIN)
            assert epoll.poll(2.0) == [(fd, select.EPOLLIN)]
            assert len(ring.poll(timeout=0)) == 3
            assert epoll.poll(0) == []
        finally:
            epoll.close()
        assert not readable(fd, 0)


def test_ring_without_wakeups_is_taken_by_consume_and_poll_timeout(obj: BPFObject) -> None:
    loaded(obj, record=True, rb_flags=BPF_RB_NO_WAKEUP)
    with obj.program("count_calls").attach(), \
            RingBuffer(obj.map("events"), head_size=16, max_tail=MAX_TAIL) as ring:
        call_getppid(5)
        assert not readable(ring.fileno(), 0.2)  # no wake-up was sent
        assert [head for head, _ in ring.poll(timeout=0.05)] == \
            [record(seq)[:16] for seq in range(5)]
        call_getppid(5)
        assert [head for head, _ in ring.consume()] == [record(seq)[:16] for seq in range(5, 10)]


def test_ring_poll_without_timeout_waits_for_a_record(recording: BPFObject) -> None:
    def too_long(signum: int, frame: object) -> None:
        raise TimeoutError("poll(None) was not woken")

    with RingBuffer(recording.map("events"), head_size=16, max_tail=MAX_TAIL) as ring:
        caller = threading.Timer(0.2, call_getppid, args=(3,))  # same process, another thread
        previous = signal.signal(signal.SIGALRM, too_long)
        signal.alarm(10)
        try:
            caller.start()
            started = time.monotonic()
            got = list(ring.poll(timeout=None))
            waited = time.monotonic() - started
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            caller.join()
        while len(got) < 3 and (batch := ring.poll(timeout=1.0)):
            got.extend(batch)
    assert waited >= 0.15
    assert got == [split(record(seq), 16) for seq in range(3)]


def test_ring_consume_does_not_wait(recording: BPFObject) -> None:
    with RingBuffer(recording.map("events"), head_size=16, max_tail=MAX_TAIL) as ring:
        assert len(ring.consume()) == 0
        assert list(ring.drain()) == []


def test_ring_small_batches_end_early_and_lose_nothing(recording: BPFObject) -> None:
    call_getppid(50)
    with RingBuffer(recording.map("events"), head_size=16, max_tail=MAX_TAIL,
                    batch_records=7) as ring:
        sizes = []
        got: list[tuple[bytes, bytes]] = []
        for _ in range(3):
            batch = ring.consume()
            sizes.append(len(batch))
            got.extend(batch)
        assert sizes == [7, 7, 7]
        batches = list(ring.drain())
        assert [len(b) for b in batches] == [7, 7, 7, 7, 1]
        for batch in batches:
            got.extend(batch)
        assert got == [split(record(seq), 16) for seq in range(50)]
        # poll() too takes a batch at a time
        call_getppid(10)
        assert len(ring.poll(timeout=1.0)) == 7
        assert len(ring.poll(timeout=1.0)) == 3


def test_ring_batch_bytes_bound_the_tails(recording: BPFObject) -> None:
    call_getppid(64)  # tails 0..31 and 0..31 bytes: 992 bytes each round
    with RingBuffer(recording.map("events"), head_size=16, max_tail=MAX_TAIL,
                    batch_bytes=100) as ring:
        batches = list(ring.drain())
    assert all(len(batch.tails) <= 100 for batch in batches)
    assert len(batches) > 10
    got = [pair for batch in batches for pair in batch]
    assert got == [split(record(seq), 16) for seq in range(64)]


def test_ring_cuts_tails_that_do_not_fit(recording: BPFObject) -> None:
    call_getppid(32)
    with RingBuffer(recording.map("events"), head_size=16, max_tail=4, batch_bytes=4) as ring:
        got = [pair for batch in ring.drain() for pair in batch]
        assert [head for head, _ in got] == [record(seq)[:16] for seq in range(32)]
        assert [tail for _, tail in got] == [record(seq)[16:20] for seq in range(32)]
        assert ring.oversized == 32 - 5  # tails of 0..4 bytes fit whole


def test_ring_over_two_maps(object_path: Path) -> None:
    with BPFObject.open(object_path) as one, BPFObject.open(object_path) as two:
        loaded(one, record=True, tag=1)
        loaded(two, record=True, tag=2)
        with RingBuffer([one.map("events"), two.map("events")], head_size=16,
                        max_tail=MAX_TAIL) as ring, \
                one.program("count_calls").attach(), two.program("count_calls").attach():
            call_getppid(6)
            got = sorted(pair for batch in ring.drain() for pair in batch)
    assert got == sorted([split(record(seq, 1), 16) for seq in range(6)] +
                         [split(record(seq, 2), 16) for seq in range(6)])


def test_ring_argument_checks(obj: BPFObject) -> None:
    loaded(obj)
    with pytest.raises(ValueError, match="not a ring buffer"):
        RingBuffer(obj.map("hash"), head_size=16, max_tail=MAX_TAIL)
    with pytest.raises(ValueError, match="at least one map"):
        RingBuffer([], head_size=16, max_tail=MAX_TAIL)
    with pytest.raises(ValueError, match="batch_bytes"):
        RingBuffer(obj.map("events"), head_size=16, max_tail=64, batch_bytes=32)
    with pytest.raises(ValueError, match="batch_records"):
        RingBuffer(obj.map("events"), head_size=16, max_tail=MAX_TAIL, batch_records=0)
    with pytest.raises(ValueError, match="negative"):
        RingBuffer(obj.map("events"), head_size=-1, max_tail=MAX_TAIL)
    ring = RingBuffer(obj.map("events"), head_size=16, max_tail=MAX_TAIL)
    ring.close()
    assert ring.closed
    with pytest.raises(ValueError, match="closed"):
        ring.poll(0)
    ring.close()


def test_the_loader_imports_without_the_tracer() -> None:
    # the generic loader is for other tools too: it must not drag in the open tracer
    code = ("import sys, echo_open.loader; "
            "print(sorted(m for m in sys.modules if m.startswith('echo_open')))")
    loaded_modules = subprocess.run([sys.executable, "-c", code], check=True,
                                    capture_output=True, text=True).stdout
    assert "echo_open.loader" in loaded_modules
    for module in ("echo_open.tracer", "echo_open.events", "echo_open.render", "echo_open.cli"):
        assert f"'{module}'" not in loaded_modules
    import echo_open
    assert all(getattr(echo_open, name) for name in echo_open.__all__)
