"""`echo-open -- make` against `strace -f -e trace=%file` on a small C build.

    .venv/bin/python bench/make_vs_strace.py [--runs 3] [--files 40]

Generates a C project (N sources, a shared header each, one Makefile) in a
temporary directory, then builds it from clean, alternating: untraced, under
strace, under echo-open (JSON to a file). Reports the median wall time of each
and its ratio to the untraced build, and compares the paths each tracer saw
opened (open, openat, openat2, creat; as passed by the program): the same set is
the goal. Writes bench/RESULTS-make.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

RESULTS = harness.BENCH_DIR / "RESULTS-make.md"
ECHO_OPEN = str(harness.REPO / ".venv" / "bin" / "echo-open")
# strace's line for one open-family call: the path is its first string argument
# gcc's temporary files (/tmp/ccXXXXXX.s) are named anew in every build
CC_TEMP = re.compile(r"^(/tmp/cc)[A-Za-z0-9]{6}(\.)")
STRACE_OPEN = re.compile(r'^\d+\s+(?:open|openat|openat2|creat)\((?:[^"]*?, )?"((?:[^"\\]|\\.)*)"')


def make_project(root: Path, files: int) -> None:
    sources = []
    for i in range(files):
        (root / f"m{i}.h").write_text(f"int f{i}(int x);\n")
        (root / f"m{i}.c").write_text(
            f'#include <stdio.h>\n#include <string.h>\n#include "m{i}.h"\n'
            f"int f{i}(int x) {{ return x * {i + 1}; }}\n")
        sources.append(f"m{i}.c")
    calls = " + ".join(f"f{i}(1)" for i in range(files))
    includes = "".join(f'#include "m{i}.h"\n' for i in range(files))
    (root / "main.c").write_text(f"#include <stdio.h>\n{includes}"
                                 f'int main(void) {{ printf("%d\\n", {calls}); return 0; }}\n')
    objects = " ".join(s.replace(".c", ".o") for s in [*sources, "main.c"])
    (root / "Makefile").write_text(
        f"prog: {objects}\n\tcc -o $@ $^\n%.o: %.c\n\tcc -O1 -c -o $@ $<\n"
        f"clean:\n\trm -f prog *.o\n")


def unescape_strace(text: str) -> str:
    """strace's C escapes (\\", \\\\, \\n, \\xNN) back to the bytes, as text."""
    raw = text.encode("latin-1").decode("unicode_escape").encode("latin-1")
    return raw.decode("utf-8", "surrogateescape")


def build(root: Path, prefix: list[str]) -> float:
    subprocess.run(["make", "-s", "clean"], cwd=root, check=True)
    started = time.monotonic()
    subprocess.run([*prefix, "make", "-s", "-j1"], cwd=root, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def strace_paths(log: Path) -> set[str]:
    paths = set()
    for line in log.read_text(errors="surrogateescape").splitlines():
        match = STRACE_OPEN.match(line)
        if match:
            paths.add(CC_TEMP.sub(r"\1XXXXXX\2", unescape_strace(match.group(1))))
    return paths


def echo_open_paths(out: Path) -> set[str]:
    paths = set()
    for line in out.read_text().splitlines():
        record = json.loads(line)
        if record["syscall"] != "io_uring":
            paths.add(CC_TEMP.sub(r"\1XXXXXX\2", record["path"]))
    return paths


def measure(runs: int, files: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="eo-make-"))
    try:
        make_project(work, files)
        build(work, [])  # warm the page cache and cc's own files
        times: dict[str, list[float]] = {"untraced": [], "strace": [], "echo-open": []}
        strace_seen: set[str] = set()
        echo_seen: set[str] = set()
        for _ in range(runs):
            times["untraced"].append(build(work, []))
            log = work / "strace.log"
            times["strace"].append(build(work, ["strace", "-f", "-qq", "-e", "trace=%file",
                                                "-o", str(log)]))
            strace_seen = strace_paths(log)
            out = work / "echo-open.jsonl"
            times["echo-open"].append(build(work, [
                "sh", "-c", f'exec "$0" --json "$@" > {out} 2> {work}/echo-open.err',
                ECHO_OPEN, "--"]))
            echo_seen = echo_open_paths(out)
        for stale in ("strace.log", "echo-open.jsonl", "echo-open.err"):
            (work / stale).unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "runs": runs, "files": files, "medians": medians, "times": times,
        "strace_paths": len(strace_seen), "echo_open_paths": len(echo_seen),
        "only_strace": sorted(strace_seen - echo_seen)[:20],
        "only_echo_open": sorted(echo_seen - strace_seen)[:20],
        "common": len(strace_seen & echo_seen),
    }


def report(result: dict[str, object]) -> str:
    med: dict[str, float] = result["medians"]  # type: ignore[assignment]
    base = med["untraced"]
    rows = [f"| {name} | {seconds:.3f} | {seconds / base:.2f} |" for name, seconds in med.items()]
    only_s, only_e = result["only_strace"], result["only_echo_open"]
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    return "\n".join([
        "# `echo-open -- make` against `strace -f -e trace=%file`", "",
        f"Written by `bench/make_vs_strace.py` on {when} UTC, kernel {platform.release()}: "
        f"a C project of {result['files']} sources "
        f"built from clean with `make -s -j1`, {result['runs']} builds each, interleaved; "
        "medians.", "",
        "| build | wall s | ÷ untraced |", "|---|---|---|", *rows, "",
        "Paths opened (open, openat, openat2, creat; as passed; gcc's temporary "
        "`/tmp/ccXXXXXX.*` names folded), last build of each:", "",
        f"- strace: {result['strace_paths']}; echo-open: {result['echo_open_paths']}; "
        f"both: {result['common']}",
        f"- only strace saw: {only_s or 'none'}",
        f"- only echo-open saw: {only_e or 'none'}", "",
        "Both follow every process make starts; echo-open does it in the kernel "
        "(sched_process_fork adds each new process to its pid filter before it runs).", ""])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("make_vs_strace.py loads BPF programs: run it as root")
    for tool in ("make", "cc", "strace"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (apt-get install make gcc strace)")
    result = measure(args.runs, args.files)
    args.results.write_text(report(result))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
