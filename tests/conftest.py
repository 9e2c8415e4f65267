"""Shared fixtures. Every test here runs against the real kernel, as root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from echo_open import Filters, OpenEvent, Tracer, Tuning

HERE = Path(__file__).resolve().parent
OPENER = HERE / "opener.py"


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the tests load BPF programs: run them as root")


def pytest_runtest_logstart(nodeid: str, location: tuple) -> None:
    # the kernel runner names the test a guest died in (a panic leaves no pytest report)
    if current := os.environ.get("EO_CURRENT_TEST_FILE"):
        Path(current).write_text(nodeid + "\n")


class Child:
    """A process that opens what it is told once we say go (its pid is known before)."""

    _count = 0

    def __init__(self, *actions: str, name: str | None = None, cwd: str | None = None,
                 prefix: tuple[str, ...] = ()) -> None:
        Child._count += 1
        self.name = name or f"eo-child-{Child._count}"
        self.proc = subprocess.Popen([*prefix, sys.executable, str(OPENER), self.name,
                                      *actions],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=cwd)
        assert self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid

    def go(self) -> list[dict]:
        """Let it make its opens; returns what each returned."""
        out, _ = self.proc.communicate("go\n", timeout=30)
        assert self.proc.returncode == 0
        return [json.loads(line) for line in out.splitlines()]


def collect(tracer: Tracer, match: Callable[[OpenEvent], bool],
            until: Callable[[list[OpenEvent]], bool], timeout: float = 10.0) -> list[OpenEvent]:
    """Events that ``match``, read until ``until(events)`` holds or ``timeout`` passes."""
    events: list[OpenEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events.extend(e for e in tracer.read(0.2) if match(e))
        if until(events):
            break
    return events


def events_of(tracer: Tracer, child: Child, count: int, timeout: float = 10.0,
              path_filter: Callable[[bytes], bool] | None = None) -> list[OpenEvent]:
    """The child's events (optionally only some paths), at least ``count`` of them."""
    def match(e: OpenEvent) -> bool:
        return e.pid == child.pid and (path_filter is None or path_filter(e.path_bytes))

    return collect(tracer, match, lambda evs: len(evs) >= count, timeout)


@pytest.fixture
def start_tracer() -> Iterator[Callable[..., Tracer]]:
    """start_tracer(Filters(...), **tuning) -> a started Tracer, closed after the test."""
    tracers: list[Tracer] = []

    def start(filters: Filters | None = None, **tuning) -> Tracer:
        tuning.setdefault("poll_interval", 0.05)
        tracer = Tracer(filters, Tuning(**tuning)).start()
        tracers.append(tracer)
        return tracer

    yield start
    for tracer in tracers:
        tracer.close()


@pytest.fixture
def tracer(start_tracer) -> Tracer:
    return start_tracer()


@pytest.fixture
def perf_events_for_capabilities() -> Iterator[None]:
    """Debian's kernels (6.1) start with kernel.perf_event_paranoid=3, where attaching
    needs CAP_SYS_ADMIN; at 2 CAP_PERFMON is enough. Lowered for a test that runs without
    CAP_SYS_ADMIN and checks something else, then restored."""
    knob = Path("/proc/sys/kernel/perf_event_paranoid")
    before = knob.read_text()
    if int(before) > 2:
        knob.write_text("2")
    yield
    knob.write_text(before)
