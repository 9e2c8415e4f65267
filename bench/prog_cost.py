#!/usr/bin/env python3
"""CPU time inside echo-open's BPF programs, per run: probe reads vs direct loads (A/B).

    sudo .venv/bin/python bench/prog_cost.py [--runs 5] [--seconds 2] [--mode hit]

With kernel.bpf_stats_enabled=1 (set for the measurement, then put back as it was) the
kernel counts run_cnt and run_time_ns for every program. The load is bench/storm.c under a
fresh directory D, traced by `echo-open --json --path-prefix D` (paths resolved) with each
shipped build forced through $ECHO_OPEN_BPF_OBJECT: echo_open.bpf.o (probe reads) and
echo_open_direct.bpf.o (plain loads through bpf_rdonly_cast, 6.2+). Only the programs the
tracer itself holds (its fds in /proc/PID/fdinfo) are read, so other tracers on the machine
do not count. Runs alternate between the builds, so drift on a shared host hits both.

ns/run is CPU time in the program, little affected by other load on the host (wall-clock
throughput is). A tail call does not return to its caller, and the kernel counts its time
in the calling program: exit_openat's ns/run includes finish_open's (whose own run_cnt
stays 0), i.e. the whole resolve-and-emit of each open.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
BUILDS = {"probe": "echo_open.bpf.o", "direct": "echo_open_direct.bpf.o"}


def echo_open_binary() -> str:
    return str(Path(sys.executable).parent / "echo-open")


def shipped_object(name: str) -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("echo_open") / "bpf" / name))


def build_storm(workdir: Path) -> Path:
    binary = workdir / "storm"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(HERE / "storm.c")],
                   check=True)
    return binary


def program_ids(pid: int) -> set[int]:
    """The BPF programs process ``pid`` holds an fd of."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        if match := re.search(r"^prog_id:\s+(\d+)", info, re.M):
            ids.add(int(match.group(1)))
    return ids


def program_stats(ids: set[int]) -> dict[str, tuple[int, int]]:
    """name -> (run_cnt, run_time_ns) of these programs (bpftool's full names)."""
    listing = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], check=True,
                                        capture_output=True, text=True).stdout)
    return {p["name"]: (p.get("run_cnt", 0), p.get("run_time_ns", 0))
            for p in listing if p["id"] in ids}


def one_run(build: str, storm: Path, mode: str, seconds: float) -> dict[str, tuple[int, int]]:
    """(runs, ns) per program of one storm traced with ``build``."""
    with tempfile.TemporaryDirectory(prefix="eo-cost-") as base:
        env = {**os.environ, "ECHO_OPEN_BPF_OBJECT": str(shipped_object(BUILDS[build]))}
        tracer = subprocess.Popen([echo_open_binary(), "--json", "--path-prefix", base],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env=env)
        try:
            line = tracer.stderr.readline()
            if not line.startswith("echo-open: tracing"):
                raise SystemExit(f"echo-open did not start: {line}{tracer.stderr.read()}")
            ids = program_ids(tracer.pid)
            before = program_stats(ids)
            subprocess.run([str(storm), "--mode", mode, "--seconds", str(seconds),
                            "--dir", base], check=True, stdout=subprocess.DEVNULL)
            after = program_stats(ids)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.communicate(timeout=60)
    return {name: (after[name][0] - before[name][0], after[name][1] - before[name][1])
            for name in after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per build (default 5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="storm length per run")
    parser.add_argument("--mode", default="hit", help="storm mode: hit, miss, long, mix")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("prog_cost.py loads BPF programs and sets a sysctl: run it as root")
    for name in BUILDS.values():
        if not shipped_object(name).is_file():
            raise SystemExit(f"no {name} in the installed package")
    was = STATS_SYSCTL.read_text().strip()
    per_run: dict[str, dict[str, list[float]]] = {build: {} for build in BUILDS}
    with tempfile.TemporaryDirectory(prefix="eo-storm-bin-") as workdir:
        storm = build_storm(Path(workdir))
        STATS_SYSCTL.write_text("1\n")
        try:
            for _ in range(args.runs):
                for build in BUILDS:
                    for name, (runs, ns) in one_run(build, storm, args.mode,
                                                    args.seconds).items():
                        # the resolving program under one name in both builds
                        name = name.removesuffix("_direct")
                        if runs:
                            per_run[build].setdefault(name, []).append(ns / runs)
                            per_run[build].setdefault(name + " runs", []).append(runs)
        finally:
            STATS_SYSCTL.write_text(was + "\n")
    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    print(f"kernel {os.uname().release}, echo-open {commit}, storm --mode {args.mode} "
          f"--seconds {args.seconds}, medians of {args.runs} runs per build")
    print("| program | runs per storm (probe / direct) | probe reads ns/run | "
          "direct loads ns/run | direct / probe |")
    print("|---|---|---|---|---|")
    names = sorted(n for n in per_run["probe"].keys() | per_run["direct"].keys()
                   if not n.endswith(" runs"))
    for name in names:
        probe = per_run["probe"].get(name)
        direct = per_run["direct"].get(name)
        if not probe or not direct:
            continue
        runs = (f"{statistics.median(per_run['probe'][name + ' runs']):,.0f} / "
                f"{statistics.median(per_run['direct'][name + ' runs']):,.0f}")
        p, d = statistics.median(probe), statistics.median(direct)
        print(f"| {name} | {runs} | {p:,.0f} | {d:,.0f} | {d / p:.2f} |")


if __name__ == "__main__":
    main()
