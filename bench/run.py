"""Benchmark echo-open against opensnoop and bpftrace; writes bench/RESULTS.md.

    .venv/bin/python bench/run.py --pairs 3 --seconds 2.5

Each measurement is a pair: the storm untraced (A), then under one tracer (B),
A B A B... over every mode and tracer, repeated --pairs times. The report holds
medians over the pairs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import report

RATE_LIMIT = 50_000


def mode_specs(seconds: float, threads: int) -> dict[str, harness.StormSpec]:
    """Every storm mode the benchmark runs, by name."""
    return {
        "miss": harness.StormSpec("miss", seconds=seconds, threads=threads),
        "hit": harness.StormSpec("hit", seconds=seconds, threads=threads),
        "long": harness.StormSpec("long", seconds=seconds, threads=threads),
        "mix": harness.StormSpec("mix", seconds=seconds, threads=threads),
        "miss-50k": harness.StormSpec("miss", seconds=seconds, threads=threads,
                                      rate=RATE_LIMIT),
    }


DEFAULT_MODES = ("miss", "hit", "long", "miss-50k")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    tracers = tuple(harness.tracer_specs())
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="A B pairs per mode and tracer")
    parser.add_argument("--seconds", type=float, default=2.5, help="storm duration per run")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        help="comma-separated: miss,hit,long,mix,miss-50k")
    parser.add_argument("--tracers", default=",".join(tracers),
                        help=f"comma-separated: {','.join(tracers)}")
    parser.add_argument("--threads", type=int, default=1, help="storm threads (all on one CPU)")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds between the storm's end and SIGINT (default 0)")
    parser.add_argument("--results", type=Path, default=harness.BENCH_DIR / "RESULTS.md")
    parser.add_argument("--raw", type=Path, default=harness.BUILD_DIR / "results.jsonl",
                        help="every record, one JSON line each")
    parser.add_argument("--no-drain", action="store_true", help="skip drain.py")
    parser.add_argument("--report-only", action="store_true",
                        help="no measuring: rewrite RESULTS.md from --raw and its .env.json")
    args = parser.parse_args(argv)
    args.modes = _pick(args.modes, mode_specs(1, 1), "mode")
    args.tracers = _pick(args.tracers, tracers, "tracer")
    if args.pairs < 1 or args.seconds <= 0:
        parser.error("--pairs and --seconds must be positive")
    return args


def _pick(text: str, known: Iterable[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)}")
    return names


def check_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run.py loads BPF programs: run it as root")


def run_all(args: argparse.Namespace) -> list[dict[str, object]]:
    """Every pair, interleaved: pair by pair, so drift hits every tracer alike."""
    specs = harness.tracer_specs()
    modes = mode_specs(args.seconds, args.threads)
    records: list[dict[str, object]] = []
    args.raw.parent.mkdir(parents=True, exist_ok=True)
    with open(args.raw, "w") as raw:
        for pair in range(args.pairs):
            for mode in args.modes:
                for name in args.tracers:
                    record = measure_one(specs[name], modes[mode], pair, args.settle)
                    record["mode"] = mode
                    records.append(record)
                    raw.write(json.dumps(record) + "\n")
                    raw.flush()
                    print(progress_line(record), flush=True)
    return records


def measure_one(spec: harness.TracerSpec, storm: harness.StormSpec, pair: int,
                settle: float) -> dict[str, object]:
    baseline = harness.run_storm(storm)
    measurement = harness.measure_traced(spec, storm, baseline=baseline, pair=pair,
                                         settle=settle)
    return measurement.record()


def progress_line(r: dict[str, object]) -> str:
    def num(key: str, fmt: str) -> str:
        value = r.get(key)
        return "-" if value is None else format(value, fmt)

    return (f"pair {r['pair']} {r['mode']:<9} {r['tracer']:<18} "
            f"thr {num('throughput_ratio', '.3f')} cap {num('capture_ratio', '.4f')} "
            f"lost {r['lost']} gap {num('accounting_gap', 'd')} "
            f"cpu/ev {num('tracer_cpu_us_per_event', '.2f')}us "
            f"storm+ {num('storm_cpu_added_us', '.2f')}us rss {num('peak_rss_mib', '.1f')}M "
            f"ready {num('ready_s', '.3f')}s")


def run_drain() -> dict[str, object] | None:
    """drain.py's figures (a subprocess: its tracer must not share our process)."""
    script = harness.BENCH_DIR / "drain.py"
    out = subprocess.run(harness.pinned([sys.executable, str(script), "--json"],
                                        harness.TRACER_CPU),
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        print(f"drain.py failed: {out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def environment(args: argparse.Namespace, started: float) -> dict[str, object]:
    """What the report needs to say about the machine and the run."""
    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return "?"

    specs = harness.tracer_specs()
    modes = mode_specs(args.seconds, args.threads)
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "bpf_stats_enabled": read("/proc/sys/kernel/bpf_stats_enabled"),
        "loadavg": read("/proc/loadavg"),
        "command": " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
        "minutes": (time.monotonic() - started) / 60,
        "tracer_commands": {n: " ".join(harness.pinned(specs[n].argv, harness.TRACER_CPU))
                            for n in args.tracers},
        "storm_commands": {m: " ".join(modes[m].argv()).replace(str(harness.REPO) + "/", "")
                           for m in args.modes},
        "pairs": args.pairs, "seconds": args.seconds, "settle": args.settle,
        "echo_open_version": _echo_open_version(),
    }


def _echo_open_version() -> str:
    """The commit the tree is at, and when the measured package was installed."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(harness.REPO), *argv], capture_output=True,
                              text=True).stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain", "python", "bpf") else ""
    try:
        from echo_open.tracer import default_object_path
        installed = dt.datetime.fromtimestamp(default_object_path().stat().st_mtime)
        when = f", package installed {installed:%Y-%m-%d %H:%M}"
    except (ImportError, OSError):
        when = ""
    return f"{git('rev-parse', '--short', 'HEAD')}{dirty}{when}"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def medians(records: list[dict[str, object]]) -> dict[tuple[str, str], dict[str, object]]:
    """Median of every numeric metric per (mode, tracer) over the runs whose tracer exited
    cleanly; the worst accounting gap and the failed runs too."""
    groups: dict[tuple[str, str], list[dict[str, object]]] = {}
    for r in records:
        groups.setdefault((str(r["mode"]), str(r["tracer"])), []).append(r)
    out = {}
    for key, every in groups.items():
        # a tracer killed after the stop timeout (or crashed) has no summary to count
        rs = [r for r in every if r.get("exit_code") == 0] or every
        med: dict[str, object] = {"n": len(rs), "failed": len(every) - len(rs)}
        for metric in harness.METRICS:
            values = [r[metric] for r in rs if isinstance(r.get(metric), (int, float))]
            med[metric] = statistics.median(values) if values else None
        gaps = [int(r["accounting_gap"]) for r in rs  # type: ignore[call-overload]
                if r.get("accounting_gap") is not None]
        med["worst_gap"] = max(gaps, key=abs) if gaps else None
        med["exact_pairs"] = sum(g == 0 for g in gaps)
        out[key] = med
    return out


def env_path(raw: Path) -> Path:
    return raw.with_suffix(".env.json")


def foreign_links(records: list[dict[str, object]]) -> dict[str, int]:
    """Other BPF links attached during the runs (they slow the baseline as well)."""
    counts = [int(r["foreign_links"]) for r in records  # type: ignore[call-overload]
              if isinstance(r.get("foreign_links"), int) and r["foreign_links"] >= 0]
    if not counts:
        return {"min": -1, "median": -1, "max": -1}
    return {"min": min(counts), "median": int(statistics.median(counts)), "max": max(counts)}


BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


@contextlib.contextmanager
def _bpf_stats_off() -> Iterator[None]:
    """Measure with the kernel's default: bpf_stats adds two clock reads to every BPF
    program run (~5% of a traced open here), a tax the peers' fewer programs pay less."""
    try:
        previous = BPF_STATS.read_text().strip()
        BPF_STATS.write_text("0")
    except OSError:
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            BPF_STATS.write_text(previous)


def measure_everything(args: argparse.Namespace) -> tuple[list[dict[str, object]],
                                                          dict[str, object]]:
    """Run every pair and drain.py; keep the records and the environment in bench/build/."""
    check_root()
    harness.build_storm()
    started = time.monotonic()
    with _bpf_stats_off():
        records = run_all(args)
        env = environment(args, started)
        env["drain"] = None if args.no_drain else run_drain()
    env_path(args.raw).write_text(json.dumps(env, indent=1))
    return records, env


def load_previous(args: argparse.Namespace) -> tuple[list[dict[str, object]],
                                                     dict[str, object]]:
    records = [json.loads(line) for line in args.raw.read_text().splitlines() if line]
    env = json.loads(env_path(args.raw).read_text())
    return records, env


def soak_section(results: Path) -> str:
    """bench/soak.py's section of RESULTS.md, if it has one."""
    from soak import SECTION_END, SECTION_START
    text = results.read_text() if results.exists() else ""
    if SECTION_START not in text or SECTION_END not in text:
        return ""
    return SECTION_START + text.split(SECTION_START, 1)[1].split(SECTION_END, 1)[0] + SECTION_END


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    records, env = load_previous(args) if args.report_only else measure_everything(args)
    env["foreign_links"] = foreign_links(records)
    modes = [m for m in args.modes if any(r["mode"] == m for r in records)]
    tracers = [t for t in args.tracers if any(r["tracer"] == t for r in records)]
    text = report.render(env, medians(records), env.get("drain"),  # type: ignore[arg-type]
                         modes, tracers)
    # the soak's section (bench/soak.py --record) is its own: carried over, not lost
    if previous := soak_section(args.results):
        text = text.rstrip("\n") + "\n\n" + previous + "\n"
    args.results.write_text(text)
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
