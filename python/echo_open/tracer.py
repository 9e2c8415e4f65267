"""The open tracer: echo_open.bpf.o loaded through the generic loader.

    with Tracer(Filters(pids=[1234], failed_only=True)) as tracer:
        for event in tracer.events(timeout=1.0):
            print(event.pid, event.path, event.error)
"""

from __future__ import annotations

import contextlib
import errno
import importlib.resources
import itertools
import os
import threading
import time
from array import array
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from echo_open._layout import lib as _c

from . import cgroups as _cgroups
from . import layout, system
from .events import SYSCALL_NAMES, OpenEvent, decode_batch
from .flags import errno_name
from .loader import BPFError, BPFObject, Link, LoadError, RecordBatch, RingBuffer

# The programs and their tracepoints come from the object's sections
# (tracepoint/CATEGORY/EVENT, tp_btf/EVENT). What the tracer knows of them:
# sys_enter_X and sys_exit_X load together or not at all; io_uring opens need the
# completion and one submit tracepoint (named by kernel generation: io_uring_submit_req
# from 6.4, io_uring_submit_sqe before; the first in the object that the kernel has);
# the tp_btf programs follow a process tree (only with follow_children).
_URING_COMPLETE = "io_uring_complete"
# programs named fd_reuse_*: syscalls:sys_{enter,exit}_{close,close_range,dup2,dup3}, which
# watch fd numbers change hands in shared fd tables (the fd race of a resolution); loaded
# only when paths are resolved, all of them or none
_FD_REUSE_PREFIX = "fd_reuse_"
_FOLLOWED_PROCESSES = 1 << 16

PathLike = str | bytes | os.PathLike

# the kernel's PID_MAX_LIMIT on 64-bit: no pid or tid is above it
_PID_MAX_LIMIT = 1 << 22


OBJECT_PATH_VARIABLE = "ECHO_OPEN_BPF_OBJECT"

# The object is built twice from one source (CMakeLists.txt): the path walk follows kernel
# pointers with probe reads (echo_open.bpf.o, any kernel), or with plain loads through
# pointers cast by the bpf_rdonly_cast kfunc (echo_open_direct.bpf.o, Linux 6.2+). Two
# objects, not two programs in one: libbpf 1.1 resolves every kfunc an object declares, and
# where the kernel lacks it, its search of the modules' BTF needs CAP_SYS_ADMIN. The
# resolving program's name tells which build an object is.
_OBJECT_FILES = {False: "echo_open.bpf.o", True: "echo_open_direct.bpf.o"}
_DIRECT_FINISHER = "finish_open_direct"
DIRECT_LOADS_KFUNC = "bpf_rdonly_cast"


def default_object_path(direct: bool | None = None) -> Path:
    """The prebuilt BPF object shipped inside the package: the direct-loads build or the
    probe-read one (None: the one this kernel can load); or another build of it named by
    $ECHO_OPEN_BPF_OBJECT (to try a rebuilt object with the CLI; the tests use it)."""
    if override := os.environ.get(OBJECT_PATH_VARIABLE):
        return Path(override)
    if direct is None:
        direct = kernel_has_direct_loads()
    return Path(str(importlib.resources.files("echo_open") / "bpf" / _OBJECT_FILES[direct]))


def kernel_has_direct_loads() -> bool:
    """Whether this kernel has bpf_rdonly_cast (6.2+), which the direct-loads build calls."""
    return system.kernel_has_function(DIRECT_LOADS_KFUNC)


class InvalidSetting(ValueError):
    """A Tracer setting out of range; ``setting`` names the keyword argument."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class Stats:
    """Counts kept in the kernel since the tracer started."""

    emitted: int = 0          # events written to the ring buffer
    filtered: int = 0         # opens a filter kept out
    ring_full: int = 0        # lost: the ring buffer was full
    args_full: int = 0        # lost: too many opens in flight
    path_fault: int = 0       # delivered without the path: it could not be read
    no_entry: int = 0         # exits whose entry was not seen (in flight at start;
                              # counted only without entry filters)
    wakeups: int = 0          # consumer wake-ups forced
    internal: int = 0         # lost: the program that finishes an open was not reached
    children_untraced: int = 0  # follow_children: new processes the pid map had no room for

    @property
    def dropped(self) -> int:
        return self.ring_full + self.args_full + self.internal

    def drops(self) -> dict[str, int]:
        """Losses by reason, the path faults included (events without their path)."""
        drops = {"ring_full": self.ring_full, "args_full": self.args_full,
                 "internal": self.internal, "path_fault": self.path_fault}
        if self.children_untraced:
            drops["children_untraced"] = self.children_untraced
        return drops

    def __sub__(self, other: Stats) -> Stats:
        return Stats(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


_COUNTER_SLOTS = {
    "emitted": _c.EO_CNT_EMITTED, "filtered": _c.EO_CNT_FILTERED,
    "ring_full": _c.EO_DROP_RING_FULL, "args_full": _c.EO_DROP_ARGS_FULL,
    "path_fault": _c.EO_DROP_PATH_FAULT, "no_entry": _c.EO_CNT_NO_ENTRY,
    "wakeups": _c.EO_CNT_WAKEUPS, "internal": _c.EO_DROP_INTERNAL,
    "children_untraced": _c.EO_DROP_FOLLOW_FULL,
}


def _ring_size_text(size: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and not size % (1 << shift):
            return f"{size >> shift}{unit}"
    return str(size)


@dataclass(frozen=True)
class Filters:
    """Which opens are traced, decided in the kernel; an open must pass every one given.

      pids, tids      -- thread group ids / thread ids (several allowed)
      follow_children -- with pids: their whole process tree: the processes they
                         have started (found in /proc at start) and every one started
                         later, traced from its first instruction
      uid             -- the opener's real uid
      failed_only     -- only opens that failed
      comm            -- the process name contains this (up to 15 bytes)
      flags           -- open flags: any of them set (O_RDONLY matches read-only opens)
      path_prefixes   -- the path starts with one of these (up to 8, 255 bytes each);
                         matched on the resolved path if prefix_on_resolved
      mntns, pidns, netns -- the opener's mount / pid / network namespace (its inode,
                         as /proc/PID/ns/* shows it)
      cgroups         -- cgroup v2 directories (on a cgroup2 mount; or cgroup paths as
                         events show them): the opener is in one of them or below
      containers      -- container id prefixes (or nspawn machine names), each naming one
                         container: the opener is in one of them; found in the cgroup2
                         hierarchy now, into ``container_cgroups``

    Values are normalised (ids sorted, names and paths as bytes) and checked against
    echo_open.h's limits when it is made: a bad one raises InvalidSetting.
    """

    pids: Iterable[int] = ()
    tids: Iterable[int] = ()
    follow_children: bool = False
    uid: int | None = None
    failed_only: bool = False
    comm: str | bytes | None = None
    flags: Iterable[int] = ()
    path_prefixes: Iterable[PathLike] = ()
    prefix_on_resolved: bool = False
    mntns: int | None = None
    pidns: int | None = None
    netns: int | None = None
    cgroups: Iterable[PathLike] = ()
    containers: Iterable[str] = ()
    # the cgroup directories of ``containers``, found when the filter is made
    container_cgroups: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        normal = {"pids": tuple(sorted(set(self.pids))), "tids": tuple(sorted(set(self.tids))),
                  "comm": None if self.comm is None else os.fsencode(self.comm),
                  "flags": tuple(self.flags),
                  "path_prefixes": tuple(os.fsencode(p) for p in self.path_prefixes),
                  "cgroups": tuple(os.fsdecode(p) for p in self.cgroups),
                  "containers": tuple(self.containers)}
        for name, value in normal.items():
            object.__setattr__(self, name, value)
        self._check()
        self._find_cgroups()

    def _find_cgroups(self) -> None:
        directories = []
        for path in self.cgroups:
            found = _cgroups.cgroup2_directory(path)
            if found is None:
                raise InvalidSetting("cgroups", f"{path} is not a cgroup v2 directory (none "
                                     "of the cgroup2 mounts holds it)")
            directories.append(found[0])
        object.__setattr__(self, "cgroups", tuple(directories))
        container_dirs: list[str] = []
        for prefix in self.containers:
            found_ids = _cgroups.container_directories(prefix)
            if not found_ids:
                raise InvalidSetting("containers", f"no container's id starts with {prefix!r} "
                                     "(in the cgroup2 hierarchy)")
            if len(found_ids) > 1:
                ids = ", ".join(sorted(ident[:16] for ident in found_ids))
                raise InvalidSetting("containers", f"{prefix!r} names {len(found_ids)} "
                                     f"containers ({ids}): give more of the id")
            container_dirs += next(iter(found_ids.values()))
        object.__setattr__(self, "container_cgroups", tuple(dict.fromkeys(container_dirs)))
        if len(self.cgroups) + len(self.container_cgroups) > layout.MAX_CGROUPS:
            raise InvalidSetting("cgroups", f"at most {layout.MAX_CGROUPS} cgroup directories "
                                 "(--cgroup and the containers' together)")

    def _check(self) -> None:
        if self.follow_children and not self.pids:
            raise InvalidSetting("follow_children", "follow_children needs the pids to start from")
        for setting, name, ids in (("pids", "pid", self.pids), ("tids", "tid", self.tids)):
            if len(ids) > layout.MAX_FILTER_IDS:
                raise InvalidSetting(setting, f"at most {layout.MAX_FILTER_IDS} {name}s")
            for value in ids:
                if not 0 < value <= _PID_MAX_LIMIT:
                    raise InvalidSetting(setting, f"no {name} is {value} (1 to "
                                                  f"{_PID_MAX_LIMIT})")
        # (uid_t)-1 is "no user" to the kernel: nothing can run as it
        if self.uid is not None and not 0 <= self.uid < 2**32 - 1:
            raise InvalidSetting("uid", f"no uid is {self.uid} (0 to {2**32 - 2})")
        if self.comm is not None and not 0 < len(self.comm) < layout.COMM_LEN:
            raise InvalidSetting("comm", f"a process name is 1 to {layout.COMM_LEN - 1} bytes")
        if self.comm is not None and b"\0" in self.comm:
            raise InvalidSetting("comm", "a process name has no NUL byte")
        if len(self.path_prefixes) > layout.MAX_PREFIXES:
            raise InvalidSetting("path_prefixes", f"at most {layout.MAX_PREFIXES} path prefixes")
        for prefix in self.path_prefixes:
            if not 0 < len(prefix) < layout.PREFIX_MAX or b"\0" in prefix:
                raise InvalidSetting("path_prefixes", f"a path prefix is 1 to "
                                     f"{layout.PREFIX_MAX - 1} bytes, without NUL")
        for flag in self.flags:
            if not 0 <= flag < 2**32:
                raise InvalidSetting("flags", f"bad open flag {flag}")
        for setting in ("mntns", "pidns", "netns"):
            value = getattr(self, setting)
            # namespace inodes are 32-bit (proc_inum), never 0
            if value is not None and not 0 < value < 2**32:
                raise InvalidSetting(setting, f"no namespace inode is {value} (1 to "
                                              f"{2**32 - 1})")
        for prefix in self.containers:
            if not prefix or "/" in prefix:
                raise InvalidSetting("containers", f"bad container id {prefix!r}")


@dataclass(frozen=True)
class Tuning:
    """How the tracer trades memory, latency and cost; checked when it is made.

      ring_size       -- bytes of ring buffer, a power of two (mapped twice: twice in RSS)
      wakeup_bytes    -- wake the consumer only while this much is pending (0: per record;
                         None: 256 KiB or a quarter of the ring)
      wakeup_interval -- and at most this often per CPU (seconds)
      poll_interval   -- the longest a record waits in the ring when fewer than
                         wakeup_bytes are pending (seconds)
      resolve_paths   -- resolve each open to an absolute path in the kernel (~0.5 us
                         per successful open); always on with prefix_on_resolved
      direct_loads    -- resolve with plain loads through pointers cast by the
                         bpf_rdonly_cast kfunc (Linux 6.2+) instead of probe reads:
                         the same paths, cheaper; None: whichever the kernel has
      count_outcomes  -- count traced opens by syscall and result in the kernel, for
                         Tracer.outcomes() (off: the verifier removes the counting)
    """

    ring_size: int = layout.DEFAULT_RING_SIZE
    wakeup_bytes: int | None = None
    wakeup_interval: float = 0.001
    poll_interval: float = 0.1
    resolve_paths: bool = True
    direct_loads: bool | None = None
    count_outcomes: bool = False

    def __post_init__(self) -> None:
        size = self.ring_size
        if size < layout.MIN_RING_SIZE or size & (size - 1) or size > layout.MAX_RING_SIZE:
            raise InvalidSetting("ring_size", f"the ring size is a power of two from "
                                 f"{_ring_size_text(layout.MIN_RING_SIZE)} to "
                                 f"{_ring_size_text(layout.MAX_RING_SIZE)}")
        if not 0 <= self.wakeup_threshold < size:
            raise InvalidSetting("wakeup_bytes", "wakeup_bytes must be below the ring size")
        if not self.wakeup_interval >= 0:
            raise InvalidSetting("wakeup_interval", "wakeup_interval must not be negative")
        if not self.poll_interval > 0:
            raise InvalidSetting("poll_interval", "poll_interval must be positive")

    @property
    def wakeup_threshold(self) -> int:
        """wakeup_bytes, or its default: a good batch, but well before the ring fills."""
        if self.wakeup_bytes is None:
            return min(256 << 10, self.ring_size // 4)
        return self.wakeup_bytes


class Tracer:
    """Every open on the machine, filtered in the kernel (``Filters``), tuned by ``Tuning``.

    ``exclude_self``: the tracer's own opens are not traced; ``object_path``: another
    build of echo_open.bpf.o than the one shipped in the package.
    """

    def __init__(self, filters: Filters | None = None, tuning: Tuning | None = None, *,
                 exclude_self: bool = True, object_path: PathLike | None = None) -> None:
        self.filters = filters if filters is not None else Filters()
        self.tuning = tuning if tuning is not None else Tuning()
        self.exclude_self = exclude_self
        self.object_path = Path(os.fsdecode(object_path)) if object_path else None
        self._obj: BPFObject | None = None
        self._links: list[Link] = []
        self._ring: RingBuffer | None = None
        self._wall_offset_ns = 0
        self.attached_tracepoints: list[str] = []
        # what this kernel cannot trace, as short phrases, filled by start()
        self.limitations: list[str] = []
        self._attached_programs: list[str] = []
        self._untraced_descendants = 0  # follow_children: found at start, no room in the map
        # which build resolves paths: plain loads (True) or probe reads; set by configure()
        self.direct_loads: bool | None = None

    @property
    def poll_interval(self) -> float:
        return self.tuning.poll_interval

    # ---- lifecycle: open -> configure -> load -> attach

    def start(self) -> Tracer:
        if self._obj is not None:
            return self
        tracefs = system.check_all()
        obj = BPFObject.open(self.chosen_object_path())
        try:
            self.configure(obj, tracefs)
            if not any(tp.startswith("syscalls:") for tp in self.attached_tracepoints):
                raise system.NoTracefs(
                    f"none of the open syscalls' tracepoints is in {tracefs}/events/syscalls "
                    "(a kernel without CONFIG_FTRACE_SYSCALLS?): nothing could be traced")
            obj = self._load(obj, tracefs)
            self._fill_filter_maps(obj)
            # a batch of 2048 short records or 250 whole 8 KiB ones: big enough to
            # amortise a call, small enough that its rendered text stays a few MiB
            self._ring = RingBuffer(obj.map("events"), head_size=layout.EVENT_SIZE,
                                    max_tail=layout.MAX_TAIL, batch_records=2048,
                                    batch_bytes=2 << 20)
            self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
            self._links = [obj.program(name).attach() for name in self._attached_programs]
            if self.filters.follow_children:
                self._adopt_descendants(obj)
        except BaseException:
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            obj.close()
            raise
        self._obj = obj
        return self

    def _load(self, obj: BPFObject, tracefs: Path) -> BPFObject:
        """Load the configured object; the loaded one. Where the kernel has the kfunc but
        refuses the direct build anyway (a verifier of its own), and the build was the
        kernel's choice, the probe-read build is loaded instead: never a failure for it."""
        fallback = (self.direct_loads and self.tuning.direct_loads is None
                    and not (self.object_path or os.environ.get(OBJECT_PATH_VARIABLE)))
        try:
            obj.load()
            return obj
        except LoadError:
            if not fallback:
                raise
        obj.close()
        probe = BPFObject.open(default_object_path(False))
        try:
            self.configure(probe, tracefs)
            probe.load()
        except BaseException:
            probe.close()
            raise
        return probe

    def chosen_object_path(self) -> Path:
        """The object start() loads: ``object_path`` or $ECHO_OPEN_BPF_OBJECT as given,
        else the shipped build that Tuning.direct_loads asks for (None: the kernel's)."""
        if self.object_path or os.environ.get(OBJECT_PATH_VARIABLE):
            return self.object_path or default_object_path()
        direct = self.tuning.direct_loads
        if direct and not kernel_has_direct_loads():
            raise InvalidSetting("direct_loads", f"direct_loads needs the {DIRECT_LOADS_KFUNC} "
                                 "kfunc (Linux 6.2 and later): this kernel has none")
        return default_object_path(direct)

    def configure(self, obj: BPFObject, tracefs: Path) -> None:
        """The configure phase, on an opened object: which programs load, map sizes, the
        settings in .rodata. start() calls it; doctor too, to load what the tracer would."""
        filters, tuning = self.filters, self.tuning
        self.direct_loads = _DIRECT_FINISHER in obj.programs
        if tuning.direct_loads is not None and tuning.direct_loads != self.direct_loads:
            build = "direct-loads" if self.direct_loads else "probe-read"
            raise InvalidSetting("direct_loads", f"direct_loads={tuning.direct_loads}, but "
                                 f"{obj.name} is the {build} build")
        obj.map("events").max_entries = tuning.ring_size
        self.attached_tracepoints = []
        self.limitations = []
        self._attached_programs = []
        tracepoints = {name: tp for name, program in obj.programs.items()
                       if (tp := program.tracepoint)}
        program_of = {tp: name for name, tp in tracepoints.items()}
        watchers = [(name, tp[1]) for name, tp in tracepoints.items()
                    if name.startswith(_FD_REUSE_PREFIX)]
        for (category, event), enter in program_of.items():
            if (category != "syscalls" or not event.startswith("sys_enter_")
                    or enter.startswith(_FD_REUSE_PREFIX)):
                continue
            exit_event = "sys_exit_" + event.removeprefix("sys_enter_")
            pair = [(enter, event), (program_of[("syscalls", exit_event)], exit_event)]
            missing = [name for _, name in pair
                       if not system.tracepoint_exists(tracefs, "syscalls", name)]
            self._use(obj, pair, "syscalls", not missing)
            if missing:
                syscall = event.removeprefix("sys_enter_")
                self.limitations.append(f"{syscall} opens (no syscalls:{missing[0]} tracepoint)")
        uring = [(name, event) for (category, event), name in program_of.items()
                 if category == "io_uring"]
        self._configure_io_uring(obj, tracefs, uring)
        follow = [name for name, program in obj.programs.items()
                  if program.section.startswith("tp_btf/")]
        for program in follow:
            obj.program(program).autoload = filters.follow_children
        if filters.follow_children:
            # the tree's live processes, not only the pids given
            obj.map("filter_pids").max_entries = _FOLLOWED_PROCESSES
            self._attached_programs += follow
        config = layout.new_config()
        config.wakeup_bytes = tuning.wakeup_threshold
        config.wakeup_min_ns = int(tuning.wakeup_interval * 1e9)
        config.self_tgid = os.getpid() if self.exclude_self else 0
        config.filter_pid = bool(filters.pids)
        config.filter_tid = bool(filters.tids)
        config.follow_forks = filters.follow_children
        if len(filters.pids) == 1 and not filters.follow_children:
            config.single_pid = filters.pids[0]  # the commonest filter, at no lookup's cost
        if filters.uid is not None:
            config.filter_uid = 1
            config.uid = filters.uid
        config.failed_only = filters.failed_only
        if filters.flags:
            config.filter_flags = 1
            mask = 0
            for flag in filters.flags:
                mask |= flag
                if flag == 0:
                    config.flags_rdonly = 1
            config.flags_any = mask
        config.resolve_paths = tuning.resolve_paths or filters.prefix_on_resolved
        config.watch_fd_reuse = self._configure_fd_reuse(obj, tracefs, watchers,
                                                         bool(config.resolve_paths))
        config.count_outcomes = tuning.count_outcomes
        config.prefix_on_resolved = filters.prefix_on_resolved
        for kind in ("mntns", "pidns", "netns"):
            value = getattr(filters, kind)
            if value is not None:
                setattr(config, f"filter_{kind}", 1)
                setattr(config, kind, value)
        n_cgroups = len(filters.cgroups)
        config.cgroup_slots = (1 << n_cgroups) - 1
        config.container_slots = ((1 << len(filters.container_cgroups)) - 1) << n_cgroups
        if filters.comm:
            config.comm_len = len(filters.comm)
            config.comm_match = filters.comm
        config.n_prefixes = len(filters.path_prefixes)
        for i, prefix in enumerate(filters.path_prefixes):
            config.prefix_len[i] = len(prefix)
            config.prefix[i] = prefix
        rodata = obj.map(".rodata.config").initial_value()
        raw = layout.config_bytes(config)
        rodata[:len(raw)] = raw

    def _use(self, obj: BPFObject, programs: Iterable[tuple[str, str]], category: str,
             present: bool) -> None:
        """Load and attach these (program, tracepoint) together, or none of them."""
        for program, event in programs:
            obj.program(program).autoload = present
            if present:
                self.attached_tracepoints.append(f"{category}:{event}")
                self._attached_programs.append(program)

    def _configure_io_uring(self, obj: BPFObject, tracefs: Path,
                            programs: list[tuple[str, str]]) -> None:
        def present(event: str) -> bool:
            return system.tracepoint_exists(tracefs, "io_uring", event)

        submits = [(name, event) for name, event in programs if event != _URING_COMPLETE]
        completes = [(name, event) for name, event in programs if event == _URING_COMPLETE]
        submit = next((pair for pair in submits if present(pair[1])), None)
        complete = bool(completes) and present(_URING_COMPLETE)
        self._use(obj, programs, "io_uring", False)
        if submit is not None and complete:
            self._use(obj, [submit, *completes], "io_uring", True)
        if submit is None and not complete:
            self.limitations.append("io_uring opens (no io_uring tracepoints)")
        elif submit is None:
            self.limitations.append("io_uring opens (no io_uring submit tracepoint)")
        elif not complete:
            self.limitations.append(f"io_uring opens (no io_uring:{_URING_COMPLETE} tracepoint)")

    def _configure_fd_reuse(self, obj: BPFObject, tracefs: Path,
                            watchers: list[tuple[str, str]], resolving: bool) -> bool:
        """Whether the fd-change watchers load: only for resolved paths, and only all of
        them (without one, a change could slip by unseen). Without them, every resolution
        through a shared fd table is marked unsure."""
        missing = [event for _, event in watchers
                   if not system.tracepoint_exists(tracefs, "syscalls", event)]
        if missing and resolving:
            self.limitations.append(
                f"exact fd-race marks (no syscalls:{missing[0]} tracepoint: every "
                "resolution by a multi-threaded opener is marked unsure)")
        watch = resolving and bool(watchers) and not missing
        self._use(obj, watchers, "syscalls", watch)
        return watch

    def _fill_filter_maps(self, obj: BPFObject) -> None:
        for map_name, ids in (("filter_pids", self.filters.pids),
                              ("filter_tids", self.filters.tids)):
            bpf_map = obj.map(map_name)
            for value in ids:
                bpf_map.update(bpf_map.int_key(value), bpf_map.int_value(1))
        # slots in the order configure() numbered them: --cgroup's, then the containers'
        cgroup_map = obj.map("cgroups")
        for slot, directory in enumerate((*self.filters.cgroups,
                                          *self.filters.container_cgroups)):
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:  # removed since the filter was made
                raise InvalidSetting("cgroups", f"cannot open the cgroup {directory}: "
                                                f"{exc.strerror}") from None
            try:
                cgroup_map.update(cgroup_map.int_key(slot), cgroup_map.int_value(fd))
            finally:
                os.close(fd)  # the map holds the cgroup itself

    def _adopt_descendants(self, obj: BPFObject) -> None:
        # a process forked from now on joins the filter in the kernel (follow_fork); the
        # ones that exist already are found in /proc, after the attach so that none falls
        # between the two; until nothing new turns up (a fork during a scan)
        bpf_map = obj.map("filter_pids")
        known = set(self.filters.pids)
        while new := system.descendants(known) - known:
            for pid in new:
                try:
                    bpf_map.update(bpf_map.int_key(pid), bpf_map.int_value(1))
                except BPFError as exc:
                    if exc.errno != errno.E2BIG:
                        raise
                    self._untraced_descendants += 1  # the map is full
            known |= new

    def followed_pids(self) -> set[int]:
        """The processes traced by pid now: with ``follow_children``, the live processes
        of the tree (each leaves the kernel's filter as it exits); empty once all have."""
        bpf_map = self._live_obj().map("filter_pids")
        # bounded: a key deleted under the walk makes the kernel restart it
        return {bpf_map.key_as_int(key) for key in itertools.islice(bpf_map.keys(),
                                                                2 * bpf_map.max_entries)}

    def detach(self) -> None:
        """Stop tracing new opens; what is in the ring can still be read (drain())."""
        links, self._links = self._links, []
        # each close waits out the kernel's tracepoint-unregister grace period (~70 ms
        # here, over a second for all twenty one by one); closed together, they overlap.
        # (The 6.1 lockups once blamed on this were qemu's multi-threaded emulation: a
        # storm livelocking both vCPUs while the kernel patched the syscall static branch;
        # tests/kernels/run emulates one vCPU at a time since.)
        closers = [threading.Thread(target=link.close) for link in links]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()
        for link in links:
            link.close()  # (again: a no-op for a closed link)

    def close(self) -> None:
        """Detach everything and free the kernel objects. Safe to call twice."""
        self.detach()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._obj is not None:
            self._obj.close()  # (its program array emptied too: finish_open is freed now)
            self._obj = None

    @property
    def running(self) -> bool:
        return self._obj is not None

    def __enter__(self) -> Tracer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading

    def _ring_or_raise(self) -> RingBuffer:
        if self._ring is None:
            raise RuntimeError("the tracer is not started (use start() or `with`)")
        return self._ring

    def fileno(self) -> int:
        """An fd that becomes readable when the kernel wakes the consumer."""
        return self._ring_or_raise().fileno()

    @property
    def wall_offset_ns(self) -> int:
        """Added to a record's ``ts_ns`` (CLOCK_MONOTONIC): nanoseconds since the epoch."""
        return self._wall_offset_ns

    def read_records(self, timeout: float | None = None) -> RecordBatch:
        """One batch of records as the kernel wrote them (``struct eo_event`` and
        the path bytes), undecoded: for consumers that decode in C. Waits up to
        ``timeout`` seconds (None: until there are some); empty if none came."""
        ring = self._ring_or_raise()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.tuning.poll_interval
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            batch = ring.poll(wait)
            if batch or (deadline is not None and time.monotonic() >= deadline):
                return batch

    def read(self, timeout: float | None = None) -> list[OpenEvent]:
        """One batch of events: waits up to ``timeout`` seconds (None: until there are some)."""
        return decode_batch(self.read_records(timeout), self._wall_offset_ns)

    def batches(self, timeout: float | None = None) -> Iterator[list[OpenEvent]]:
        """Batches of events; ends after ``timeout`` seconds without one (None: never)."""
        while True:
            batch = self.read(timeout)
            if not batch:
                return
            yield batch

    def events(self, timeout: float | None = None) -> Iterator[OpenEvent]:
        """Events one by one; ends after ``timeout`` seconds without one (None: never)."""
        for batch in self.batches(timeout):
            yield from batch

    def drain_records(self) -> Iterator[RecordBatch]:
        """Batches of undecoded records (see read_records) until the ring is empty."""
        return self._ring_or_raise().drain()

    def drain(self) -> list[OpenEvent]:
        """Everything in the ring now, without waiting."""
        events: list[OpenEvent] = []
        for batch in self.drain_records():
            events.extend(decode_batch(batch, self._wall_offset_ns))
        return events

    async def aevents(self) -> AsyncIterator[OpenEvent]:
        """Events for asyncio: waits on the ring's fd in the event loop, no thread."""
        import asyncio  # only asyncio programs pay for importing it

        ring = self._ring_or_raise()
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        fd = ring.fileno()
        loop.add_reader(fd, woken.set)
        try:
            while True:
                batch = ring.consume()
                if batch:
                    for event in decode_batch(batch, self._wall_offset_ns):
                        yield event
                    continue
                woken.clear()
                # records written without a wake-up are collected on timeout
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken.wait(), self.tuning.poll_interval)
        finally:
            loop.remove_reader(fd)

    def __aiter__(self) -> AsyncIterator[OpenEvent]:
        return self.aevents()

    # ---- accounting

    def _live_obj(self) -> BPFObject:
        if self._obj is None:
            raise RuntimeError("the tracer is not started")
        return self._obj

    def stats(self) -> Stats:
        counters = self._live_obj().map("counters")
        values = {}
        for name, slot in _COUNTER_SLOTS.items():
            per_cpu = counters.lookup(counters.int_key(slot)) or []
            values[name] = sum(counters.as_int(value) for value in per_cpu)
        values["children_untraced"] += self._untraced_descendants
        return Stats(**values)

    def outcomes(self) -> dict[tuple[str, str], int]:
        """Traced opens (delivered or lost) by (syscall, result): result ``ok`` or the
        errno's name (``ENOENT``); only the pairs seen. Needs Tuning(count_outcomes=True)."""
        if not self.tuning.count_outcomes:
            raise RuntimeError("outcomes are counted only with Tuning(count_outcomes=True)")
        outcomes = self._live_obj().map("outcomes")
        totals = [0] * _c.EO_OUTCOME_SLOTS
        for value in outcomes.lookup(outcomes.int_key(0)) or ():  # one value per CPU
            for slot, count in enumerate(array("Q", value)):
                totals[slot] += count
        counts: dict[tuple[str, str], int] = {}
        for slot, count in enumerate(totals):
            if count:
                syscall, result = divmod(slot, _c.EO_ERRNO_SLOTS)
                counts[(SYSCALL_NAMES.get(syscall, str(syscall)), _outcome_name(result))] = count
        return counts

    def ring_pending_bytes(self) -> int:
        """Bytes in the ring buffer the consumer has not taken yet."""
        return self._ring_or_raise().pending_bytes()


def _outcome_name(slot: int) -> str:
    if slot == 0:
        return "ok"
    if slot == _c.EO_ERRNO_SLOTS - 1:
        return "other"  # an errno past Linux's last one
    return errno_name(slot)
