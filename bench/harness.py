"""Benchmark building blocks: the storm, the tracers, and one measured run.

A measurement pairs an untraced storm (the baseline) with the same storm under
one tracer. The storm is pinned to one CPU and the tracer to another, so the
storm's throughput shows the cost the tracer adds inside the traced program's
syscalls, and the tracer's own CPU is measured apart.

run.py drives these over modes, tracers and pairs; tests/test_bench.py uses
them on a tiny exact-count storm.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BUILD_DIR = BENCH_DIR / "build"
STORM_SOURCE = BENCH_DIR / "storm.c"
STORM_BINARY = BUILD_DIR / "storm"
ECHO_OPEN = REPO / ".venv" / "bin" / "echo-open"
OPENSNOOP = Path("/usr/sbin/opensnoop")
BPFTRACE = Path("/usr/bin/bpftrace")
OPENSNOOP_BT = Path("/usr/sbin/opensnoop.bt")

STORM_CPU = 0
TRACER_CPU = 1
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 120.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")

# every metric a result record carries (None where it does not apply)
METRICS = (
    "mode", "tracer", "pair", "opens", "seconds", "opens_per_s", "baseline_opens_per_s",
    "throughput_ratio", "captured", "capture_ratio", "lost", "path_fault", "accounted",
    "accounting_gap", "events", "shown", "tracer_cpu_s", "tracer_cpu_us_per_event",
    "storm_cpu_us_per_open", "baseline_storm_cpu_us_per_open", "storm_cpu_added_us",
    "peak_rss_mib", "ready_s", "path_bytes_ratio", "exit_code", "foreign_links",
)


# ---- the storm


def build_storm(force: bool = False) -> Path:
    """Compile storm.c into bench/build/ unless the binary is newer than the source."""
    BUILD_DIR.mkdir(exist_ok=True)
    fresh = (STORM_BINARY.exists()
             and STORM_BINARY.stat().st_mtime >= STORM_SOURCE.stat().st_mtime)
    if force or not fresh:
        subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-pthread", "-o",
                        str(STORM_BINARY), str(STORM_SOURCE)], check=True)
    return STORM_BINARY


@dataclass(frozen=True)
class StormResult:
    """One storm's JSON line."""

    mode: str
    threads: int
    opens: int
    seconds: float
    opens_per_s: float
    cpu_s: float
    unexpected: int
    marker: str
    path_len: float
    rate_limit: float

    @property
    def cpu_us_per_open(self) -> float:
        return self.cpu_s / self.opens * 1e6 if self.opens else 0.0


@dataclass(frozen=True)
class StormSpec:
    """What to run: a storm mode, and either a duration or an exact count."""

    mode: str = "miss"
    seconds: float = 3.0
    count: int = 0
    rate: float = 0.0
    threads: int = 1

    def argv(self, binary: Path = STORM_BINARY, cpu: int | None = STORM_CPU) -> list[str]:
        args = [str(binary), "--mode", self.mode, "--threads", str(self.threads)]
        args += ["--count", str(self.count)] if self.count else ["--seconds", str(self.seconds)]
        if self.rate:
            args += ["--rate", str(self.rate)]
        return pinned(args, cpu)


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """argv under taskset: taskset execs, so the pid (and rusage) stays the program's."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def run_storm(spec: StormSpec, cpu: int | None = STORM_CPU) -> StormResult:
    out = subprocess.run(spec.argv(cpu=cpu), check=True, capture_output=True, text=True,
                         timeout=spec.seconds + 600)
    result = StormResult(**json.loads(out.stdout.strip().splitlines()[-1]))
    if result.unexpected:
        raise RuntimeError(f"storm: {result.unexpected} opens had the wrong outcome")
    return result


# ---- the tracers


@dataclass(frozen=True)
class TracerSpec:
    """How to start one tracer, tell that it is attached, and read its output.

    ready_text: bytes its stdout (or stderr, ready_on_stderr) holds once attached;
    None: attached when every BPF program it loaded has a link.
    filters_out_storm: its filter matches nothing, so no storm line is expected.
    """

    name: str
    argv: list[str]
    ready_text: bytes | None
    lost_pattern: re.Pattern[str]
    event_line: re.Pattern[bytes] = re.compile(rb"^(\d|\{)")
    filters_out_storm: bool = False
    ready_on_stderr: bool = False


_EO_SUMMARY = re.compile(r"echo-open: (?P<shown>\d+) events shown, \d+ filtered in the kernel, "
                         r"(?P<lost>\d+) lost \(.*path fault (?P<path_fault>\d+)\)")
_LOST_EVENTS = re.compile(r"Lost (?P<lost>\d+) events")


def nonexistent_pid() -> int:
    """A pid no process has (for filters that must match nothing)."""
    pid = int(Path("/proc/sys/kernel/pid_max").read_text()) - 1
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


def tracer_specs(echo_open: Path = ECHO_OPEN) -> dict[str, TracerSpec]:
    """Every tracer the benchmark knows, by name."""
    nobody = str(nonexistent_pid())
    eo = str(echo_open)
    return {
        "echo-open": TracerSpec("echo-open", [eo], b"PATH\n", _EO_SUMMARY),
        # no header in JSON: the line it writes to stderr once attached
        "echo-open-json": TracerSpec("echo-open-json", [eo, "--json"], b"echo-open: tracing",
                                     _EO_SUMMARY, ready_on_stderr=True),
        "echo-open-nomatch": TracerSpec("echo-open-nomatch", [eo, "-p", nobody], b"PATH\n",
                                        _EO_SUMMARY, filters_out_storm=True),
        # its header sits in stdio's buffer until an event flushes it: watch its links
        "opensnoop": TracerSpec("opensnoop", [str(OPENSNOOP)], None, _LOST_EVENTS),
        "opensnoop-nomatch": TracerSpec("opensnoop-nomatch", [str(OPENSNOOP), "-p", nobody],
                                        None, _LOST_EVENTS, filters_out_storm=True),
        # its BEGIN probe prints after every probe is attached ("Attaching" comes before)
        "bpftrace": TracerSpec("bpftrace", [str(BPFTRACE), str(OPENSNOOP_BT)],
                               b"Tracing open syscalls", _LOST_EVENTS),
    }


def available(spec: TracerSpec) -> bool:
    return all(Path(arg).exists() for arg in spec.argv[:2] if arg.startswith("/"))


# ---- process accounting


def cpu_seconds_of(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def all_programs_linked(pid: int) -> bool:
    """True once the process holds BPF programs and as many BPF links."""
    progs = links = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        progs += target == "anon_inode:bpf-prog"
        links += target == "anon_inode:bpf_link"
    return progs > 0 and links >= progs


def foreign_link_count() -> int:
    """BPF links attached on the machine now: other tracers slow every syscall too."""
    try:
        out = subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
        return len(json.loads(out or "[]"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return -1


# ---- a tracer's life: start, wait until attached, stop


@dataclass
class TracerRun:
    """A tracer process writing to files in ``workdir``."""

    spec: TracerSpec
    workdir: Path
    cpu: int | None = TRACER_CPU
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready_s: float = 0.0
    cpu_at_ready: float = 0.0
    peak_rss_kib: int = 0
    cpu_total_s: float = 0.0
    exit_code: int | None = None

    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"{self.spec.name}.out"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"{self.spec.name}.err"

    def start(self) -> None:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(pinned(self.spec.argv, self.cpu), stdout=out,
                                         stderr=err, stdin=subprocess.DEVNULL)
        self._wait_ready()

    def _is_ready(self) -> bool:
        assert self.proc is not None
        if self.spec.ready_text is None:
            return all_programs_linked(self.proc.pid)
        path = self.stderr_path if self.spec.ready_on_stderr else self.stdout_path
        with open(path, "rb") as out:
            return self.spec.ready_text in out.read(1 << 16)

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = self.started + READY_TIMEOUT
        while not self._is_ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited with {self.proc.returncode}: "
                                   f"{self.stderr_path.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.spec.name} not ready in {READY_TIMEOUT} s")
            time.sleep(0.002)
        self.ready_s = time.monotonic() - self.started
        # CPU from here on is the tracer's per-event work, not its start-up
        self.cpu_at_ready = cpu_seconds_of(self.proc.pid)

    def stop(self) -> None:
        """SIGINT, let it flush, reap it with its rusage."""
        assert self.proc is not None
        pid = self.proc.pid
        self.peak_rss_kib = vm_hwm_kib(pid)
        os.kill(pid, signal.SIGINT)
        status, usage = _wait4(pid, STOP_TIMEOUT)
        self.proc.returncode = self.exit_code = os.waitstatus_to_exitcode(status)
        self.peak_rss_kib = max(self.peak_rss_kib, usage.ru_maxrss)
        self.cpu_total_s = usage.ru_utime + usage.ru_stime

    @property
    def cpu_after_ready_s(self) -> float:
        return max(0.0, self.cpu_total_s - self.cpu_at_ready)


def _wait4(pid: int, timeout: float) -> tuple[int, resource.struct_rusage]:
    """os.wait4 with a timeout; SIGKILL when it runs out."""
    deadline = time.monotonic() + timeout
    while True:
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
        if reaped:
            return status, usage
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            return status, usage
        time.sleep(0.01)


# ---- reading a tracer's output


@dataclass
class OutputCount:
    """What a tracer printed: all events, the storm's, and the storm paths' sizes."""

    events: int = 0
    storm_lines: int = 0
    path_bytes: int = 0
    lost: int = 0
    path_fault: int = 0
    shown: int | None = None


def count_output(spec: TracerSpec, stdout_path: Path, stderr_path: Path,
                 marker: str) -> OutputCount:
    """Count lines with the storm's marker and the length of the path printed on each.

    A printed path runs from the marker to the first space, quote or line end.
    """
    count = OutputCount()
    marker_bytes = marker.encode()
    path_run = re.compile(re.escape(marker_bytes) + rb'[^\s"]*')
    with open(stdout_path, "rb") as out:
        for line in out:
            if spec.event_line.match(line):
                count.events += 1
            if marker_bytes in line:
                count.storm_lines += 1
                found = path_run.search(line)
                count.path_bytes += found.end() - found.start() if found else 0
    text = (stderr_path.read_text(errors="replace") + "\n"
            + _tail_text(stdout_path, 1 << 16))
    _count_losses(spec, text, count)
    return count


def _tail_text(path: Path, size: int) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - size))
        return f.read().decode(errors="replace")


def _count_losses(spec: TracerSpec, text: str, count: OutputCount) -> None:
    for found in spec.lost_pattern.finditer(text):
        groups = found.groupdict()
        count.lost += int(groups["lost"])
        if groups.get("path_fault") is not None:
            count.path_fault += int(groups["path_fault"])
        if groups.get("shown") is not None:
            count.shown = int(groups["shown"])


# ---- one measurement


@dataclass
class Measurement:
    """A traced storm, its paired baseline, and what the tracer printed."""

    spec: TracerSpec
    storm: StormResult
    baseline: StormResult | None
    tracer: TracerRun
    output: OutputCount
    pair: int = 0
    foreign_links: int = -1
    extra: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, object]:
        """The result record: every name in METRICS."""
        storm, base, out, tr = self.storm, self.baseline, self.output, self.tracer
        accounted = out.storm_lines + out.lost + out.path_fault
        rec: dict[str, object] = {
            "mode": _mode_label(storm), "tracer": self.spec.name, "pair": self.pair,
            "opens": storm.opens, "seconds": storm.seconds, "opens_per_s": storm.opens_per_s,
            "baseline_opens_per_s": base.opens_per_s if base else None,
            "throughput_ratio": _ratio(storm.opens_per_s, base.opens_per_s) if base else None,
            "captured": out.storm_lines, "capture_ratio": _ratio(out.storm_lines, storm.opens),
            "lost": out.lost, "path_fault": out.path_fault, "accounted": accounted,
            "accounting_gap": (None if self.spec.filters_out_storm
                               else storm.opens - accounted),
            "events": out.events, "shown": out.shown,
            "tracer_cpu_s": tr.cpu_after_ready_s,
            # below ~1000 events (a filter that matches nothing) the quotient means nothing
            "tracer_cpu_us_per_event": (tr.cpu_after_ready_s / out.events * 1e6
                                        if out.events >= 1000 else None),
            "storm_cpu_us_per_open": storm.cpu_us_per_open,
            "baseline_storm_cpu_us_per_open": base.cpu_us_per_open if base else None,
            "storm_cpu_added_us": (storm.cpu_us_per_open - base.cpu_us_per_open
                                   if base else None),
            "peak_rss_mib": tr.peak_rss_kib / 1024, "ready_s": tr.ready_s,
            "path_bytes_ratio": (out.path_bytes / out.storm_lines / storm.path_len
                                 if out.storm_lines else None),
            "exit_code": tr.exit_code, "foreign_links": self.foreign_links,
        }
        rec.update(self.extra)
        return rec


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _mode_label(storm: StormResult) -> str:
    return f"{storm.mode}-{storm.rate_limit / 1000:g}k" if storm.rate_limit else storm.mode


def measure_traced(spec: TracerSpec, storm: StormSpec, *, baseline: StormResult | None = None,
                   pair: int = 0, workdir: Path | None = None,
                   storm_cpu: int | None = STORM_CPU, tracer_cpu: int | None = TRACER_CPU,
                   on_ready: Callable[[TracerRun], None] | None = None,
                   settle: float = 0.0) -> Measurement:
    """Start the tracer, wait until it is attached, run the storm, stop it, count.

    settle: seconds between the storm's end and SIGINT. 0 asks the tracer to
    deliver everything it was handed even when stopped right away.
    """
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="eo-bench-")) if workdir is None else workdir
    try:
        foreign = foreign_link_count()
        tracer = TracerRun(spec, work, cpu=tracer_cpu)
        tracer.start()
        if on_ready:
            on_ready(tracer)
        try:
            result = run_storm(storm, cpu=storm_cpu)
            time.sleep(settle)
        finally:
            tracer.stop()
        output = count_output(spec, tracer.stdout_path, tracer.stderr_path, result.marker)
        return Measurement(spec, result, baseline, tracer, output, pair, foreign)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


def measure_pair(spec: TracerSpec, storm: StormSpec, pair: int = 0,
                 storm_cpu: int | None = STORM_CPU,
                 tracer_cpu: int | None = TRACER_CPU) -> dict[str, object]:
    """A B: the untraced storm, then the same storm under the tracer; one record."""
    baseline = run_storm(storm, cpu=storm_cpu)
    return measure_traced(spec, storm, baseline=baseline, pair=pair, storm_cpu=storm_cpu,
                          tracer_cpu=tracer_cpu).record()


def as_dict(result: StormResult) -> dict[str, object]:
    return asdict(result)
