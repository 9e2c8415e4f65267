"""Filters run in the kernel: matching opens come through, the rest never reach the ring."""

from __future__ import annotations

import os
from collections.abc import Callable

from conftest import Child, collect, events_of
from echo_open import Filters, Tracer


def _under(directory: os.PathLike) -> Callable[[bytes], bool]:
    prefix = os.fsencode(directory)
    return lambda p: p.startswith(prefix)


def _wanted_and_other(tmp_path, *actions: str, **kwargs) -> tuple[Child, Child]:
    return Child(*actions, **kwargs), Child(*actions)


def _assert_only(tracer: Tracer, wanted: Child, other: Child, tmp_path, count: int) -> None:
    wanted.go()
    other.go()
    events = events_of(tracer, wanted, count, path_filter=_under(tmp_path))
    assert len(events) == count
    # the other child's opens were kept out in the kernel
    seen_pids = {e.pid for e in tracer.read(0.3)} | {e.pid for e in events}
    assert other.pid not in seen_pids
    assert tracer.stats().filtered > 0


def test_pid_filter(start_tracer, tmp_path):
    wanted, other = _wanted_and_other(tmp_path, f"openat:.:{tmp_path}/p")
    tracer = start_tracer(Filters(pids=[wanted.pid]))
    _assert_only(tracer, wanted, other, tmp_path, 1)


def test_several_pids(start_tracer, tmp_path):
    first, second, other = (Child(f"openat:.:{tmp_path}/m") for _ in range(3))
    tracer = start_tracer(Filters(pids=[first.pid, second.pid]))
    for child in (first, second, other):
        child.go()
    events = collect(tracer, lambda e: e.path_bytes.startswith(bytes(tmp_path)),
                     lambda evs: len(evs) >= 2)
    events += tracer.read(0.3)
    assert {e.pid for e in events} == {first.pid, second.pid}


def test_tid_filter(start_tracer, tmp_path):
    wanted, other = _wanted_and_other(tmp_path, f"openat:.:{tmp_path}/t")
    tracer = start_tracer(Filters(tids=[wanted.pid]))  # the main thread's tid is the pid
    _assert_only(tracer, wanted, other, tmp_path, 1)


def test_uid_filter(start_tracer, tmp_path):
    os.chmod(tmp_path, 0o777)
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    wanted = Child(f"openat:.:{tmp_path}/u", prefix=nobody)
    other = Child(f"openat:.:{tmp_path}/u")
    tracer = start_tracer(Filters(uid=65534))
    wanted.go()
    other.go()
    events = events_of(tracer, wanted, 1, path_filter=_under(tmp_path))
    assert [e.uid for e in events] == [65534]
    assert other.pid not in {e.pid for e in tracer.read(0.3)}


def test_failed_only(start_tracer, tmp_path):
    (tmp_path / "exists").write_text("")
    child = Child(f"openat:.:{tmp_path}/exists", f"openat:.:{tmp_path}/missing")
    tracer = start_tracer(Filters(pids=[child.pid], failed_only=True))
    child.go()
    events = events_of(tracer, child, 1, path_filter=_under(tmp_path))
    events += [e for e in tracer.read(0.3) if e.path_bytes.startswith(bytes(tmp_path))]
    assert [(e.path, e.error) for e in events] == [(f"{tmp_path}/missing", "ENOENT")]


def test_name_filter_is_a_substring(start_tracer, tmp_path):
    wanted = Child(f"openat:.:{tmp_path}/n", name="zz-wanted-zz")
    other = Child(f"openat:.:{tmp_path}/n", name="zz-other-zz")
    tracer = start_tracer(Filters(comm="wanted"))
    _assert_only(tracer, wanted, other, tmp_path, 1)


def test_flags_filter_any_of(start_tracer, tmp_path):
    child = Child(f"openat:.:{tmp_path}/r",
                  f"openat:.:{tmp_path}/w:{os.O_WRONLY | os.O_CREAT}",
                  f"openat:.:{tmp_path}/a:{os.O_RDWR | os.O_APPEND | os.O_CREAT}",
                  f"openat:.:{tmp_path}/c:{os.O_RDWR | os.O_CREAT}")
    tracer = start_tracer(Filters(pids=[child.pid], flags=[os.O_WRONLY, os.O_APPEND]))
    child.go()
    events = events_of(tracer, child, 2, path_filter=_under(tmp_path))
    events += [e for e in tracer.read(0.3) if e.path_bytes.startswith(bytes(tmp_path))]
    assert sorted(e.path.rsplit("/", 1)[1] for e in events) == ["a", "w"]


def test_flags_filter_rdonly(start_tracer, tmp_path):
    (tmp_path / "r").write_text("")
    child = Child(f"openat:.:{tmp_path}/r", f"openat:.:{tmp_path}/w:{os.O_WRONLY | os.O_CREAT}")
    tracer = start_tracer(Filters(pids=[child.pid], flags=[0]))
    child.go()
    events = events_of(tracer, child, 1, path_filter=_under(tmp_path))
    events += [e for e in tracer.read(0.3) if e.path_bytes.startswith(bytes(tmp_path))]
    assert [e.path.rsplit("/", 1)[1] for e in events] == ["r"]


def test_path_prefix_on_the_path_as_passed(start_tracer, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    child = Child(f"openat:.:{tmp_path}/in/a", f"openat:.:{tmp_path}/out/b",
                  f"chdir:{tmp_path}/in", "openat:.:c")
    tracer = start_tracer(Filters(pids=[child.pid], path_prefixes=[f"{tmp_path}/in/", "/nowhere/"]))
    child.go()
    events = events_of(tracer, child, 1)
    events += tracer.read(0.3)
    # the relative "c" does not start with the prefix as passed
    assert [e.path for e in events if e.pid == child.pid] == [f"{tmp_path}/in/a"]


def test_path_prefix_on_the_resolved_path(start_tracer, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "c").write_text("")
    child = Child(f"openat:.:{tmp_path}/out-a", f"chdir:{tmp_path}/in", "openat:.:c",
                  "openat:.:missing")
    tracer = start_tracer(Filters(pids=[child.pid], path_prefixes=[f"{tmp_path}/in/"],
                                  prefix_on_resolved=True))
    child.go()
    events = events_of(tracer, child, 2)
    events += tracer.read(0.3)
    mine = [(e.path, e.resolved) for e in events if e.pid == child.pid]
    assert mine == [("c", f"{tmp_path}/in/c"), ("missing", f"{tmp_path}/in/missing")]


def test_no_filter_match_emits_nothing(start_tracer, tmp_path):
    child = Child(*(f"openat:.:{tmp_path}/x{i}" for i in range(50)))
    tracer = start_tracer(Filters(comm="no-such-name"))
    before = tracer.stats()
    child.go()
    assert [e for e in tracer.read(0.5) if e.pid == child.pid] == []
    after = tracer.stats()
    assert after.emitted == before.emitted
    assert after.filtered - before.filtered >= 50
