"""The summary view under the storm: `echo-open top --summary` against plain tracing.

    .venv/bin/python bench/summary_view.py --pairs 3 --seconds 2 --modes miss,hit

Per pair, interleaved: the storm alone (A); the storm under `echo-open -n NAME` with its
lines to /dev/null (plain); the storm under `echo-open top -n NAME --json --summary`
(top: counted in C per batch, a JSON frame a second, the whole run's object at exit).
The storm runs as a copy of bench/build/storm named NAME = sv<pid of this script>, so other
storms on this shared machine do not match; both tracers keep only its opens in the kernel
(-n), so what each counted is the storm's: capture = counted / the storm's opens (plain:
"N events shown" on stderr; top: the summary object's "opens"). Tracer CPU from attached
to exit, per event. Medians; appends a section to bench/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_SHOWN = re.compile(r"echo-open: (\d+) events (?:shown|counted), \d+ filtered in the kernel, "
                    r"(\d+) lost")
SECTION = "## The summary view (`echo-open top`) under the storm"


def tracer_specs(storm_name: str) -> dict[str, harness.TracerSpec]:
    eo = str(harness.ECHO_OPEN)
    return {
        "plain": harness.TracerSpec("plain", [eo, "-n", storm_name], b"echo-open: tracing",
                                    _SHOWN, ready_on_stderr=True),
        "top": harness.TracerSpec("top", [eo, "top", "-n", storm_name, "--json", "--summary"],
                                  b"echo-open: tracing", _SHOWN, ready_on_stderr=True),
    }


def run_storm(storm: harness.StormSpec, binary: Path) -> harness.StormResult:
    """harness.run_storm, with the storm binary under its own name."""
    out = subprocess.run(storm.argv(binary=binary), check=True, capture_output=True,
                         text=True, timeout=storm.seconds + 600)
    result = harness.StormResult(**json.loads(out.stdout.strip().splitlines()[-1]))
    if result.unexpected:
        raise RuntimeError(f"storm: {result.unexpected} opens had the wrong outcome")
    return result


def measure(spec: harness.TracerSpec, storm: harness.StormSpec, binary: Path,
            baseline: harness.StormResult) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="eo-bench-summary-"))
    try:
        if spec.name == "plain":
            # TracerRun writes stdout to this path: plain tracing's lines go to /dev/null
            (work / f"{spec.name}.out").symlink_to("/dev/null")
        tracer = harness.TracerRun(spec, work)
        tracer.start()
        try:
            result = run_storm(storm, binary)
        finally:
            tracer.stop()
        err = tracer.stderr_path.read_text(errors="replace")
        found = _SHOWN.search(err)
        if tracer.exit_code != 0 or not found:
            raise RuntimeError(f"{spec.name} exited {tracer.exit_code}: {err[-2000:]}")
        counted, lost = int(found.group(1)), int(found.group(2))
        if spec.name == "top":
            summary = json.loads(tracer.stdout_path.read_text().splitlines()[-1])
            assert summary["kind"] == "summary"
            counted = summary["opens"]
        return {"ratio": result.opens_per_s / baseline.opens_per_s,
                "capture": counted / result.opens, "lost": lost,
                "cpu_us_per_event": tracer.cpu_after_ready_s / counted * 1e6 if counted else 0,
                "tracer_cpu_s": tracer.cpu_after_ready_s, "opens_per_s": result.opens_per_s,
                "untraced_opens_per_s": baseline.opens_per_s}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def report(results: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace,
           commit: str) -> str:
    lines = [SECTION, "",
             f"Written by `bench/summary_view.py --pairs {args.pairs} --seconds {args.seconds} "
             f"--modes {args.modes}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
             f"(echo-open {commit}): medians of {args.pairs} A/B pairs, storm on CPU 0, "
             "tracer on CPU 1. The storm runs under a name of its own (`sv<pid>`) and both keep "
             "only its opens in the kernel (`-n sv<pid>`); `plain` is "
             "`echo-open -n sv<pid> > /dev/null`, `top` is "
             "`echo-open top -n sv<pid> --json --summary` (counted in C a batch at a time).", "",
             "| mode | tracer | throughput ratio | capture | lost | tracer CPU µs/event "
             "| tracer CPU s | traced opens/s | untraced opens/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, by_tracer in results.items():
        for name, m in by_tracer.items():
            lines.append(f"| {mode} | {name} | {m['ratio']:.3f} | {m['capture']:.4f} | "
                         f"{m['lost']:.0f} | {m['cpu_us_per_event']:.2f} | "
                         f"{m['tracer_cpu_s']:.2f} | {m['opens_per_s']:,.0f} | "
                         f"{m['untraced_opens_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--modes", default="miss,hit")
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md")
    args = parser.parse_args(argv)
    storm_dir = Path(tempfile.mkdtemp(prefix="eo-bench-summary-storm-"))
    binary = storm_dir / f"sv{os.getpid()}"
    shutil.copy2(harness.build_storm(), binary)
    specs = tracer_specs(binary.name)
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        for pair in range(args.pairs):
            for mode in args.modes.split(","):
                storm = harness.StormSpec(mode, seconds=args.seconds)
                for name, spec in specs.items():
                    baseline = run_storm(storm, binary)
                    measured = measure(spec, storm, binary, baseline)
                    runs.setdefault(mode, {}).setdefault(name, []).append(measured)
                    print(f"pair {pair} {mode} {name}: " + json.dumps(
                        {k: round(v, 4) for k, v in measured.items()}), flush=True)
    finally:
        shutil.rmtree(storm_dir, ignore_errors=True)
    results = {mode: {name: medians(r) for name, r in by.items()} for mode, by in runs.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=RESULTS.parent).stdout.strip()
    text = report(results, args, commit)
    print(text)
    if not args.no_write:
        old = RESULTS.read_text()
        if SECTION in old:  # replace the last run's section
            old = old[:old.index(SECTION)].rstrip("\n") + "\n"
        RESULTS.write_text(old.rstrip("\n") + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
