"""The benchmark harness (bench/) on tiny exact-count storms: accounting, never speed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import harness

OPENS = 300
# the CLI reads what sits below its wake-up threshold on a 0.1 s poll timeout
SETTLE = 0.5


@pytest.fixture(scope="module", autouse=True)
def storm_binary() -> Path:
    return harness.build_storm()


def measure(mode: str, settle: float) -> harness.Measurement:
    """echo-open (table) over an exact-count storm; unpinned, CI may have one CPU."""
    spec = harness.tracer_specs()["echo-open"]
    storm = harness.StormSpec(mode, count=OPENS)
    return harness.measure_traced(spec, storm, settle=settle, storm_cpu=None, tracer_cpu=None)


@pytest.mark.parametrize("mode", ["miss", "hit", "long"])
def test_every_storm_open_is_printed_or_reported_lost(mode):
    m = measure(mode, SETTLE)
    assert m.storm.opens == OPENS
    assert m.tracer.exit_code == 0
    assert m.output.shown is not None, "no exit summary on stderr"
    assert m.output.storm_lines + m.output.lost + m.output.path_fault == OPENS
    if mode == "long":
        assert m.storm.path_len == 3500
        assert m.record()["path_bytes_ratio"] == 1.0


def test_stopping_right_after_the_storm_loses_nothing_unreported():
    # SIGINT as the storm ends: what sits in the ring must still be shown (fixed in f7088ca)
    m = measure("miss", 0.0)
    assert m.output.storm_lines + m.output.lost + m.output.path_fault == OPENS


def test_the_result_record_has_every_metric():
    m = measure("miss", SETTLE)
    baseline = harness.run_storm(harness.StormSpec("miss", count=OPENS), cpu=None)
    m.baseline = baseline
    record = m.record()
    assert set(harness.METRICS) <= set(record)
    for metric in ("throughput_ratio", "capture_ratio", "tracer_cpu_s", "storm_cpu_added_us",
                   "peak_rss_mib", "ready_s", "path_bytes_ratio"):
        assert isinstance(record[metric], float), metric
    assert record["peak_rss_mib"] > 0 and record["ready_s"] > 0
    assert record["accounting_gap"] == 0


def test_losses_are_read_from_each_tracers_own_words(tmp_path):
    out, err = tmp_path / "out", tmp_path / "err"
    marker = "/tmp/eo-storm-abcdef"
    out.write_text(f"PID COMM FD ERR PATH\n1 storm 3 0 {marker}/hit/file-01\n"
                   "2 other 3 0 /etc/hostname\n")
    err.write_text("Lost 5 events on CPU #0!\nLost 7 events on CPU #1!\n")
    count = harness.count_output(harness.tracer_specs()["opensnoop"], out, err, marker)
    assert (count.events, count.storm_lines, count.lost) == (2, 1, 12)
    assert count.path_bytes == len(f"{marker}/hit/file-01")

    err.write_text("echo-open: 2 events shown, 0 filtered in the kernel, 3 lost "
                   "(ring full 2, args full 1, path fault 4)\n")
    count = harness.count_output(harness.tracer_specs()["echo-open"], out, err, marker)
    assert (count.shown, count.lost, count.path_fault) == (2, 3, 4)


def test_make_under_echo_open_sees_the_paths_strace_sees():
    import make_vs_strace

    result = make_vs_strace.measure(runs=1, files=2)
    assert result["strace_paths"] > 10
    assert result["only_strace"] == [] and result["only_echo_open"] == []
    assert result["echo_open_paths"] == result["strace_paths"] == result["common"]
    assert set(result["medians"]) == {"untraced", "strace", "echo-open"}
