"""Each open-family syscall is traced with the right fields."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from conftest import Child, events_of


def _only(path: os.PathLike | str) -> Callable[[bytes], bool]:
    raw = os.fsencode(path)
    return lambda p: p == raw


@pytest.mark.parametrize("syscall", ["open", "openat"])
def test_open_and_openat(tracer, tmp_path, syscall):
    target = tmp_path / "file"
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    action = f"open:{target}:{flags}" if syscall == "open" else f"openat:.:{target}:{flags}"
    child = Child(action)
    (result,) = child.go()
    (event,) = events_of(tracer, child, 1, path_filter=_only(target))
    assert event.syscall == syscall
    assert event.ret == result["ret"] >= 0
    assert event.flags == flags
    assert event.flags_text == "O_WRONLY|O_CREAT|O_CLOEXEC"
    assert event.mode == (0o644 if syscall == "open" else 0o600)
    assert event.dfd == -100  # AT_FDCWD
    assert event.resolved == str(target) and event.resolved_canonical


def test_openat2_carries_flags_mode_and_resolve(tracer, tmp_path):
    target = tmp_path / "two"
    target.write_text("")
    resolve_beneath = 0x08
    child = Child(f"openat2:{target}:{os.O_RDONLY}:{resolve_beneath}")
    (result,) = child.go()
    (event,) = events_of(tracer, child, 1, path_filter=_only(target))
    assert event.syscall == "openat2"
    # an absolute path with RESOLVE_BENEATH from AT_FDCWD is refused: EXDEV
    assert result["ret"] == -1
    assert event.errno == result["errno"] == 18  # EXDEV
    assert event.error == "EXDEV"
    assert event.resolve == resolve_beneath


def test_openat2_success(tracer, tmp_path):
    target = tmp_path / "ok2"
    target.write_text("")
    child = Child(f"openat2:{target}:{os.O_RDONLY | os.O_NOFOLLOW}:0")
    (result,) = child.go()
    (event,) = events_of(tracer, child, 1, path_filter=_only(target))
    assert event.syscall == "openat2"
    assert event.fd == result["ret"] >= 0
    assert event.flags == os.O_NOFOLLOW


def test_creat(tracer, tmp_path):
    target = tmp_path / "created"
    child = Child(f"creat:{target}:{0o640}")
    (result,) = child.go()
    (event,) = events_of(tracer, child, 1, path_filter=_only(target))
    assert event.syscall == "creat"
    assert event.fd == result["ret"] >= 0
    assert event.flags == os.O_CREAT | os.O_WRONLY | os.O_TRUNC
    assert event.mode == 0o640
    assert target.exists()


def test_latency_and_times_are_sane(tracer, tmp_path):
    import time

    before = time.time_ns()
    child = Child(f"openat:.:{tmp_path}/lat")
    child.go()
    (event,) = events_of(tracer, child, 1, path_filter=_only(f"{tmp_path}/lat"))
    after = time.time_ns()
    assert 0 < event.latency_ns < 1_000_000_000
    assert before <= event.wall_ns <= after
    assert event.time.year >= 2024


def test_open_by_handle_at_has_no_path_but_resolves(tracer, tmp_path):
    target = tmp_path / "by-handle"
    target.write_text("")
    child = Child(f"byhandle:{target}")
    (result,) = child.go()
    assert result["ret"] >= 0, result
    (event,) = [e for e in events_of(tracer, child, 1,
                                     path_filter=lambda p: p == b"")
                if e.syscall == "open_by_handle_at"]
    assert event.fd == result["ret"]
    assert event.path == ""
    assert event.resolved == str(target) and event.resolved_canonical
