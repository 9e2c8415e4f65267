"""The echo-open command: parse options, run the tracer, render events.

Exit status: 0 after Ctrl-C, SIGTERM, -d expiry or a closed stdout; with a
COMMAND, the command's own status (128+N if signal N ended it; 127 not found);
2 usage error; 77 not permitted; 78 kernel without BTF; 72 tracefs unavailable;
70 the BPF object failed to load or attach; 74 output error; 73 --metrics cannot listen;
1 an internal error.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import select
import shutil
import signal
import struct
import sys
import termios
import time
import tty
from collections.abc import Callable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from .. import doctor as _doctor
from .. import layout
from ..flags import OPEN_FLAGS, parse_open_flag
from ..output import DEFAULT_MAX_FILES, EventFile
from ..summary import MAX_TOP, SortKey, Summary
from ..system import EnvironmentProblem, NoBTF, NotPermitted, NoTracefs

if TYPE_CHECKING:
    from ..metrics import MetricsServer

try:
    from ..loader import BPFError, LoadError, RecordBatch
    from ..render import JsonRenderer, TableRenderer
    from ..tracer import Filters, InvalidSetting, Stats, Tracer, Tuning
    from . import top as _top
except ImportError as exc:  # libbpf missing or too old: --version and doctor still run
    _BINDING_ERROR: ImportError | None = exc
else:
    _BINDING_ERROR = None

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BPF = 70
EXIT_NO_TRACEFS = 72
EXIT_CANT_LISTEN = 73  # EX_CANTCREAT: --metrics cannot listen on its address
EXIT_OUTPUT = 74
EXIT_NO_OTLP = 69  # EX_UNAVAILABLE: --otlp without the otlp extra installed
EXIT_NOT_PERMITTED = 77
EXIT_NO_BTF = 78
EXIT_COMMAND_NOT_EXECUTABLE = 126
EXIT_COMMAND_NOT_FOUND = 127

_ENV_EXIT = {NotPermitted: EXIT_NOT_PERMITTED, NoBTF: EXIT_NO_BTF, NoTracefs: EXIT_NO_TRACEFS}

EXAMPLES = """
Examples:

  echo-open                        every open on the machine

  echo-open -x                     only failed opens

  echo-open -p 1234 -p 1235        opens by two processes

  echo-open -n nginx -e            names containing "nginx", with flags

  echo-open -f O_WRONLY -f O_CREAT opens for writing or creating

  echo-open --path-prefix /etc/    paths under /etc/ (as passed)

  echo-open -F --prefix-on resolved --path-prefix /etc/
                                   what really is under /etc/

  echo-open --json -d 10 > o.jsonl ten seconds of JSON lines

  echo-open -x -- make             what make and its children failed to open

  echo-open -o t.txt -- ./configure   the trace in a file, not among configure's output

  echo-open -p 1234 --children     a process and its tree, now and later

  echo-open --wait-tree -- ./daemon.sh   until the daemon it starts has exited

  echo-open -C --container 3f2a9c1b   one container, ids in a column

  echo-open --netns blue           in the network namespace named blue

Commands:

  echo-open doctor                 can this machine trace? (--json)

  echo-open top                    the busiest paths, processes and errors, each second

  echo-open --summary -d 10        ten seconds counted: opens per path, process, error

  echo-open -- doctor              trace a command that is named doctor
"""


class PrefixOn(str, Enum):
    passed = "passed"
    resolved = "resolved"


class _OutputStalled(Exception):
    """A write to stdout was still blocked _WRITE_GRACE seconds after a stop."""


# how long output may take to get out once tracing is to stop: a stalled reader of stdout
# must not hold the tracer (and its programs in the kernel) for longer
_WRITE_GRACE = 0.5


class _StopSignals:
    """SIGINT and SIGTERM, and -d's SIGALRM, set a flag instead of raising, so a batch is
    never cut in half; but a write still blocked _WRITE_GRACE seconds after the stop is
    cut short (_OutputStalled), whatever the reader of stdout does."""

    def __init__(self) -> None:
        self.signum = 0          # the last stop signal received
        self.expired = False     # -d ran out
        self.writing = False     # in a write to stdout: the moment a stall can be cut
        self.cut_writes = False  # the grace is over: end any write at once
        self._in_grace = False
        self._previous: dict[int, object] = {}

    @property
    def raised(self) -> bool:
        return self.signum != 0 or self.expired

    def expire_after(self, seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def allow_writes_for(self, seconds: float) -> None:
        self._in_grace = True
        self.cut_writes = False
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def _set(self, signum: int, frame: object) -> None:
        if signum == signal.SIGALRM:
            if self._in_grace:
                self.cut_writes = True
            else:
                self.expired = True
                self.allow_writes_for(_WRITE_GRACE)
        else:
            if not self.raised:
                self.allow_writes_for(_WRITE_GRACE)
            self.signum = signum
        if self.writing and self.cut_writes:
            raise _OutputStalled

    def __enter__(self) -> _StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            self._previous[signum] = signal.signal(signum, self._set)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _size(value: str | int) -> int:
    """``4M``, ``64K``, ``1G`` or bytes -> an int (a parser: the tracer checks the value)."""
    if isinstance(value, int):
        return value
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in units else ""
    try:
        return int(text[:-1] if unit else text) * units[unit]
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a size like 16M") from None


def _complete_open_flag(incomplete: str) -> list[str]:
    """Shell completion of -f: the flag names that start with what is typed."""
    typed = incomplete.upper()
    return sorted(name for name in OPEN_FLAGS
                  if not name.startswith("_") and name.startswith(typed))


def _open_flag(value: str | int) -> int:
    """``O_WRONLY``, ``creat`` or a number -> the flag's value (a parser)."""
    if isinstance(value, int):
        return value
    try:
        return parse_open_flag(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _print_version(value: bool) -> None:
    """--version: what runs here, in four lines (no privileges, nothing loaded)."""
    if not value:
        return
    facts = _doctor.installation()
    if facts.libbpf_error:
        libbpf = f"libbpf: does not load: {facts.libbpf_error}"
    else:
        where = "bundled" if facts.libbpf_bundled else "system"
        libbpf = f"libbpf {facts.libbpf_version} ({where}: {facts.libbpf_path})"
    bpf_object = (f"bpf object {facts.object_build_id} ({facts.object_path})"
                  if facts.object_build_id else
                  f"bpf object: unreadable: {facts.object_path}: {facts.object_error}")
    print(f"echo-open {facts.version}\n{libbpf}\nkernel {facts.kernel_release}\n{bpf_object}")
    raise typer.Exit(EXIT_OK)


_LONGEST_DURATION = 1e9


def _positive(value: float | None) -> float | None:
    # nan and inf parse as floats; a deadline past any real run is a typo
    if value is not None and not (0 < value <= _LONGEST_DURATION and math.isfinite(value)):
        raise typer.BadParameter(f"must be a number of seconds above 0 and at most "
                                 f"{_LONGEST_DURATION:.0f} (about 31 years)")
    return value


# the Tracer validates every setting; its errors name the option they came from
_OPTION_OF_SETTING = {"pids": "'-p' / '--pid'", "tids": "'-t' / '--tid'", "uid": "'-u' / '--uid'",
                      "comm": "'-n' / '--name'", "flags": "'-f' / '--flag'",
                      "path_prefixes": "'--path-prefix'", "ring_size": "'--ring-size'",
                      "mntns": "'--mntns'", "pidns": "'--pidns'", "netns": "'--netns'",
                      "cgroups": "'--cgroup'", "containers": "'--container'"}


def _print_summary(stats: Stats, shown: int, verb: str = "shown") -> None:
    drops = ", ".join(f"{name.replace('_', ' ')} {count}"
                      for name, count in stats.drops().items())
    # traced but never written: only when output stopped early (a closed pipe)
    unshown = f", {stats.emitted - shown} not {verb}" if stats.emitted > shown else ""
    print(f"echo-open: {shown} events {verb}, {stats.filtered} filtered in the kernel, "
          f"{stats.dropped} lost ({drops}){unshown}", file=sys.stderr)


def _warn_drops(stats: Stats, previous: Stats) -> None:
    new = stats - previous
    if new.dropped:
        print(f"echo-open: warning: {new.dropped} events lost in the last interval "
              f"(ring full {new.ring_full}, args full {new.args_full}, internal {new.internal})"
              "; try a larger --ring-size or a filter", file=sys.stderr, flush=True)
    if new.path_fault:
        # shown, but without their path: the opener's memory could not be read
        print(f"echo-open: warning: {new.path_fault} paths unreadable in the last interval",
              file=sys.stderr, flush=True)


def _own_mntns() -> int:
    try:
        return os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return 0


# The options the tracer and the top view share, defined once: the filters (all run in the
# kernel), -d, --ring-size, -v. Both commands build their Tracer with _make_tracer.
PidOption = Annotated[list[int], typer.Option(
    "-p", "--pid", metavar="PID", help="Only this process (repeatable).")]
TidOption = Annotated[list[int], typer.Option(
    "-t", "--tid", metavar="TID", help="Only this thread (repeatable).")]
UidOption = Annotated[int | None, typer.Option(
    "-u", "--uid", min=0, metavar="UID", help="Only this user id.")]
FailedOption = Annotated[bool, typer.Option("-x", "--failed", help="Only failed opens.")]
NameOption = Annotated[str | None, typer.Option(
    "-n", "--name", metavar="NAME", help="Only processes whose name contains NAME.")]
FlagOption = Annotated[list[int], typer.Option(
    "-f", "--flag", metavar="FLAG", parser=_open_flag, autocompletion=_complete_open_flag,
    help="Only opens with any of these flags (O_WRONLY...).")]
PathPrefixOption = Annotated[list[str], typer.Option(
    "--path-prefix", metavar="PREFIX", help="Only paths starting with this (repeatable).")]
PrefixOnOption = Annotated[PrefixOn, typer.Option(
    "--prefix-on", help="Match --path-prefix on the path as passed or on the resolved path.")]
MntnsOption = Annotated[int | None, typer.Option(
    "--mntns", min=1, metavar="INODE",
    help="Only openers in this mount namespace (inode, as /proc/PID/ns/mnt shows it).")]
PidnsOption = Annotated[int | None, typer.Option(
    "--pidns", min=1, metavar="INODE", help="Only openers in this pid namespace (inode).")]
NetnsOption = Annotated[str | None, typer.Option(
    "--netns", metavar="NAME|INODE",
    help="Only openers in this network namespace: its inode, or its name (ip netns, docker).")]
CgroupOption = Annotated[list[str], typer.Option(
    "--cgroup", metavar="PATH",
    help="Only openers in this cgroup v2 directory or below (repeatable).")]
ContainerOption = Annotated[list[str], typer.Option(
    "--container", metavar="ID",
    help="Only openers in this container: an id prefix or nspawn machine name (repeatable).")]
DurationOption = Annotated[float | None, typer.Option(
    "-d", "--duration", callback=_positive, metavar="SECONDS",
    help="Stop after this many seconds.")]
RingSizeOption = Annotated[int, typer.Option(
    "--ring-size", metavar="SIZE", parser=_size,
    show_default=f"{layout.DEFAULT_RING_SIZE >> 20}M", help="Ring buffer size (power of two).")]
VerboseOption = Annotated[bool, typer.Option("-v", "--verbose", help="Show libbpf's messages.")]
MetricsOption = Annotated[str | None, typer.Option(
    "--metrics", metavar="ADDR",
    help="Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT, [IPv6]:PORT).")]
CommandArgument = Annotated[list[str] | None, typer.Argument(
    metavar="[-- COMMAND [ARG...]]",
    help="Run COMMAND and trace only it and the processes it starts.")]
# the summary's: rows per table and their order (top, and trace --summary)
RowsOption = Annotated[int | None, typer.Option(
    "-N", "--rows", min=1, max=MAX_TOP, metavar="N",
    help="Rows per table (default: 10, or what fits the terminal).")]
SortOption = Annotated[SortKey, typer.Option(
    "--sort", help="Order rows by opens, failed opens, or key (path, pid, errno).")]


def trace(
    pid: PidOption = [],  # noqa: B006
    tid: TidOption = [],  # noqa: B006
    uid: UidOption = None,
    failed: FailedOption = False,
    name: NameOption = None,
    extended: Annotated[bool, typer.Option(
        "-e", "--extended", help="Show syscall, flags and mode.")] = False,
    timestamp: Annotated[bool, typer.Option("-T", "--timestamp", help="Show the time.")] = False,
    print_uid: Annotated[bool, typer.Option(
        "-U", "--print-uid", help="Show the UID column.")] = False,
    duration: DurationOption = None,
    flag: FlagOption = [],  # noqa: B006
    full_path: Annotated[bool, typer.Option(
        "-F", "--full-path", help="Show the resolved absolute path (-e -F: both).")] = False,
    json_lines: Annotated[bool, typer.Option(
        "--json", help="One JSON object per line (with --summary: one object).")] = False,
    output_file: Annotated[str | None, typer.Option(
        "-o", "--output", metavar="FILE",
        help="Write the events to FILE (created or truncated), not to stdout.")] = None,
    max_size: Annotated[int | None, typer.Option(
        "--max-size", metavar="SIZE", parser=_size,
        help="With -o: rotate FILE before it passes SIZE (FILE.1, FILE.2, ...).")] = None,
    max_files: Annotated[int | None, typer.Option(
        "--max-files", min=1, metavar="N",
        help=f"With --max-size: rotated files kept (default {DEFAULT_MAX_FILES}).")] = None,
    children: Annotated[bool, typer.Option(
        "--children", help="With -p: the processes' children too, now and later.")] = False,
    wait_tree: Annotated[bool, typer.Option(
        "--wait-tree",
        help="With a COMMAND (or -p --children): trace until every process of the tree "
             "has exited, not only COMMAND.")] = False,
    path_prefix: PathPrefixOption = [],  # noqa: B006
    prefix_on: PrefixOnOption = PrefixOn.passed,
    mntns: MntnsOption = None,
    pidns: PidnsOption = None,
    netns: NetnsOption = None,
    cgroup: CgroupOption = [],  # noqa: B006
    container: ContainerOption = [],  # noqa: B006
    print_container: Annotated[bool, typer.Option(
        "-C", "--print-container",
        help="Show the CONTAINER column (short id; '-' outside containers).")] = False,
    ring_size: RingSizeOption = layout.DEFAULT_RING_SIZE,
    verbose: VerboseOption = False,
    metrics: MetricsOption = None,
    summary: Annotated[bool, typer.Option(
        "--summary", help="Count instead of showing events: at exit, opens per path, process "
        "and error, to stdout (as strace -c).")] = False,
    rows: RowsOption = None,
    sort: SortOption = SortKey.opens,
    otlp_url: Annotated[str | None, typer.Option(
        "--otlp", metavar="URL",
        help="Also send every event as an OpenTelemetry log record to this OTLP/HTTP "
             "endpoint (e.g. http://127.0.0.1:4318/v1/logs).")] = None,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Show the versions of echo-open, libbpf, the kernel and the BPF object.")
    ] = False,
    command: CommandArgument = None,
) -> None:
    """Show every file open on this machine as it happens (eBPF)."""
    if summary and (extended or timestamp or print_uid or full_path or print_container):
        raise typer.BadParameter("--summary counts opens: -e, -T, -U, -F and -C show events",
                                 param_hint="'--summary'")
    if not summary and (rows is not None or sort is not SortKey.opens):
        raise typer.BadParameter("-N and --sort order the summary: add --summary",
                                 param_hint="'-N' / '--sort'")
    exporter = _otlp_exporter(otlp_url) if otlp_url is not None else None
    # the kernel resolves paths only when they are shown, exported (as in JSON) or matched
    # on: the walk costs each successful open ~0.5 us, and a long path twice its ring space
    if output_file is None and (max_size is not None or max_files is not None):
        raise typer.BadParameter("rotates the file of -o FILE: add -o",
                                 param_hint="'--max-size' / '--max-files'")
    if max_files is not None and max_size is None:
        raise typer.BadParameter("keeps the files --max-size rotates: add --max-size",
                                 param_hint="'--max-files'")
    tracer, child, output_fd, metrics_server = _make_tracer(
        pid=pid, tid=tid, uid=uid, failed=failed, name=name, flag=flag,
        path_prefix=path_prefix, prefix_on=prefix_on, ring_size=ring_size, verbose=verbose,
        command=command,
        resolve_paths=exporter is not None or (not summary and (full_path or json_lines)),
        children=children, wait_tree=wait_tree, output_file=output_file,
        mntns=mntns, pidns=pidns, netns=netns, cgroup=cgroup, container=container,
        max_size=max_size, max_files=max_files, metrics=metrics,
        metrics_extra=exporter.stats if exporter is not None else None)
    if summary:
        view = _summary_view(json_lines, interval=None, rows=rows, sort=sort, at_exit=True)
    else:
        renderer = JsonRenderer() if json_lines else TableRenderer(
            timestamp=timestamp, uid=print_uid, extended=extended, resolved=full_path,
            own_mntns=_own_mntns(), print_container=print_container)
        view = _events_view(renderer)
    if exporter is not None:
        view = _exporting(view, exporter)
    raise typer.Exit(_run(tracer, view, duration, child, output_fd, wait_tree, metrics_server))


def _otlp_exporter(url: str):
    """--otlp's exporter (echo_open.otlp, and OpenTelemetry, imported only then); a bad URL
    is a usage error, a missing extra exit 69."""
    from .. import otlp

    if problem := otlp.check_url(url):
        raise typer.BadParameter(problem, param_hint="'--otlp'")
    try:
        return otlp.OtlpExporter(url)
    except otlp.MissingExtra:
        print(f"echo-open: --otlp needs the OpenTelemetry packages: {otlp.INSTALL_HINT}",
              file=sys.stderr)
        raise typer.Exit(EXIT_NO_OTLP) from None


class _ExportingOutput:
    """An output that also hands every batch to the OTLP exporter, an extra sink fed from
    the same batches (it queues or drops, never waits); flushed (at most 2 s) on close."""

    def __init__(self, output: _Output, exporter, wall_offset_ns: int) -> None:
        self._output = output
        self._exporter = exporter
        self._wall_offset_ns = wall_offset_ns
        self._checked_at = time.monotonic()
        self._dropped = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._output, name)

    def show(self, batch: RecordBatch) -> None:
        self._exporter.submit(batch, self._wall_offset_ns)
        self._output.show(batch)

    def tick(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= 1.0:  # drops said at most once a second, as losses
            dropped = self._exporter.stats()["dropped"]
            if dropped > self._dropped:
                why = self._exporter.last_error or "the queue was full"
                print(f"echo-open: warning: otlp: {dropped - self._dropped} events dropped in "
                      f"the last interval ({why})", file=sys.stderr, flush=True)
            self._checked_at, self._dropped = now, dropped
        return self._output.tick()

    def close(self) -> None:
        try:
            self._output.close()
        finally:
            self._exporter.close()

    def report(self) -> None:
        stats = self._exporter.stats()
        why = (f"; last error: {self._exporter.last_error}"
               if stats["dropped"] and self._exporter.last_error else "")
        print(f"echo-open: otlp: {stats['exported']} events exported, {stats['dropped']} "
              f"dropped ({self._exporter.url}){why}", file=sys.stderr)


def _exporting(view: Callable[[Tracer, _StopSignals, int], _Output], exporter
               ) -> Callable[[Tracer, _StopSignals, int], _Output]:
    return lambda tracer, stop, fd: _ExportingOutput(view(tracer, stop, fd), exporter,
                                                     tracer.wall_offset_ns)


def _make_tracer(*, pid: list[int], tid: list[int], uid: int | None, failed: bool,
                 name: str | None, flag: list[int], path_prefix: list[str], prefix_on: PrefixOn,
                 ring_size: int, verbose: bool, command: list[str] | None,
                 resolve_paths: bool, children: bool = False, wait_tree: bool = False,
                 output_file: str | None = None, mntns: int | None = None,
                 pidns: int | None = None, netns: str | None = None,
                 cgroup: list[str] | None = None, container: list[str] | None = None,
                 max_size: int | None = None, max_files: int | None = None,
                 metrics: str | None = None,
                 metrics_extra: Callable[[], Mapping[str, int]] | None = None,
                 ) -> tuple[Tracer, _HeldCommand | None, int | EventFile, MetricsServer | None]:
    """The Tracer the shared options ask for (every command that traces builds it so),
    COMMAND forked and held, if one is given, the output (stdout's fd, or -o's EventFile)
    and the --metrics server (listening, not yet serving); a bad setting is a usage
    error."""
    if sys.stdout is None:  # started with fd 1 closed (`echo-open >&-`)
        print("echo-open: output error: standard output is closed", file=sys.stderr)
        raise typer.Exit(EXIT_OUTPUT)
    if _BINDING_ERROR is not None:
        print(f"echo-open: libbpf does not load: {_BINDING_ERROR} (install libbpf1 >= 1.1)",
              file=sys.stderr)
        raise typer.Exit(EXIT_FAILURE)
    netns_inode = _netns_inode(netns)
    child = None
    metrics_address = None
    if metrics is not None:
        from ..metrics import BadAddress, parse_address  # (prometheus_client: only now)
        try:
            metrics_address = parse_address(metrics)
        except BadAddress as exc:
            raise typer.BadParameter(str(exc), param_hint="'--metrics'") from None
    if children and not pid:
        raise typer.BadParameter("follows the processes given with -p", param_hint="'--children'")
    if wait_tree and not (command or children):
        raise typer.BadParameter("needs a COMMAND or -p PID --children: a tree to wait for",
                                 param_hint="'--wait-tree'")
    if command:
        if pid or tid:
            raise typer.BadParameter("a COMMAND is traced by itself: no -p/-t with it")
        problem = _command_problem(command[0])
        if problem:
            print(f"echo-open: {problem[1]}: {command[0]}", file=sys.stderr)
            raise typer.Exit(problem[0])
        output_fd = _open_output(output_file, max_size, max_files)  # before COMMAND exists
        # a busy port: COMMAND never runs
        metrics_server = _listen(metrics_address, output_fd, metrics_extra)
        child = _HeldCommand(command)
        pid = [child.pid]
    else:
        output_fd = _open_output(output_file, max_size, max_files)
        metrics_server = _listen(metrics_address, output_fd, metrics_extra)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.CRITICAL,
                        format="%(name)s: %(message)s")
    try:
        filters = Filters(pids=pid, tids=tid, follow_children=child is not None or children,
                          uid=uid,
                          failed_only=failed, comm=name, flags=flag, path_prefixes=path_prefix,
                          prefix_on_resolved=prefix_on is PrefixOn.resolved,
                          mntns=mntns, pidns=pidns, netns=netns_inode, cgroups=cgroup or (),
                          containers=container or ())
        tracer = Tracer(filters, Tuning(ring_size=ring_size, resolve_paths=resolve_paths,
                                        count_outcomes=metrics_server is not None))
    except InvalidSetting as exc:
        if child is not None:
            child.kill()
        if metrics_server is not None:
            metrics_server.close()
        raise typer.BadParameter(str(exc), param_hint=_OPTION_OF_SETTING.get(exc.setting)
                                 ) from None
    return tracer, child, output_fd, metrics_server


def _netns_inode(netns: str | None) -> int | None:
    """--netns NAME|INODE -> the namespace's inode (pyroute2 is imported only for a name)."""
    if netns is None:
        return None
    from ..namespaces import netns_inode

    inode = netns_inode(netns)
    if inode is None:
        raise typer.BadParameter(f"no network namespace is named {netns!r} (ip netns list)",
                                 param_hint="'--netns'")
    return inode


def _open_output(path: str | None, max_size: int | None = None,
                 max_files: int | None = None) -> int | EventFile:
    """-o FILE opened (created, or truncated; with --max-size, rotated) for the events;
    stdout's fd without -o."""
    if path is None:
        return sys.stdout.fileno()
    try:
        return EventFile(path, max_size=max_size, max_files=max_files or DEFAULT_MAX_FILES)
    except OSError as exc:
        print(f"echo-open: output error: cannot open {path}: {exc.strerror}", file=sys.stderr)
        raise typer.Exit(EXIT_OUTPUT) from None
    except ValueError as exc:  # a size below a byte, a FIFO to rotate
        raise typer.BadParameter(str(exc), param_hint="'--max-size'") from None


def _listen(address: tuple[str, int] | None, output: int | EventFile,
            extra: Callable[[], Mapping[str, int]] | None = None) -> MetricsServer | None:
    """--metrics' server, listening (extra: --otlp's counts); one that cannot listen is
    exit 73."""
    if address is None:
        return None
    from ..metrics import MetricsServer
    try:
        return MetricsServer(address, extra=extra)
    except OSError as exc:
        if isinstance(output, EventFile):
            output.close()
        reason = exc.strerror or str(exc)
        print(f"echo-open: --metrics: cannot listen on {address[0]}:{address[1]}: {reason}",
              file=sys.stderr)
        raise typer.Exit(EXIT_CANT_LISTEN) from None


def _command_problem(name: str) -> tuple[int, str] | None:
    """Why COMMAND cannot run, as a shell says it: 127 not found, 126 not executable."""
    if shutil.which(name) is not None:
        return None
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(folder or ".", name)
                      for folder in os.environ.get("PATH", os.defpath).split(os.pathsep)]
    if any(os.path.exists(path) and not os.path.isdir(path) for path in candidates):
        return EXIT_COMMAND_NOT_EXECUTABLE, "permission denied (not executable)"
    return EXIT_COMMAND_NOT_FOUND, "command not found"


# a record's ts_ns (CLOCK_MONOTONIC), read at layout.EVENT_TS_OFFSET
_TS = struct.Struct("<Q")


class _ReopenOnHangup:
    """With -o FILE, SIGHUP reopens FILE (logrotate renamed it) instead of ending the
    tracer; the events go on into the new FILE, none lost."""

    def __init__(self, output: int | EventFile) -> None:
        self._file = output if isinstance(output, EventFile) else None
        self._previous: object = None

    def __enter__(self) -> _ReopenOnHangup:
        if self._file is not None:
            file = self._file
            self._previous = signal.signal(signal.SIGHUP, lambda *_: file.request_reopen())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            signal.signal(signal.SIGHUP, self._previous)


# how long a COMMAND may take to end on its own Ctrl-C before the tracer passes its SIGINT on
_CTRL_C_GRACE = 0.5

# what the tracer (Python) ignores or blocks, and COMMAND must not inherit: under the tracer
# `yes | head -1` must end with SIGPIPE as it does without it
_DEFAULT_DISPOSITIONS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                         signal.SIGQUIT, signal.SIGHUP)


class _HeldCommand:
    """COMMAND forked but held before exec until the tracer is attached, so its pid
    is in the kernel's filter before it runs a single instruction of its own."""

    def __init__(self, argv: list[str]) -> None:
        read_end, self._go = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: wait for the go, then become COMMAND
            try:
                os.close(self._go)
                released = os.read(read_end, 1)
                os.close(read_end)
                if released:
                    for signum in _DEFAULT_DISPOSITIONS:
                        signal.signal(signum, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_SETMASK, [])
                    os.execvp(argv[0], argv)
            except OSError as exc:
                os.write(2, f"echo-open: {argv[0]}: {exc.strerror}\n".encode())
                # as a shell: 127 when there is no such file, 126 when it cannot be run
                os._exit(EXIT_COMMAND_NOT_FOUND if exc.errno == errno.ENOENT
                         else EXIT_COMMAND_NOT_EXECUTABLE)
            os._exit(EXIT_FAILURE)  # the tracer went away without a go
        os.close(read_end)
        self.status: int | None = None
        self.held = True

    def release(self) -> None:
        os.write(self._go, b"g")
        os.close(self._go)
        self.held = False

    def kill(self) -> None:
        """Tracing could not start: the command never runs."""
        if self.held:
            os.close(self._go)  # the child reads EOF and exits
            self.held = False
        self.wait()

    def exited(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status is not None

    def exited_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def wait(self) -> int:
        if self.status is None:
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)
        # a command killed by signal N exits 128+N, as in a shell
        return self.status if self.status >= 0 else 128 - self.status


def _run(tracer: Tracer, view: Callable[[Tracer, _StopSignals, int | EventFile], _Output],
         duration: float | None, child: _HeldCommand | None = None,
         output_fd: int | EventFile = 1, wait_tree: bool = False,
         metrics: MetricsServer | None = None) -> int:
    """Start tracing, hand every batch to what view makes (once attached), stop; the exit
    status."""
    with _StopSignals() as stop, _ReopenOnHangup(output_fd):
        try:
            try:
                tracer.start()
            except BaseException:
                if child is not None:
                    child.kill()
                if metrics is not None:
                    metrics.close()
                raise
        except EnvironmentProblem as exc:
            print(f"echo-open: {exc}", file=sys.stderr)
            return _ENV_EXIT.get(type(exc), EXIT_FAILURE)
        except InvalidSetting as exc:  # a cgroup of the filter removed before the start
            print(f"echo-open: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except LoadError as exc:
            print(f"echo-open: the kernel refused the BPF programs ({exc.operation}: "
                  f"{os.strerror(exc.errno)}); run with -v for the verifier log",
                  file=sys.stderr)
            return EXIT_BPF
        except BPFError as exc:
            if exc.errno == errno.EPERM:
                print(f"echo-open: not permitted: {exc} (needs root or CAP_BPF+CAP_PERFMON)",
                      file=sys.stderr)
                return EXIT_NOT_PERMITTED
            print(f"echo-open: {exc}", file=sys.stderr)
            return EXIT_BPF
        output = view(tracer, stop, output_fd)
        if metrics is not None:
            metrics.serve(tracer, output)
            print(f"echo-open: metrics at {metrics.url}", file=sys.stderr, flush=True)
        status = EXIT_OK
        try:
            _stream(tracer, output, duration, stop, child, wait_tree)
        except _OutputStalled:
            pass  # the reader of stdout stopped reading: what it did not take is not shown
        except BrokenPipeError:
            # the reader went away (e.g. `| head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except OSError as exc:
            print(f"echo-open: output error: {exc}", file=sys.stderr)
            status = EXIT_OUTPUT
        finally:
            output.close()
            tracer.detach()
            stats = tracer.stats()
            if metrics is not None:
                metrics.close()  # no scrape may read the tracer being closed
            tracer.close()
            if isinstance(output_fd, EventFile):
                output_fd.close()
            if child is not None and child.held:  # output failed before the go
                child.kill()
        _print_summary(stats, output.shown, output.verb)
        output.report()  # an extra sink's own line (--otlp)
        if child is not None and status == EXIT_OK:
            # stopped early: SIGTERM is passed on; a Ctrl-C at the terminal reached the
            # command too, but a SIGINT sent to the tracer alone must not leave us waiting
            if stop.signum == signal.SIGTERM and not child.exited():
                os.kill(child.pid, signal.SIGTERM)
            elif stop.signum == signal.SIGINT and not child.exited_within(_CTRL_C_GRACE):
                os.kill(child.pid, signal.SIGINT)
            return child.wait()
        return status


class _Output:
    """Rendered batches to stdout (or -o's file) as UTF-8, written straight to its fd (no
    buffer to flush at exit), counted; a closed pipe is noticed without waiting for a write.

    The loop (_stream) also asks it how long it may wait for a batch (wait_limit), lets it
    act between batches (tick: True to stop), and has it finish after the last batch."""

    verb = "shown"        # what happened to the events, for the line at exit
    warns_drops = True    # losses are reported on stderr once a second

    def __init__(self, renderer: TableRenderer | JsonRenderer | None, wall_offset_ns: int,
                 stop: _StopSignals, fd: int | EventFile) -> None:
        self.renderer = renderer
        self.wall_offset_ns = wall_offset_ns
        self.shown = 0
        self.lag_ns = 0  # at the last batch: how old its newest open was (--metrics)
        self.newest_ts_ns = 0  # and that open's ts_ns
        self._stop = stop
        sys.stdout.flush()
        # -o's file: written through, rotated and reopened by it (its fd changes)
        self._file = fd if isinstance(fd, EventFile) else None
        self._fd = fd.fileno() if isinstance(fd, EventFile) else fd
        # POLLERR/POLLHUP are reported without being asked for: the reader of a pipe went
        # away (`echo-open | head -1`), a terminal hung up
        self._watch = select.poll()
        if self._file is None:
            self._watch.register(self._fd, 0)

    def gone(self) -> bool:
        return bool(self._watch.poll(0))

    def reopen_if_requested(self) -> None:
        """-o's file after a SIGHUP: reopened at once, so logrotate sees a new file."""
        if self._file is not None:
            self._file.reopen_if_requested()

    def take(self, batch: RecordBatch) -> None:
        """A batch shown (or counted), and its lag noted."""
        self.show(batch)
        newest = (len(batch) - 1) * batch.head_size + layout.EVENT_TS_OFFSET
        self.newest_ts_ns = _TS.unpack_from(batch.heads, newest)[0]
        self.lag_ns = max(0, time.monotonic_ns() - self.newest_ts_ns)

    def _write(self, data: bytes | memoryview) -> None:
        if self._file is not None:
            self._file.write(data, self._write_to)
        else:
            self._write_to(self._fd, memoryview(data).cast("B"))

    def _write_to(self, fd: int, view: memoryview) -> None:
        stop = self._stop
        stop.writing = True
        try:
            while view:
                if stop.cut_writes:
                    raise _OutputStalled
                written = os.write(fd, view)
                view = view[written:]
        finally:
            stop.writing = False

    def write_header(self) -> None:
        self._write(self.renderer.header().encode("utf-8"))

    def show(self, batch: RecordBatch) -> None:
        for chunk in self.renderer.render_batch(batch, self.wall_offset_ns):
            self._write(chunk)
        self.shown += len(batch)

    def wait_limit(self) -> float | None:
        return None

    def tick(self) -> bool:
        return False

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass

    def report(self) -> None:
        """A line on stderr after the summary line, for what has one to say."""


def _events_view(renderer: TableRenderer | JsonRenderer
                 ) -> Callable[[Tracer, _StopSignals, int | EventFile], _Output]:
    return lambda tracer, stop, fd: _Output(renderer, tracer.wall_offset_ns, stop, fd)


class _SummaryOutput(_Output):
    """Batches counted in C (summary.Summary), never shown one by one: a frame each
    interval (top), and at exit the whole run's summary (--summary). On a terminal a frame
    replaces the last (clear + home) and `q` stops; elsewhere frames follow one another,
    plain text or one JSON object each."""

    verb = "counted"

    def __init__(self, tracer: Tracer, stop: _StopSignals, fd: int | EventFile, *,
                 json_out: bool,
                 interval: float | None, rows: int | None, sort: SortKey,
                 at_exit: bool) -> None:
        super().__init__(None, tracer.wall_offset_ns, stop, fd)
        self.summary = Summary()
        self._tracer = tracer
        self._json = json_out
        self._interval = interval
        self._sort = sort
        self._at_exit = at_exit
        self._screen = interval is not None and not json_out and os.isatty(self._fd)
        self.warns_drops = not self._screen  # on the screen, lost/s is in the view
        if rows is None:
            rows = 10
            if self._screen:  # as many as fit the terminal
                height = shutil.get_terminal_size().lines
                rows = max(1, (height - _top.FRAME_OVERHEAD) // 3)
        self._rows = rows
        self._keys: int | None = None  # stdin, read for `q`, in cbreak mode
        self._saved_tty: list | None = None
        if self._screen and sys.stdin is not None and sys.stdin.isatty():
            self._keys = sys.stdin.fileno()
            self._saved_tty = termios.tcgetattr(self._keys)
            tty.setcbreak(self._keys)
        self._frames = 0
        self._started = self._frame_started = time.monotonic()
        self._next_frame = None if interval is None else self._started + interval
        self._lost_at_frame = tracer.stats().dropped

    def write_header(self) -> None:
        pass

    def show(self, batch: RecordBatch) -> None:
        self.summary.feed(batch)
        self.shown += len(batch)

    def wait_limit(self) -> float | None:
        return None if self._next_frame is None else self._next_frame - time.monotonic()

    def tick(self) -> bool:
        if (self._keys is not None and select.select([self._keys], [], [], 0)[0]
                and b"q" in os.read(self._keys, 64).lower()):
            return True
        now = time.monotonic()
        if self._next_frame is not None and now >= self._next_frame:
            self._write_frame(now)
            # keep the cadence; after a stall, the next frame an interval from now
            self._next_frame += self._interval
            if self._next_frame <= now:
                self._next_frame = now + self._interval
        return False

    def _figures(self, kind: str, seconds: float, lost: int) -> _top.Interval:
        return _top.Interval(kind=kind, wall_ns=time.time_ns(), seconds=seconds, lost=lost,
                             sort=self._sort.value, max_paths=self.summary.max_paths,
                             max_processes=self.summary.max_processes)

    def _write_frame(self, now: float) -> None:
        lost_now = self._tracer.stats().dropped
        figures = self._figures("interval", now - self._frame_started,
                                lost_now - self._lost_at_frame)
        top = self.summary.top(self._rows, self._sort)
        if self._json:
            frame = _top.as_json(top, figures)
        elif self._screen:
            size = shutil.get_terminal_size()
            frame = _top.fit(_top.text(top, figures), size.columns, size.lines)
        else:  # one plain block per interval, a blank line between: it can be logged
            frame = ("\n" if self._frames else "") + _top.text(top, figures)
        self._write(frame.encode("utf-8"))
        self._frames += 1
        self.summary.reset_interval()
        self._frame_started = now
        self._lost_at_frame = lost_now

    def finish(self) -> None:
        """After the last batch: the interval it ended (so the frames add up to the whole
        run), then the run's summary."""
        now = time.monotonic()
        if self._interval is not None:
            self._write_frame(now)
        if self._at_exit:
            figures = self._figures("summary", now - self._started,
                                    self._tracer.stats().dropped)
            top = self.summary.top(self._rows, self._sort, cumulative=True)
            if self._json:
                frame = _top.as_json(top, figures)
            else:
                frame = ("\n" if self._frames else "") + _top.text(top, figures)
            self._write(frame.encode("utf-8"))

    def close(self) -> None:
        if self._saved_tty is not None:
            termios.tcsetattr(self._keys, termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None


def _summary_view(json_out: bool, *, interval: float | None, rows: int | None, sort: SortKey,
                  at_exit: bool) -> Callable[[Tracer, _StopSignals, int | EventFile], _Output]:
    return lambda tracer, stop, fd: _SummaryOutput(tracer, stop, fd, json_out=json_out,
                                               interval=interval, rows=rows, sort=sort,
                                               at_exit=at_exit)


# how often --wait-tree asks the kernel's pid filter whether any process of the tree is left
_TREE_CHECK_INTERVAL = 0.1


def _stream(tracer: Tracer, output: _Output, duration: float | None, stop: _StopSignals,
            child: _HeldCommand | None = None, wait_tree: bool = False) -> None:
    """Render events until stopped, or COMMAND exits (with wait_tree: until the whole
    tree has); then detach and render what is left in the ring."""
    output.write_header()
    # on stderr, so scripts and harnesses know when opens are being seen
    print(f"echo-open: tracing ({len(tracer.attached_tracepoints)} tracepoints); "
          "Ctrl-C to stop", file=sys.stderr, flush=True)
    if tracer.limitations:
        print(f"echo-open: not traced on this kernel: {'; '.join(tracer.limitations)}",
              file=sys.stderr, flush=True)
    deadline = None if duration is None else time.monotonic() + duration
    if duration is not None:
        stop.expire_after(duration)  # also ends a write that blocks past the deadline
    last_check = time.monotonic()
    checked = Stats()
    if child is not None:
        child.release()
    tree_checked = 0.0
    while not stop.raised:
        if wait_tree:
            if child is not None:
                child.exited()  # reaped as soon as it ends: a zombie is no reader of files
            now = time.monotonic()
            if now - tree_checked >= _TREE_CHECK_INTERVAL:
                if not tracer.followed_pids():
                    break
                tree_checked = now
        elif child is not None and child.exited():
            break
        if output.gone():
            raise BrokenPipeError(errno.EPIPE, "the reader of standard output went away")
        output.reopen_if_requested()
        timeout = tracer.poll_interval
        limit = output.wait_limit()  # the next frame of a view
        if limit is not None:
            timeout = max(0.0, min(timeout, limit))
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                break
        batch = tracer.read_records(timeout)
        if batch:
            output.take(batch)
        if output.tick():  # `q` in the top view
            break
        now = time.monotonic()
        if now - last_check >= 1.0 and output.warns_drops:
            current = tracer.stats()
            _warn_drops(current, checked)
            checked, last_check = current, now
    # stopped: no new opens, but every one already traced is shown, as long as stdout
    # takes it within the grace
    tracer.detach()
    stop.allow_writes_for(_WRITE_GRACE)
    for batch in tracer.drain_records():
        output.take(batch)
    output.finish()


def top(
    pid: PidOption = [],  # noqa: B006
    tid: TidOption = [],  # noqa: B006
    uid: UidOption = None,
    failed: FailedOption = False,
    name: NameOption = None,
    flag: FlagOption = [],  # noqa: B006
    path_prefix: PathPrefixOption = [],  # noqa: B006
    prefix_on: PrefixOnOption = PrefixOn.passed,
    mntns: MntnsOption = None,
    pidns: PidnsOption = None,
    netns: NetnsOption = None,
    cgroup: CgroupOption = [],  # noqa: B006
    container: ContainerOption = [],  # noqa: B006
    interval: Annotated[float, typer.Option(
        "-i", "--interval", callback=_positive, metavar="SECONDS",
        help="Seconds between frames.")] = 1.0,
    rows: RowsOption = None,
    sort: SortOption = SortKey.opens,
    duration: DurationOption = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="One JSON object per interval (and with --summary, one at exit).")
    ] = False,
    summary: Annotated[bool, typer.Option(
        "--summary", help="At exit, also the whole run's counts.")] = False,
    ring_size: RingSizeOption = layout.DEFAULT_RING_SIZE,
    verbose: VerboseOption = False,
    metrics: MetricsOption = None,
    command: CommandArgument = None,
) -> None:
    """Which files, processes and errors, at what rate: opens counted each interval, the
    busiest first (q or Ctrl-C stops). The filters are the tracer's."""
    tracer, child, output_fd, metrics_server = _make_tracer(
        pid=pid, tid=tid, uid=uid, failed=failed, name=name, flag=flag,
        path_prefix=path_prefix, prefix_on=prefix_on, ring_size=ring_size, verbose=verbose,
        command=command, resolve_paths=False, metrics=metrics,
        mntns=mntns, pidns=pidns, netns=netns, cgroup=cgroup, container=container)
    view = _summary_view(json_out, interval=interval, rows=rows, sort=sort, at_exit=summary)
    raise typer.Exit(_run(tracer, view, duration, child, output_fd, metrics=metrics_server))


_BLOCKER_EXIT = {_doctor.Blocker.NOT_PERMITTED: EXIT_NOT_PERMITTED,
                 _doctor.Blocker.NO_BTF: EXIT_NO_BTF,
                 _doctor.Blocker.NO_TRACEFS: EXIT_NO_TRACEFS,
                 _doctor.Blocker.KERNEL_REFUSED: EXIT_BPF,
                 _doctor.Blocker.NO_LIBBPF: EXIT_FAILURE}


def doctor(
    json_out: Annotated[bool, typer.Option(
        "--json", help="One JSON object: every finding, and the exit status.")] = False,
) -> None:
    """Check, item by item, whether this machine can trace; exit as the tracer would fail
    (0: tracing will work, warnings allowed)."""
    findings = _doctor.run_checks()
    blocker = _doctor.first_blocker(findings)
    status = EXIT_OK if blocker is None else _BLOCKER_EXIT[blocker]
    warnings = sum(f.status is _doctor.Status.WARN for f in findings)
    if json_out:
        print(json.dumps({"findings": [f.as_json() for f in findings],
                          "will_trace": blocker is None, "warnings": warnings,
                          "exit_status": status}))
        raise typer.Exit(status)
    for finding in findings:
        fix = f"; to fix: {finding.fix}" if finding.fix else ""
        print(f"{finding.status.value:<4}  {finding.check}: {finding.found}{fix}")
    if blocker is None:
        print(f"echo-open doctor: tracing will work ({warnings} warning"
              f"{'' if warnings == 1 else 's'})")
    else:
        print(f"echo-open doctor: tracing will not work here (exit {status})")
    raise typer.Exit(status)


def _typer_app(command, completion: bool = False, **settings: object) -> typer.Typer:
    one = typer.Typer(add_completion=completion, rich_markup_mode=None,
                      pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    one.command(**settings)(command)
    return one


# --install-completion / --show-completion: bash, zsh, fish (the tracer's options and -f's
# flag names)
app = _typer_app(trace, completion=True, epilog=EXAMPLES)
# `echo-open NAME ...` runs a subcommand; every other first argument (an option, `--`)
# goes to the tracer, so `echo-open -- doctor` traces a command named doctor
SUBCOMMANDS: dict[str, typer.Typer] = {"doctor": _typer_app(doctor), "top": _typer_app(top)}


# click's exceptions, found through the one typer exports (typer vendors click, older
# typers import it): a usage error is one line here, not click's usage block
_CLICK_ERRORS = {c.__name__: c for c in typer.BadParameter.__mro__}
_UsageError = _CLICK_ERRORS["UsageError"]
_ClickException = _CLICK_ERRORS["ClickException"]


def _run_app(one: typer.Typer, args: list[str], prog_name: str) -> None:
    try:
        status = one(args=args, prog_name=prog_name, standalone_mode=False)
    except _UsageError as exc:
        message = " ".join(exc.format_message().split())  # suggestions come on new lines
        print(f"echo-open: {message} (see {prog_name} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except _ClickException as exc:
        print(f"echo-open: {' '.join(exc.format_message().split())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:  # Ctrl-C while the options were read, before any tracing
        sys.exit(EXIT_OK)
    sys.exit(status if isinstance(status, int) else EXIT_OK)


def _dispatch() -> None:
    args = sys.argv[1:]
    if args and args[0] in SUBCOMMANDS:
        _run_app(SUBCOMMANDS[args[0]], args[1:], f"echo-open {args[0]}")
    else:
        _run_app(app, args, "echo-open")


def main() -> None:
    """Entry point of the echo-open script."""
    if sys.stderr is None:  # fd 2 closed: print(file=None) would write to stdout
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
    try:
        _dispatch()
    except KeyboardInterrupt:  # Ctrl-C before the tracer started
        sys.exit(EXIT_OK)
    except Exception as exc:  # a bug: one line, unless asked for the traceback
        if os.environ.get("ECHO_OPEN_DEBUG"):
            raise
        print(f"echo-open: internal error: {type(exc).__name__}: {exc} "
              "(ECHO_OPEN_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(EXIT_FAILURE)
