"""-o FILE with --max-size/--max-files rotation and SIGHUP reopening, traced for real."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Child
from echo_open.output import EventFile

ECHO_OPEN = str(Path(sys.executable).parent / "echo-open")
READY = "echo-open: tracing"
SUMMARY = re.compile(r"echo-open: (\d+) events shown.*?(?:, (\d+) not shown)?$", re.M)

# a child that opens DIR/f<i> for i in range(N) (every third one missing: ENOENT), in order
OPENS = """
import os, sys, time
folder, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    path = os.path.join(folder, f"f{i}" if i % 3 else f"missing/f{i}")
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT if i % 3 else os.O_RDONLY, 0o644))
    except FileNotFoundError:
        pass
time.sleep(1)  # the tracer takes them while tracing, not in the drain after it stops
"""


def _trace_child(tmp_path: Path, count: int, *options: str) -> int:
    """echo-open --json with these options over a child making `count` opens in
    tmp_path/work (and only those: --path-prefix); how many events it wrote. It exits
    0, and every open was traced: written, or (on a slow machine: the drain after
    COMMAND exits has 0.5 s) counted as not shown."""
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([ECHO_OPEN, "--json", "--path-prefix", f"{work}/", *options, "--",
                           sys.executable, "-c", OPENS, str(work), str(count)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    shown, not_shown = SUMMARY.search(done.stderr).groups()
    assert int(shown) + int(not_shown or 0) == count, done.stderr
    return int(shown)


def _numbers(path: Path) -> list[int]:
    """The i of each event's f<i>, in the file's order (every line a whole JSON object)."""
    return [int(re.search(r"f(\d+)$", json.loads(line)["path"]).group(1))
            for line in path.read_text().splitlines()]


def test_rotated_files_hold_every_event_whole_and_none_passes_max_size(tmp_path):
    out = tmp_path / "opens.jsonl"
    max_size = 16 << 10
    shown = _trace_child(tmp_path, 600, "-o", str(out), "--max-size", "16K",
                         "--max-files", "50")
    files = sorted(tmp_path.glob("opens.jsonl*"))
    rotated = [tmp_path / f"opens.jsonl.{n}" for n in range(len(files) - 1, 0, -1)]
    assert set(files) == {*rotated, out}, "FILE, FILE.1 ... FILE.N with no gap"
    assert len(rotated) >= 5, "600 JSON lines of ~300 bytes fill several 16 KiB files"
    for path in files:
        assert 0 < path.stat().st_size <= max_size, path
    # oldest first: FILE.N ... FILE.1, FILE; together every open, in order, each once
    assert [n for path in [*rotated, out] for n in _numbers(path)] == list(range(shown))


def test_only_max_files_rotated_files_are_kept_and_they_are_the_newest(tmp_path):
    out = tmp_path / "opens.jsonl"
    shown = _trace_child(tmp_path, 600, "-o", str(out), "--max-size", "8K",
                         "--max-files", "3")
    assert sorted(p.name for p in tmp_path.glob("opens.jsonl*")) == [
        "opens.jsonl", "opens.jsonl.1", "opens.jsonl.2", "opens.jsonl.3"]
    kept = [n for name in ("opens.jsonl.3", "opens.jsonl.2", "opens.jsonl.1", "opens.jsonl")
            for n in _numbers(tmp_path / name)]
    assert kept == list(range(shown - len(kept), shown)), "the newest events, without a gap"
    assert len(kept) < shown


def test_a_file_there_at_start_is_rotated_away_not_truncated(tmp_path):
    out = tmp_path / "opens.jsonl"
    out.write_text('{"before": true}\n')
    shown = _trace_child(tmp_path, 30, "-o", str(out), "--max-size", "1M")
    assert (tmp_path / "opens.jsonl.1").read_text() == '{"before": true}\n'
    assert _numbers(out) == list(range(shown))


def test_the_default_is_to_keep_five(tmp_path):
    out = tmp_path / "t.jsonl"
    _trace_child(tmp_path, 400, "-o", str(out), "--max-size", "2K")
    assert sorted(p.name for p in tmp_path.glob("t.jsonl*")) == [
        "t.jsonl", *(f"t.jsonl.{n}" for n in range(1, 6))]


def _lines(path: Path, count: int, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            break
        time.sleep(0.05)
    return lines


def test_sighup_after_a_rename_reopens_the_file_and_loses_nothing(tmp_path):
    out = tmp_path / "opens.jsonl"
    work = tmp_path / "w"
    work.mkdir()
    first = [f"openat:.:{work}/a{i}:{os.O_RDONLY | os.O_CREAT}" for i in range(10)]
    second = [f"openat:.:{work}/b{i}:{os.O_RDONLY | os.O_CREAT}" for i in range(10)]
    proc = subprocess.Popen([ECHO_OPEN, "--json", "-o", str(out), "--path-prefix",
                             f"{work}/"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline().startswith(READY)
        Child(*first).go()
        assert len(_lines(out, 10)) == 10
        os.rename(out, tmp_path / "opens.jsonl.old")  # as logrotate does, then its SIGHUP
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert out.exists(), "SIGHUP reopened FILE at once, before any new event"
        # events while the tracer is told to reopen again: none lost, none doubled
        child = Child(*second)
        proc.send_signal(signal.SIGHUP)
        child.go()
        assert len(_lines(out, 10)) == 10
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "20 events shown" in err
    old = [json.loads(line)["path"] for line in (tmp_path / "opens.jsonl.old").read_text()
           .splitlines()]
    new = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert old == [f"{work}/a{i}" for i in range(10)]
    assert new == [f"{work}/b{i}" for i in range(10)]


def test_sighup_with_the_file_in_place_appends_to_it(tmp_path):
    out = tmp_path / "opens.txt"
    work = tmp_path / "w"
    work.mkdir()
    proc = subprocess.Popen([ECHO_OPEN, "-o", str(out), "--path-prefix", f"{work}/"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline().startswith(READY)
        Child(f"openat:.:{work}/one").go()
        assert len(_lines(out, 2)) == 2  # header + the open
        proc.send_signal(signal.SIGHUP)
        Child(f"openat:.:{work}/two").go()
        lines = _lines(out, 3)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert lines[0].startswith("PID") and lines[1].endswith("/one") and lines[2].endswith("/two")


@pytest.mark.parametrize("args, option", [
    (["--max-size", "1M"], "'--max-size' / '--max-files'"),
    (["--max-files", "3"], "'--max-size' / '--max-files'"),
    (["-o", "X", "--max-files", "3"], "'--max-files'"),
    (["-o", "X", "--max-size", "12Q"], "'--max-size'"),
    (["-o", "X", "--max-size", "1M", "--max-files", "0"], "'--max-files'"),
    (["-o", "X", "--max-size", "0"], "'--max-size'"),
    (["-o", "/dev/null", "--max-size", "1M"], "'--max-size'"),
])
def test_bad_rotation_options_are_one_line_usage_errors(tmp_path, args, option):
    args = [str(tmp_path / "out") if a == "X" else a for a in args]
    done = subprocess.run([ECHO_OPEN, *args, "-d", "1"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and option in done.stderr, done.stderr
    assert done.stdout == ""


def test_a_directory_that_refuses_the_rotation_is_an_output_error(tmp_path):
    # FILE is writable but its folder is not: the rename fails, as a full disk would
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "opens.jsonl"
    out.write_text("")
    os.chmod(folder, 0o555)
    try:
        # not root's CAP_DAC_OVERRIDE, which renames in a read-only folder
        done = subprocess.run(
            ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override", "--", ECHO_OPEN,
             "--json", "-o", str(out), "--max-size", "1K", "--path-prefix",
             f"{tmp_path}/", "--", sys.executable, "-c", OPENS, str(tmp_path), "100"],
            capture_output=True, text=True, timeout=60)
    finally:
        os.chmod(folder, 0o755)
    assert done.returncode == 74, done.stderr
    assert "echo-open: output error:" in done.stderr
    assert "Traceback" not in done.stderr


def test_event_file_cuts_only_between_lines(tmp_path):
    # pure bookkeeping of the rotation (the traced tests above cover the real writes)
    path = tmp_path / "f"
    with EventFile(path, max_size=10, max_files=9) as out:
        out.write(b"aaaa\nbbbb\ncccc\n")  # 15 bytes: two lines fit, the third rotates
        out.write(b"a line longer than ten bytes\n")
        out.write(b"dd\n")
    assert (tmp_path / "f.3").read_bytes() == b"aaaa\nbbbb\n"
    assert (tmp_path / "f.2").read_bytes() == b"cccc\n"
    assert (tmp_path / "f.1").read_bytes() == b"a line longer than ten bytes\n"
    assert path.read_bytes() == b"dd\n"
