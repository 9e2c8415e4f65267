"""Soak: echo-open under a steady high open rate for minutes, table and --json.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 40000] [--modes table,json]
                                   [--record]

For each mode, bench/storm.c opens files under a fresh directory at --rate opens/s for
--minutes, echo-open traces with --path-prefix on that directory (so the kernel's counters
count exactly the storm's opens), and its stdout goes to a pipe that this script drains and
counts line by line. Its RSS is sampled every second. At the end it must hold, exactly:
lines read == events shown, and shown + not shown + lost == opens the storm made; and RSS
after the first minute's warm-up must be flat: a least-squares slope within
--max-slope MiB/min and a spread within --max-spread MiB. Exit status 0 when every mode
holds, 1 otherwise. --record writes the result into bench/RESULTS.md (its "Soak" section).
Needs root, like every tracer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from harness import ECHO_OPEN, build_storm  # noqa: E402

SUMMARY = re.compile(r"echo-open: (\d+) events shown, \d+ filtered in the kernel, (\d+) lost "
                     r"\(ring full (\d+), args full (\d+), internal (\d+), path fault (\d+)\)"
                     r"(?:, (\d+) not shown)?")
SECTION_START = "<!-- soak: written by bench/soak.py --record -->"
SECTION_END = "<!-- /soak -->"
WARM_UP_S = 60.0


@dataclass
class SoakResult:
    mode: str
    seconds: float
    rate_asked: float
    opens: int
    lines: int
    shown: int
    not_shown: int
    lost: int
    ring_full: int
    rss_first_mib: float
    rss_last_mib: float
    rss_max_mib: float
    rss_slope_mib_per_min: float
    rss_spread_mib: float
    stop_s: float
    exact: bool
    flat: bool


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y)."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (y - mean_y) for t, y in samples) / var if var else 0.0


def _count_lines(fd: int, counted: list[int]) -> None:
    while chunk := os.read(fd, 1 << 20):
        counted[0] += chunk.count(b"\n")


def soak(mode: str, minutes: float, rate: float, max_slope: float,
         max_spread: float) -> SoakResult:
    storm_binary = build_storm()
    seconds = minutes * 60
    with tempfile.TemporaryDirectory(prefix="eo-soak-") as base:
        args = [str(ECHO_OPEN), "--path-prefix", f"{base}/"]
        if mode == "json":
            args[1:1] = ["--json", "-F"]
        read_end, write_end = os.pipe()
        tracer = subprocess.Popen(args, stdout=write_end, stderr=subprocess.PIPE, text=True)
        os.close(write_end)
        counted = [0]
        reader = threading.Thread(target=_count_lines, args=(read_end, counted))
        reader.start()
        try:
            ready = tracer.stderr.readline()
            if not ready.startswith("echo-open: tracing"):
                raise SystemExit(f"soak: echo-open did not start: {ready}")
            storm = subprocess.Popen([str(storm_binary), "--mode", "hit", "--threads", "1",
                                      "--seconds", str(seconds), "--rate", str(rate),
                                      "--dir", base], stdout=subprocess.PIPE, text=True)
            started = time.monotonic()
            samples: list[tuple[float, float]] = []
            while storm.poll() is None:
                samples.append((time.monotonic() - started, _rss_kib(tracer.pid) / 1024))
                time.sleep(1.0)
            opens = json.loads(storm.stdout.read().strip().splitlines()[-1])["opens"]
            time.sleep(1.0)  # the last records reach the ring's consumer
            asked = time.monotonic()
            tracer.send_signal(signal.SIGINT)
            _, err = tracer.communicate(timeout=60)
            stop_s = time.monotonic() - asked
        finally:
            if tracer.poll() is None:
                tracer.kill()
            reader.join(timeout=60)
            os.close(read_end)
    summary = SUMMARY.fullmatch(err.strip().splitlines()[-1])
    if not summary:
        raise SystemExit(f"soak: no summary line from echo-open: {err.strip()[-500:]}")
    shown, lost, ring_full, _, _, _, not_shown = (int(v or 0) for v in summary.groups())
    header = 0 if mode == "json" else 1
    lines = counted[0] - header
    steady = [(t / 60, y) for t, y in samples if t >= min(WARM_UP_S, seconds / 3)]
    rss = [y for _, y in steady] or [0.0]
    slope = _slope(steady)
    spread = max(rss) - min(rss)
    return SoakResult(
        mode=mode, seconds=seconds, rate_asked=rate, opens=opens, lines=lines, shown=shown,
        not_shown=not_shown, lost=lost, ring_full=ring_full,
        rss_first_mib=round(rss[0], 1), rss_last_mib=round(rss[-1], 1),
        rss_max_mib=round(max(y for _, y in samples), 1),
        rss_slope_mib_per_min=round(slope, 3), rss_spread_mib=round(spread, 1),
        stop_s=round(stop_s, 2),
        exact=lines == shown and shown + not_shown + lost == opens,
        flat=abs(slope) <= max_slope and spread <= max_spread)


def _markdown(results: list[SoakResult], argv: list[str]) -> str:
    rows = ["| mode | minutes | opens/s asked | opens made | lines read | shown | lost "
            "(ring full) | not shown | exact | RSS after warm-up, first -> last (max) | "
            "RSS slope | RSS spread | stop after SIGINT |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r.mode} | {r.seconds / 60:g} | {r.rate_asked:g} | {r.opens} | "
                    f"{r.lines} | {r.shown} | {r.lost} ({r.ring_full}) | {r.not_shown} | "
                    f"{'yes' if r.exact else 'NO'} | {r.rss_first_mib} -> {r.rss_last_mib} "
                    f"({r.rss_max_mib}) MiB | {r.rss_slope_mib_per_min:+.3f} MiB/min | "
                    f"{r.rss_spread_mib} MiB | {r.stop_s} s |")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join([
        SECTION_START, "## Soak (bench/soak.py)", "",
        f"{when}, kernel {os.uname().release}, `{' '.join(argv)}`: bench/storm.c "
        "`--mode hit` at a steady rate, echo-open with `--path-prefix` on the storm's "
        "directory, stdout drained and counted by the script; exact means lines read == "
        "shown and shown + not shown + lost == opens made; RSS sampled every second, slope "
        f"and spread after a warm-up (the first {WARM_UP_S:.0f} s, or a third of a shorter "
        "run).", "", *rows, SECTION_END])


def _record(text: str) -> None:
    results = BENCH / "RESULTS.md"
    current = results.read_text() if results.exists() else ""
    if SECTION_START in current and SECTION_END in current:
        before, rest = current.split(SECTION_START, 1)
        after = rest.split(SECTION_END, 1)[1]
        current = before + text + after
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    results.write_text(current)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="per mode (default 10)")
    parser.add_argument("--rate", type=float, default=40000.0, help="opens/s (default 40000)")
    parser.add_argument("--modes", default="table,json")
    parser.add_argument("--max-slope", type=float, default=0.5,
                        help="MiB/min of RSS growth allowed (default 0.5)")
    parser.add_argument("--max-spread", type=float, default=8.0,
                        help="MiB of RSS spread allowed after warm-up (default 8)")
    parser.add_argument("--record", action="store_true",
                        help="write the result into bench/RESULTS.md")
    options = parser.parse_args()
    if os.geteuid() != 0:
        print("soak: run me as root (the tracer loads BPF programs)", file=sys.stderr)
        return 77
    results = []
    for mode in options.modes.split(","):
        result = soak(mode, options.minutes, options.rate, options.max_slope,
                      options.max_spread)
        print(json.dumps(asdict(result)), flush=True)
        results.append(result)
    text = _markdown(results, ["bench/soak.py", *sys.argv[1:]])
    print(text)
    if options.record:
        _record(text)
    return 0 if all(r.exact and r.flat for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
