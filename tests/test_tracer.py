"""The open tracer against the real kernel: real opens from a child, real events."""

from __future__ import annotations

import errno
import os

from conftest import Child, events_of


def test_open_of_a_fresh_file_has_pid_comm_fd_and_path(tracer, tmp_path):
    target = tmp_path / "fresh.txt"
    target.write_text("x")
    child = Child(f"openat:.:{target}")
    results = child.go()
    (event,) = events_of(tracer, child, 1, path_filter=lambda p: p == os.fsencode(target))
    assert event.pid == child.pid
    assert event.tid == child.pid
    assert event.comm == child.name
    assert event.syscall == "openat"
    assert event.fd == results[0]["ret"] >= 0
    assert event.error is None and event.errno is None
    assert event.path == str(target)
    assert event.uid == 0
    assert event.ppid == os.getpid()
    assert event.latency_ns > 0
    assert not event.truncated


def test_missing_file_gives_enoent(tracer, tmp_path):
    missing = tmp_path / "missing"
    child = Child(f"openat:.:{missing}")
    child.go()
    (event,) = events_of(tracer, child, 1, path_filter=lambda p: p == os.fsencode(missing))
    assert event.ret == -errno.ENOENT
    assert event.error == "ENOENT"
    assert event.fd is None


def test_4095_byte_path_arrives_whole(tracer, tmp_path):
    # a real 4095-byte path: nested directories of 200-byte names
    base = str(tmp_path)
    parts = []
    length = len(base)
    while length + 201 < 4095 - 10:
        parts.append("d" * 200)
        length += 201
    directory = os.path.join(base, *parts)
    os.makedirs(directory)
    leaf_len = 4095 - len(directory) - 1
    path = os.path.join(directory, "f" * leaf_len)
    assert len(path) == 4095
    child = Child(f"openat:.:{path}:{os.O_CREAT | os.O_WRONLY}")
    results = child.go()
    assert results[0]["ret"] >= 0, results
    (event,) = events_of(tracer, child, 1, path_filter=lambda p: p.startswith(base.encode()))
    assert event.path == path
    assert len(event.path_bytes) == 4095
    assert not event.truncated
    assert event.resolved == path


def test_stats_count_what_was_emitted(tracer, tmp_path):
    child = Child(*(f"openat:.:{tmp_path}/n{i}" for i in range(20)))
    child.go()
    events = events_of(tracer, child, 20,
                       path_filter=lambda p: p.startswith(os.fsencode(f"{tmp_path}/n")))
    assert len(events) == 20
    stats = tracer.stats()
    assert stats.emitted >= 20
    assert stats.dropped == 0
