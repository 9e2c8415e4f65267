"""The Python API: iterator, batches, asyncio, and exact accounting of drops."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from conftest import Child, collect
from echo_open import Filters, OpenEvent, Tracer, Tuning
from echo_open.events import decode_batch
from echo_open.render import JsonRenderer


def _under(tmp_path) -> callable:
    prefix = os.fsencode(str(tmp_path))
    return lambda e: e.path_bytes.startswith(prefix)


def test_events_iterator_delivers_a_childs_opens_and_ends_on_timeout(tmp_path):
    child = Child(f"openat:.:{tmp_path}/a", f"openat:.:{tmp_path}/b")
    with Tracer(Filters(pids=[child.pid]), Tuning(poll_interval=0.05)) as tracer:
        child.go()
        events = [e for e in tracer.events(timeout=1.0) if _under(tmp_path)(e)]
    assert [e.path for e in events] == [f"{tmp_path}/a", f"{tmp_path}/b"]
    assert all(isinstance(e, OpenEvent) and e.pid == child.pid for e in events)
    assert not tracer.running


def test_batches_are_lists_per_ring_batch(tmp_path):
    child = Child(*(f"openat:.:{tmp_path}/f{i}" for i in range(100)))
    with Tracer(Filters(pids=[child.pid]), Tuning(poll_interval=0.05)) as tracer:
        child.go()
        batches = list(tracer.batches(timeout=1.0))
    mine = [e for batch in batches for e in batch if _under(tmp_path)(e)]
    assert all(isinstance(batch, list) for batch in batches)
    assert [e.path for e in mine] == [f"{tmp_path}/f{i}" for i in range(100)]


def test_raw_batches_render_in_c_as_the_reference_renders_their_events(tmp_path):
    names = [f"{tmp_path}/raw{i}" for i in range(50)]
    child = Child(*(f"creat:{name}" for name in names), f"openat:.:{tmp_path}/missing/x")
    renderer, reference = JsonRenderer(), JsonRenderer()
    rendered, expected = b"", ""
    with Tracer(Filters(pids=[child.pid]), Tuning(poll_interval=0.05)) as tracer:
        child.go()
        tracer.detach()
        for batch in tracer.drain_records():
            # a chunk is valid until the next one is asked for: copy each
            for chunk in renderer.render_batch(batch, tracer.wall_offset_ns):
                rendered += bytes(chunk)
            expected += reference.lines(decode_batch(batch, tracer.wall_offset_ns))
    assert rendered == expected.encode()
    records = [json.loads(line) for line in rendered.splitlines()]
    mine = [r for r in records if r["path"].startswith(str(tmp_path))]
    assert [r["path"] for r in mine] == [*names, f"{tmp_path}/missing/x"]
    assert all(r["pid"] == child.pid and r["syscall"] == "creat" and r["fd"] >= 0
               and r["resolved"] == r["path"] for r in mine[:-1])
    assert mine[-1]["error"] == "ENOENT"


def test_follow_children_traces_a_process_tree_and_forgets_each_process_at_exit(tmp_path):
    import subprocess

    script = f"read go; for i in $(seq 20); do cat {tmp_path}/c$i 2>/dev/null; done"
    shell = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE)
    with Tracer(Filters(pids=[shell.pid], follow_children=True),
                Tuning(poll_interval=0.05)) as tracer:
        shell.communicate(b"go\n", timeout=30)  # held on `read` until traced
        tracer.detach()
        events = [e for e in tracer.drain() if _under(tmp_path)(e)]
        followed = list(tracer._obj.map("filter_pids").keys())
    assert sorted(e.path for e in events) == sorted(f"{tmp_path}/c{i}" for i in range(1, 21))
    assert all(e.comm == "cat" and e.error == "ENOENT" and e.ppid == shell.pid for e in events)
    assert len({e.pid for e in events}) == 20
    assert followed == []  # every process of the tree has exited, the shell included


def test_follow_children_needs_pids():
    with pytest.raises(ValueError, match="follow_children"):
        Tracer(Filters(follow_children=True))


def test_async_iteration_through_the_rings_fd(tmp_path):
    child = Child(f"openat:.:{tmp_path}/async1", f"openat:.:{tmp_path}/async2")

    async def main() -> list[OpenEvent]:
        seen: list[OpenEvent] = []
        with Tracer(Filters(pids=[child.pid]), Tuning(poll_interval=0.05)) as tracer:
            await asyncio.get_running_loop().run_in_executor(None, child.go)

            async def gather() -> None:
                async for event in tracer:
                    if _under(tmp_path)(event):
                        seen.append(event)
                        if len(seen) == 2:
                            return

            await asyncio.wait_for(gather(), timeout=10)
        return seen

    events = asyncio.run(main())
    assert [e.path for e in events] == [f"{tmp_path}/async1", f"{tmp_path}/async2"]


def test_wakeup_per_record_mode_delivers_through_fileno(tmp_path):
    import select

    child = Child(f"openat:.:{tmp_path}/woken")
    with Tracer(Filters(pids=[child.pid]), Tuning(wakeup_bytes=0)) as tracer:
        child.go()
        readable, _, _ = select.select([tracer.fileno()], [], [], 5)
        assert readable == [tracer.fileno()]
        events = collect(tracer, _under(tmp_path), lambda evs: len(evs) >= 1)
    assert [e.path for e in events] == [f"{tmp_path}/woken"]


def test_nothing_is_lost_silently_when_the_ring_overflows(tmp_path):
    count = 3000
    child = Child(*(f"openat:.:{tmp_path}/{'d' * 200}{i}" for i in range(count)))
    # a tiny ring nobody reads while the child opens: most records cannot fit
    with Tracer(Filters(pids=[child.pid]),
                Tuning(ring_size=1 << 16, wakeup_bytes=(1 << 16) - 4096)) as tracer:
        before = tracer.stats()
        child.go()
        seen = [e for e in tracer.drain() if _under(tmp_path)(e)]
        stats = tracer.stats() - before
    assert stats.ring_full > 0
    assert len(seen) + stats.ring_full + stats.args_full == count
    assert stats.emitted == len(seen)
