"""The summary view: csrc/summary.c's counters through echo_open.Summary, `echo-open top`
and `--summary`. Real opens with known counts from child processes, counted from the real
ring buffer; the C aggregator's edge cases with records built in memory (pure decoding)."""

from __future__ import annotations

import errno
import json
import os
import pty
import re
import select
import signal
import subprocess
import termios
import time
from array import array

import pytest
from test_cli import ECHO_OPEN, READY, Cli

from conftest import Child
from echo_open import Filters, Summary
from echo_open.layout import EVENT_FIELDS, EVENT_SIZE, EVENT_STRUCT, MAX_TAIL, PATH_MAX
from echo_open.loader import RecordBatch
from echo_open.summary import ERRNO_SLOTS, MAX_TOP

FAULT = 2      # EO_ST_PATH_FAULT
TRUNCATED = 1  # EO_ST_PATH_TRUNCATED
MISSING = "/nonexistent-eo-summary/missing"


def opens_of(directory) -> tuple[str, str, list[str]]:
    """A child's actions: file A 37 times, B 5 times, a missing path 11 times."""
    a, b = directory / "A", directory / "B"
    a.write_text("a")
    b.write_text("b")
    return (str(a), str(b),
            [f"open:{a}"] * 37 + [f"open:{b}"] * 5 + [f"open:{MISSING}"] * 11)


# ---- against the real kernel -------------------------------------------------------------

def test_a_child_s_opens_are_counted_exactly(start_tracer, tmp_path):
    a, b, actions = opens_of(tmp_path)
    child = Child(*actions)
    tracer = start_tracer(Filters(pids=[child.pid]), resolve_paths=False)
    results = child.go()
    assert sum(r["ret"] < 0 for r in results) == 11
    summary = Summary()
    deadline = time.monotonic() + 10
    while summary.totals().opens < 53 and time.monotonic() < deadline:
        summary.feed(tracer.read_records(0.2))
    tracer.detach()
    for batch in tracer.drain_records():
        summary.feed(batch)

    top = summary.top(10)
    assert [(p.path, p.opens, p.errors, p.last_error) for p in top.paths] == [
        (a, 37, 0, None), (MISSING, 11, 11, "ENOENT"), (b, 5, 0, None)]
    assert [(p.pid, p.comm, p.opens, p.errors, p.last_error) for p in top.processes] == [
        (child.pid, child.name, 53, 11, "ENOENT")]
    assert [(e.errno, e.error, e.count) for e in top.errors] == [(errno.ENOENT, "ENOENT", 11)]
    assert (top.totals.opens, top.totals.errors, top.totals.paths) == (53, 11, 3)
    # by failed opens, the missing path first; the whole run equals the interval here
    assert summary.top(1, by="errors").paths[0].path == MISSING
    assert summary.top(10, cumulative=True).paths == top.paths
    summary.reset_interval()
    assert summary.top(10).paths == [] and summary.totals().opens == 0
    assert summary.top(10, cumulative=True).paths == top.paths


def _intervals(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def _counts_by_path(frames: list[dict]) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    for frame in frames:
        for row in frame["paths"]:
            opens, errors = counts.get(row["path"], (0, 0))
            counts[row["path"]] = (opens + row["opens"], errors + row["errors"])
    return counts


def _run_cli_with_child(args: list[str], actions: list[str]) -> tuple[int, str, str, Child]:
    child = Child(*actions)
    cli = Cli(*args, "-p", str(child.pid))
    child.go()
    out, err = cli.proc.communicate(timeout=60)
    return cli.proc.returncode, out.decode(), err.decode(), child


def test_top_json_gives_one_object_per_interval_that_add_up(tmp_path):
    a, b, actions = opens_of(tmp_path)
    status, out, err, child = _run_cli_with_child(
        ["top", "--json", "-i", "0.5", "-d", "2.5"], actions)
    assert status == 0, err
    frames = _intervals(out)
    # every 0.5 s until -d, and the one that stopping ended; none is a summary
    assert 4 <= len(frames) <= 8, out
    assert {f["kind"] for f in frames} == {"interval"}
    assert _counts_by_path(frames) == {a: (37, 0), b: (5, 0), MISSING: (11, 11)}
    assert sum(f["opens"] for f in frames) == 53
    assert sum(f["errors"] for f in frames) == 11
    for frame in frames:
        assert frame["seconds"] > 0
        # the rate is the interval's count over its length (rounded to 3 places)
        assert frame["opens_per_s"] == pytest.approx(frame["opens"] / frame["seconds"],
                                                     abs=1e-3)
        assert frame["lost"] == 0
        assert list(frame) == ["kind", "time", "seconds", "opens", "errors", "lost",
                               "opens_per_s", "errors_per_s", "lost_per_s", "sort", "paths",
                               "processes", "errors_by_errno", "other"]
    busy = [f for f in frames if f["opens"]]
    assert all(f["processes"][0]["pid"] == child.pid for f in busy)
    assert sum(e["count"] for f in frames for e in f["errors_by_errno"]
               if e["error"] == "ENOENT") == 11
    assert re.search(r"53 events counted, .* 0 lost", err)


_ROW = re.compile(r"^ +(\d+) +(\d+) (.{10}) (.*)$")


def _path_rows(block: str) -> dict[str, tuple[int, int, str]]:
    """The PATH table of one text block: path -> (opens, errors, error)."""
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(" PATH"))
    rows = {}
    for line in lines[start + 1:]:
        if not line:
            break
        match = _ROW.match(line)
        assert match, line
        rows[match.group(4)] = (int(match.group(1)), int(match.group(2)),
                                match.group(3).strip())
    return rows


def test_top_without_a_terminal_prints_plain_blocks_then_the_summary(tmp_path):
    a, b, actions = opens_of(tmp_path)
    status, out, err, child = _run_cli_with_child(
        ["top", "-i", "1", "-d", "2", "--summary", "-N", "5"], actions)
    assert status == 0, err
    assert "\x1b" not in out  # no escapes when stdout is not a terminal
    blocks = out.split("\n\n")
    titles = [block.splitlines()[0] for block in blocks if block.startswith("echo-open ")]
    assert all(t.startswith("echo-open top ") for t in titles[:-1])
    assert titles[-1].startswith("echo-open summary ")
    summary = out[out.index("echo-open summary "):]
    assert _path_rows(summary) == {a: (37, 0, ""), MISSING: (11, 11, "ENOENT"), b: (5, 0, "")}
    assert "(53 opens, 11 errors, 0 lost)" in summary.splitlines()[1]
    assert re.search(rf"^ +53 +11 ENOENT +{child.pid} +{child.name}$", summary, re.M)
    assert re.search(r"^ +11 +2 ENOENT$", summary, re.M)


def test_trace_summary_counts_instead_of_showing_events(tmp_path):
    a, b, actions = opens_of(tmp_path)
    status, out, err, child = _run_cli_with_child(["--summary", "-d", "2"], actions)
    assert status == 0, err
    assert out.startswith("echo-open summary ")
    assert _path_rows(out) == {a: (37, 0, ""), MISSING: (11, 11, "ENOENT"), b: (5, 0, "")}

    status, out, err, child = _run_cli_with_child(
        ["--summary", "--json", "-x", "--sort", "name", "-d", "2"], actions)
    assert status == 0, err
    (record,) = _intervals(out)  # one object, at exit
    assert record["kind"] == "summary"
    assert (record["opens"], record["errors"]) == (11, 11)  # -x: the kernel kept the rest
    assert [(r["path"], r["opens"], r["error"]) for r in record["paths"]] == [
        (MISSING, 11, "ENOENT")]
    assert record["processes"][0]["comm"] == child.name


def test_q_on_the_terminal_stops_top_and_gives_the_terminal_back():
    main, side = pty.openpty()
    before = termios.tcgetattr(side)
    proc = subprocess.Popen([ECHO_OPEN, "top", "-i", "0.3", "-p", "4194304"],
                            stdin=side, stdout=side, stderr=subprocess.PIPE)
    try:
        assert proc.stderr.readline().decode().startswith(READY)
        screen = b""
        deadline = time.monotonic() + 10
        while screen.count(b"\x1b[H\x1b[2J") < 2 and time.monotonic() < deadline:
            if select.select([main], [], [], 0.2)[0]:
                screen += os.read(main, 65536)
        assert screen.count(b"\x1b[H\x1b[2J") >= 2, screen  # frames replace each other
        assert b"echo-open top " in screen
        os.write(main, b"q")
        assert proc.wait(timeout=10) == 0
        assert termios.tcgetattr(side)[3] == before[3]  # canonical mode and echo again
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(main)
        os.close(side)


def test_ctrl_c_stops_top_as_it_stops_the_tracer():
    cli = Cli("top", "-p", "4194304", "-i", "0.3")
    lines = cli.lines_until(lambda got: any(line.startswith("echo-open top ") for line in got))
    assert lines
    status, err = cli.stop(signal.SIGINT)
    assert status == 0, err
    assert "0 events counted" in err


@pytest.mark.parametrize("args, option", [
    (["top", "-i", "0"], "'-i' / '--interval'"),
    (["top", "-N", "0"], "'-N' / '--rows'"),
    (["top", "--sort", "size"], "'--sort'"),
    (["top", "-p", "-3"], "'-p' / '--pid'"),
    (["-N", "3"], "'-N' / '--sort'"),
    (["--summary", "-F"], "'--summary'"),
])
def test_bad_options_are_one_line_and_exit_2(args, option):
    proc = subprocess.run([ECHO_OPEN, *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and option in proc.stderr, proc.stderr


# ---- the C aggregator, fed records built in memory ----------------------------------------

def record(path: bytes, *, pid: int = 100, comm: bytes = b"proc", ret: int = 3,
           status: int = 0, path_len: int | None = None, tail: bytes | None = None
           ) -> tuple[bytes, bytes]:
    values = dict.fromkeys(EVENT_FIELDS, 0)
    values.update(pid=pid, tid=pid, comm=comm, ret=ret, status=status,
                  path_len=len(path) if path_len is None else path_len)
    return EVENT_STRUCT.pack(*(values[name] for name in EVENT_FIELDS)), (
        path if tail is None else tail)


def batch_of(records: list[tuple[bytes, bytes]], *, sizes: list[int] | None = None,
             head_size: int = EVENT_SIZE, heads: bytes | None = None) -> RecordBatch:
    return RecordBatch(head_size,
                       b"".join(h for h, _ in records) if heads is None else heads,
                       b"".join(t for _, t in records),
                       array("I", [len(t) for _, t in records] if sizes is None else sizes))


def test_a_full_path_table_counts_the_rest_as_other():
    summary = Summary(max_paths=4, max_processes=2)
    records = [record(f"/p{i}".encode(), pid=i % 3, ret=-2 if i % 2 else 5) for i in range(10)]
    summary.feed(batch_of(records * 3))
    totals = summary.totals()
    assert (totals.opens, totals.errors) == (30, 15)
    assert (totals.paths, totals.processes) == (4, 2)
    kept = summary.top(10, by="name").paths
    assert [p.path for p in kept] == ["/p0", "/p1", "/p2", "/p3"]  # the first four seen
    assert sum(p.opens for p in kept) + totals.other_paths.opens == 30
    assert sum(p.errors for p in kept) + totals.other_paths.errors == 15
    procs = summary.top(10, by="name").processes
    assert [p.pid for p in procs] == [0, 1]
    assert sum(p.opens for p in procs) + totals.other_processes.opens == 30


def test_reset_keeps_keys_while_half_full_and_prunes_idle_ones_past_it():
    summary = Summary(max_paths=8)
    summary.feed(batch_of([record(b"/a"), record(b"/b"), record(b"/c")]))
    summary.reset_interval()  # 3 of 8: every key stays
    assert summary.totals().paths == 3
    summary.feed(batch_of([record(b"/a")] + [record(f"/n{i}".encode()) for i in range(3)]))
    summary.reset_interval()  # 6 of 8: /b and /c had nothing this interval: dropped
    totals = summary.totals(cumulative=True)
    assert (totals.paths, totals.pruned_paths) == (4, 2)
    assert totals.other_paths.opens == 2 and totals.opens == 7
    assert [(p.path, p.opens) for p in summary.top(10, cumulative=True).paths] == [
        ("/a", 2), ("/n0", 1), ("/n1", 1), ("/n2", 1)]
    # room again: new keys are told apart
    summary.feed(batch_of([record(b"/z")] * 4))
    assert summary.top(1).paths[0].path == "/z"


def test_long_cut_and_unreadable_paths_are_keys_of_their_own():
    whole = b"/" + b"x" * (PATH_MAX - 2)           # 4095 bytes: whole
    summary = Summary()
    summary.feed(batch_of([
        record(whole), record(whole, status=TRUNCATED),
        record(b"", status=FAULT, ret=-14), record(b"", ret=-2),
        # the consumer cut this tail: shorter than path_len says
        record(b"/short", path_len=200, tail=b"/short"),
    ]))
    rows = {(p.path_bytes, p.truncated, p.unreadable): p for p in summary.top(10).paths}
    assert set(rows) == {(whole, False, False), (whole, True, False), (b"", False, True),
                         (b"", False, False), (b"/short", True, False)}
    assert rows[(b"", False, True)].last_error == "EFAULT"
    assert summary.totals().path_bytes == 2 * len(whole) + len(b"/short")


def test_process_keys_ignore_what_follows_the_name_s_nul():
    summary = Summary()
    summary.feed(batch_of([record(b"/a", comm=b"cat\0stale"), record(b"/a", comm=b"cat\0"),
                           record(b"/a", comm=b"exactly16bytes!!"), record(b"/a", pid=7)]))
    assert [(p.pid, p.comm_bytes, p.opens) for p in summary.top(10).processes] == [
        (100, b"cat", 2), (7, b"proc", 1), (100, b"exactly16bytes!!", 1)]


def test_errnos_past_the_table_are_other_and_sorts_break_ties_by_key():
    summary = Summary()
    summary.feed(batch_of([record(b"/e", ret=-ERRNO_SLOTS), record(b"/e", ret=-13),
                           record(b"/d", ret=-2), record(b"/d", ret=-2), record(b"/c")]))
    assert summary.totals().other_errnos == 1
    assert [(e.errno, e.count) for e in summary.top(10).errors] == [(2, 2), (13, 1)]
    assert [p.path for p in summary.top(10, by="errors").paths] == ["/d", "/e", "/c"]
    assert [p.path for p in summary.top(10, by="opens").paths] == ["/d", "/e", "/c"]
    assert [p.path for p in summary.top(10, by="name").paths] == ["/c", "/d", "/e"]
    assert [p.path for p in summary.top(2).paths] == ["/d", "/e"]
    assert summary.top(0).paths == []
    with pytest.raises(ValueError):
        summary.top(MAX_TOP + 1)
    with pytest.raises(ValueError):
        summary.top(3, by="size")


def test_top_returns_the_n_largest_of_many_keys():
    summary = Summary()
    # path i opened i % 97 + 1 times, in a scrambled order
    records = [record(f"/k{i}".encode()) for i in range(3000) for _ in range(i % 97 + 1)]
    summary.feed(batch_of(records[::-1]))
    best = summary.top(MAX_TOP).paths
    assert len(best) == 3000
    assert [p.opens for p in best] == sorted((i % 97 + 1 for i in range(3000)), reverse=True)
    top5 = summary.top(5).paths
    assert top5 == best[:5] and {p.opens for p in top5} == {97}


def _malformed() -> list[RecordBatch]:
    good = [record(b"/good"), record(b"/also")]
    return [
        batch_of(good, sizes=[5, 50]),                          # tails run out
        batch_of(good, sizes=[5, 2 ** 32 - 1]),                 # a huge tail size
        batch_of([record(b"/x", tail=b"x" * (MAX_TAIL + 1))]),  # longer than a record holds
        batch_of([record(b"/x", path_len=PATH_MAX + 1)]),       # path_len no kernel writes
        batch_of(good, heads=record(b"/good")[0]),              # fewer heads than records
        batch_of(good, head_size=EVENT_SIZE - 8,
                 heads=b"".join(h[:-8] for h, _ in good)),      # another layout
    ]


@pytest.mark.parametrize("batch", _malformed(), ids=range(len(_malformed())))
def test_a_batch_whose_lengths_disagree_is_refused_and_counts_nothing(batch):
    summary = Summary()
    with pytest.raises(ValueError):
        summary.feed(batch)
    assert summary.totals(cumulative=True).opens == 0 and summary.top(10).paths == []


def test_limits_are_checked():
    for bad in (dict(max_paths=0), dict(max_processes=2 ** 21), dict(max_path_bytes=100)):
        with pytest.raises(ValueError):
            Summary(**bad)
    head, tail = record(b"/a")
    with pytest.raises(ValueError):  # tail sizes that C cannot take as uint32_t[]
        Summary().feed(RecordBatch(EVENT_SIZE, head, tail, [len(tail)]))
