"""Whether this machine can trace: the checks behind ``echo-open doctor``, and the facts
behind ``echo-open --version``. Library code: it returns findings, it prints nothing.

Each check is one ``Finding``: ok, warn (tracing works, at a cost or without a part),
FAIL (tracing will not start; ``blocker`` says which of the tracer's exit codes applies),
or skip (could not be checked because of an earlier FAIL). Nothing is left loaded or
mounted: what needs tracefs or securityfs mounted runs in a child process in a private
mount namespace when they are not mounted here.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import importlib.resources
import json
import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import __version__, system

LOCKDOWN = Path("/sys/kernel/security/lockdown")
_SECURITYFS = LOCKDOWN.parent


class Status(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"


class Blocker(str, enum.Enum):
    """Why tracing will not start, one per exit code of the tracer."""

    NOT_PERMITTED = "not_permitted"    # 77
    NO_BTF = "no_btf"                  # 78
    NO_TRACEFS = "no_tracefs"          # 72 (tracefs, or the tracepoints in it)
    KERNEL_REFUSED = "kernel_refused"  # 70
    NO_LIBBPF = "no_libbpf"            # 1: the binding to libbpf does not load


@dataclass(frozen=True)
class Finding:
    check: str                      # what was checked, e.g. "tracefs"
    status: Status
    found: str                      # what was found, in a few words
    fix: str | None = None          # when not ok: the one thing to do
    blocker: Blocker | None = None  # set when status is FAIL

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["status"] = self.status.value
        data["blocker"] = self.blocker.value if self.blocker else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> Finding:
        return cls(data["check"], Status(data["status"]), data["found"], data["fix"],
                   Blocker(data["blocker"]) if data["blocker"] else None)


def ok(check: str, found: str) -> Finding:
    return Finding(check, Status.OK, found)


def warn(check: str, found: str, fix: str) -> Finding:
    return Finding(check, Status.WARN, found, fix)


def fail(check: str, found: str, fix: str, blocker: Blocker) -> Finding:
    return Finding(check, Status.FAIL, found, fix, blocker)


def skip(check: str, why: str) -> Finding:
    return Finding(check, Status.SKIP, f"not checked: {why}")


def first_blocker(findings: Iterable[Finding]) -> Blocker | None:
    """The first FAIL's blocker: the checks run in the order a user can fix them."""
    return next((f.blocker for f in findings if f.status is Status.FAIL), None)


# ---- facts for --version


# the kfunc the direct-loads build of the object calls (tracer.DIRECT_LOADS_KFUNC)
_DIRECT_LOADS_KFUNC = "bpf_rdonly_cast"


def direct_loads_here() -> bool:
    """Whether this kernel gets the direct-loads build (as the tracer decides: from BTF)."""
    return system.kernel_has_function(_DIRECT_LOADS_KFUNC)


def default_object_path() -> Path:
    """The BPF object shipped in the package that the tracer loads on this kernel (found
    without importing the tracer: it needs libbpf, and --version must work without)."""
    name = "echo_open_direct.bpf.o" if direct_loads_here() else "echo_open.bpf.o"
    return Path(str(importlib.resources.files("echo_open") / "bpf" / name))


@dataclass(frozen=True)
class Installation:
    version: str
    libbpf_version: str | None     # "1.1.2" (from the file) or libbpf's "v1.1"; None: not loaded
    libbpf_path: str | None        # the file mapped into this process
    libbpf_bundled: bool           # the wheel's copy (site-packages/echo_open.libs/)
    libbpf_error: str | None       # why the binding did not load
    kernel_release: str
    object_path: str
    object_build_id: str | None    # the first 16 hex digits of the object's sha256
    object_error: str | None


def mapped_libbpf() -> str | None:
    """The libbpf file this process has mapped, from /proc/self/maps: the system's
    libbpf.so.1.x, or the wheel's echo_open.libs/libbpf-<hash>.so.1.x."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and re.match(r"libbpf(-[0-9a-f]+)?\.so", os.path.basename(fields[5])):
            return fields[5]
    return None


def installation() -> Installation:
    """What is installed and running: no privileges needed, nothing loaded in the kernel."""
    libbpf_version = libbpf_path = libbpf_error = None
    try:
        from .loader.probe import libbpf_version_string
        libbpf_version = libbpf_version_string()
        libbpf_path = mapped_libbpf()
    except ImportError as exc:  # libbpf missing, or too old for a symbol we use
        libbpf_error = str(exc)
    if libbpf_path and libbpf_version:
        # the file name carries the patch level (libbpf.so.1.1.2); the API only major.minor
        match = re.search(r"\.so\.(\d+\.\d+\.\d+)$", libbpf_path)
        if match and f"v{match.group(1)}".startswith(libbpf_version + "."):
            libbpf_version = match.group(1)
    object_path = default_object_path()
    build_id = object_error = None
    try:
        build_id = hashlib.sha256(object_path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        object_error = exc.strerror
    return Installation(
        version=__version__, libbpf_version=libbpf_version, libbpf_path=libbpf_path,
        libbpf_bundled=bool(libbpf_path) and Path(libbpf_path).parent.name == "echo_open.libs",
        libbpf_error=libbpf_error, kernel_release=os.uname().release,
        object_path=str(object_path), object_build_id=build_id, object_error=object_error)


# ---- the checks


def run_checks(object_path: str | os.PathLike | None = None) -> list[Finding]:
    """Every check, in the order a user can fix them."""
    caps = system.effective_caps()
    path = Path(object_path) if object_path else default_object_path()
    findings = [_libbpf(), _privileges(caps), _paranoid(caps), _unprivileged_bpf(caps),
                _bpf_stats(), _btf(), _resolution()]
    privileged = all(f.status is not Status.FAIL for f in findings[:3])
    clear = first_blocker(findings) is None  # nothing so far stops the load
    tracefs_here = _mounted_tracefs()
    missing = [fs for fs, absent in (("tracefs", tracefs_here is None),
                                     ("securityfs", not os.path.ismount(_SECURITYFS)))
               if absent]
    if missing and system.has_cap(caps, system.CAP_SYS_ADMIN):
        later = _in_private_mounts(missing, lambda: _mount_dependent(path, privileged, clear))
        if "tracefs" in missing:
            later = [replace(f, found=f"not mounted; it can be: echo-open mounts it at "
                                      f"{system.TRACEFS} when it starts")
                     if f.check == "tracefs" and f.status is Status.OK else f for f in later]
    else:
        later = _mount_dependent(path, privileged, clear)
    return findings + later


def _resolution() -> Finding:
    if direct_loads_here():
        return ok("path resolution", f"direct loads ({_DIRECT_LOADS_KFUNC}, 6.2+): "
                  "echo_open_direct.bpf.o")
    return ok("path resolution", f"probe reads (no {_DIRECT_LOADS_KFUNC} kfunc before 6.2: "
              "a helper call per kernel pointer): echo_open.bpf.o")


def _libbpf() -> Finding:
    facts = installation()
    if facts.libbpf_error:
        return fail("libbpf", f"the binding does not load: {facts.libbpf_error}",
                    "install libbpf1 >= 1.1 (apt-get install libbpf1)", Blocker.NO_LIBBPF)
    where = "bundled" if facts.libbpf_bundled else "system"
    return ok("libbpf", f"{facts.libbpf_version} ({where}: {facts.libbpf_path})")


def _cap_names(caps: int) -> str:
    names = [name for cap, name in ((system.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
                                    (system.CAP_BPF, "CAP_BPF"),
                                    (system.CAP_PERFMON, "CAP_PERFMON"),
                                    (system.CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"))
             if system.has_cap(caps, cap)]
    return "+".join(names) or "none of CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON"


def _privileges(caps: int) -> Finding:
    who = f"uid {os.geteuid()}, capabilities {_cap_names(caps)}"
    if not system.may_load_bpf(caps):
        return fail("privileges", who, "run as root (sudo echo-open), or give it "
                    "CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH", Blocker.NOT_PERMITTED)
    if not (system.has_cap(caps, system.CAP_SYS_ADMIN)
            or system.has_cap(caps, system.CAP_DAC_READ_SEARCH)):
        return warn("privileges", f"{who}: tracefs may be unreadable",
                    "add CAP_DAC_READ_SEARCH (tracepoint ids are read from tracefs)")
    return ok("privileges", who)


def _paranoid(caps: int) -> Finding:
    name = "kernel.perf_event_paranoid"
    value = system.read_sysctl(name)
    if value is None:
        return ok(name, "absent")
    if value <= 2:
        return ok(name, str(value))
    if system.has_cap(caps, system.CAP_SYS_ADMIN):
        return ok(name, f"{value} (only CAP_SYS_ADMIN may attach on kernels that enforce it: "
                        "present)")
    if not system.may_load_bpf(caps):
        return skip(name, f"{value}; what it allows depends on the privileges above")
    problem = system.paranoid_problem(caps)
    if problem:
        return fail(name, f"{value}: enforced, attaching tracepoints needs CAP_SYS_ADMIN",
                    system.PARANOID_FIX, Blocker.NOT_PERMITTED)
    return ok(name, f"{value}, not enforced by this kernel (perf events open with CAP_PERFMON)")


def _unprivileged_bpf(caps: int) -> Finding:
    name = "kernel.unprivileged_bpf_disabled"
    value = system.read_sysctl(name)
    meaning = {0: "unprivileged BPF allowed", 1: "unprivileged BPF off",
               2: "unprivileged BPF off"}.get(value, "unknown") if value is not None else "absent"
    # echo-open always loads with CAP_BPF (or CAP_SYS_ADMIN): the setting does not apply to it
    return ok(name, f"{value} ({meaning}; echo-open needs CAP_BPF either way)")


def _bpf_stats() -> Finding:
    name = "kernel.bpf_stats_enabled"
    value = system.read_sysctl(name)
    if value:
        return warn(name, f"{value}: the kernel times every BPF program run, every open pays",
                    f"sysctl {name}=0 (unless something here needs the run times)")
    return ok(name, "absent" if value is None else str(value))


def _btf() -> Finding:
    path = system.BTF_PATH
    if not path.exists():
        return fail("btf", f"{path} is missing", "use a kernel built with "
                    "CONFIG_DEBUG_INFO_BTF=y (Debian's are)", Blocker.NO_BTF)
    return ok("btf", f"{path} ({path.stat().st_size >> 10} KiB)")


def _mounted_tracefs() -> Path | None:
    """Where tracefs is mounted (as the tracer looks), or None; raises NoTracefs when the
    place cannot be read."""
    for root in (system.TRACEFS, system._DEBUGFS_TRACING):
        try:
            if (root / "events").is_dir():
                return root
        except PermissionError:
            return root  # there, but unreadable: the tracefs check says so
    return None


def _mount_dependent(path: Path, privileged: bool, clear: bool) -> list[Finding]:
    """The checks that need tracefs (and securityfs) mounted, where they are."""
    findings = [_lockdown(), _tracefs(privileged)]
    tracefs = _mounted_tracefs() if findings[-1].status is Status.OK else None
    try:
        from .loader import BPFError, BPFObject
    except ImportError:
        return [*findings, skip("bpf object", "the binding to libbpf does not load")]
    try:
        with BPFObject.open(path) as obj:
            sections = [program.section for program in obj.programs.values()]
    except (BPFError, OSError) as exc:
        return [*findings, fail("bpf object", f"{path}: {exc}", "reinstall echo-open",
                                Blocker.KERNEL_REFUSED)]
    findings += _tracepoints(sections, tracefs)
    findings += _btf_tracepoints(sections)
    findings += _features(privileged)
    findings.append(_load(path, tracefs, clear and first_blocker(findings) is None))
    return findings


def _lockdown() -> Finding:
    try:
        text = LOCKDOWN.read_text()
    except FileNotFoundError:
        if os.path.ismount(_SECURITYFS):
            return ok("lockdown", "no lockdown LSM in this kernel")
        return ok("lockdown", "not known: securityfs is not mounted (the load check shows "
                              "a refusal)")
    except OSError as exc:
        return ok("lockdown", f"not known: {LOCKDOWN}: {exc.strerror}")
    mode = re.search(r"\[(\w+)\]", text)
    level = mode.group(1) if mode else text.strip()
    if level == "confidentiality":
        return fail("lockdown", "confidentiality: the kernel forbids bpf_probe_read_kernel",
                    "boot with lockdown=integrity (or none), or without Secure Boot's lockdown",
                    Blocker.KERNEL_REFUSED)
    return ok("lockdown", level)


def _tracefs(privileged: bool) -> Finding:
    root = _mounted_tracefs()
    if root is not None:
        try:
            if (root / "events").is_dir():
                return ok("tracefs", f"mounted at {root}")
        except PermissionError:
            pass
        if not privileged:
            return skip("tracefs", f"{root} is unreadable without the privileges above")
        return fail("tracefs", f"{root}: permission denied", "run as root, or add "
                    "CAP_DAC_READ_SEARCH (tracepoint ids are read there)", Blocker.NO_TRACEFS)
    if not system.TRACEFS.is_dir():
        return fail("tracefs", f"{system.TRACEFS} does not exist", "use a kernel with "
                    "CONFIG_TRACING", Blocker.NO_TRACEFS)
    return fail("tracefs", "not mounted, and mounting it needs CAP_SYS_ADMIN",
                f"run as root, or: mount -t tracefs nodev {system.TRACEFS}", Blocker.NO_TRACEFS)


# alternatives: either one of a group is enough (6.1 names the submit tracepoint _sqe)
_ALTERNATIVES = [("io_uring", ("io_uring_submit_req", "io_uring_submit_sqe"))]
# the syscalls that can hand an fd number to another file (the tracer's fd_reuse_* programs)
_FD_CHANGE_SYSCALLS = {"close", "close_range", "dup2", "dup3"}
# the one pair without which there is nothing to trace: every libc opens with openat
_ESSENTIAL = {("syscalls", "sys_enter_openat"), ("syscalls", "sys_exit_openat")}


def attached_tracepoints(sections: Iterable[str]) -> list[tuple[str, str]]:
    """(category, event) of every ``tracepoint/CATEGORY/EVENT`` program, in object order
    (a bare ``tracepoint`` section is a tail-call target: never attached)."""
    from .loader.object import tracepoint_of_section  # libbpf: only once it loads

    return [tp for section in sections if (tp := tracepoint_of_section(section))]


def _tracepoints(sections: list[str], tracefs: Path | None) -> list[Finding]:
    wanted = attached_tracepoints(sections)
    if tracefs is None:
        return [skip("tracepoints", f"{len(wanted)} tracepoints: tracefs is unavailable")]
    present = {tp for tp in wanted if system.tracepoint_exists(tracefs, *tp)}
    findings = []
    grouped: set[tuple[str, str]] = set()
    for category, event in wanted:
        if (category, event) in grouped:
            continue
        group = next(([(category, e) for e in names if (category, e) in wanted]
                      for cat, names in _ALTERNATIVES if cat == category and event in names),
                     [(category, event)])
        grouped.update(group)
        check = f"tracepoint {category}:{'|'.join(e for _, e in group)}"
        there = [e for c, e in group if (c, e) in present]
        absent = [e for c, e in group if (c, e) not in present]
        if there:
            note = f" ({', '.join(absent)} absent: either is enough)" if absent else ""
            findings.append(ok(check, f"present{note}" if len(group) == 1 else
                               f"{there[0]} present{note}"))
        elif (category, event) in _ESSENTIAL:
            findings.append(fail(check, "absent: opens cannot be traced", "use a kernel with "
                                 "CONFIG_FTRACE_SYSCALLS", Blocker.NO_TRACEFS))
        else:
            syscall = event.split("_", 2)[-1]
            if category == "syscalls" and syscall in _FD_CHANGE_SYSCALLS:
                findings.append(warn(check, "absent: every resolution by a multi-threaded "
                                     "opener is marked unsure", "use a kernel that has it"))
                continue
            what = "io_uring opens" if category == "io_uring" else f"opens through {syscall}"
            findings.append(warn(check, f"absent: {what} are not seen",
                                 "use a kernel that has it (5.17 or later)"))
    return findings


def _btf_tracepoints(sections: list[str]) -> list[Finding]:
    """tp_btf programs attach by BTF type (btf_trace_EVENT), not through tracefs."""
    events = [s.split("/", 1)[1] for s in sections if s.startswith("tp_btf/")]
    if not events:
        return []
    if not system.BTF_PATH.exists():
        return [skip(f"tp_btf {event}", "the kernel has no BTF") for event in events]
    try:
        typedefs = btf_typedef_names(system.BTF_PATH.read_bytes())
    except (OSError, ValueError) as exc:
        return [skip(f"tp_btf {event}", f"BTF unreadable ({exc})") for event in events]
    findings = []
    for event in events:
        if f"btf_trace_{event}" in typedefs:
            findings.append(ok(f"tp_btf {event}", f"btf_trace_{event} in the kernel's BTF"))
        else:
            findings.append(warn(f"tp_btf {event}", "absent from the kernel's BTF: "
                                 "`echo-open -- COMMAND` cannot follow its processes",
                                 "trace with -p PID instead, or use a kernel 5.5 or later"))
    return findings


_BTF_MAGIC = 0xEB9F
_BTF_KIND_TYPEDEF = 8
# bytes after the 12-byte btf_type, by kind: fixed, and per vlen item
_BTF_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8),
              14: (4, 0), 15: (0, 12), 17: (4, 0), 19: (0, 12)}


def btf_typedef_names(data: bytes) -> set[str]:
    """The names of every typedef in a raw BTF blob (/sys/kernel/btf/vmlinux)."""
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, _str_len = \
        struct.unpack_from("<HBBIIIII", data)
    if magic != _BTF_MAGIC:
        raise ValueError("not BTF")
    types = data[hdr_len + type_off:hdr_len + type_off + type_len]
    strings = hdr_len + str_off
    names = set()
    offset = 0
    while offset < len(types):
        name_off, info, _ = struct.unpack_from("<III", types, offset)
        kind, vlen = info >> 24 & 0x1F, info & 0xFFFF
        if kind == _BTF_KIND_TYPEDEF:
            end = data.index(b"\0", strings + name_off)
            names.add(data[strings + name_off:end].decode("ascii", "replace"))
        fixed, per_item = _BTF_EXTRA.get(kind, (0, 0))
        offset += 12 + fixed + vlen * per_item
    return names


def _features(privileged: bool) -> list[Finding]:
    from .loader import BPFError, probe

    checks = [
        ("ring buffer", "BPF_MAP_TYPE_RINGBUF (5.8)",
         lambda: probe.map_type_supported(probe.MAP_TYPE_RINGBUF)),
        ("task storage", "BPF_MAP_TYPE_TASK_STORAGE (5.11)",
         lambda: probe.map_type_supported(probe.MAP_TYPE_TASK_STORAGE)
         and probe.helper_supported(probe.PROG_TYPE_TRACEPOINT, probe.FUNC_TASK_STORAGE_GET)),
        ("bpf_loop", "the bpf_loop helper (5.17)",
         lambda: probe.helper_supported(probe.PROG_TYPE_TRACEPOINT, probe.FUNC_LOOP)),
    ]
    findings = []
    for check, what, supported in checks:
        if not privileged:
            # libbpf answers "unsupported" to a probe it was not permitted to make
            findings.append(skip(check, "needs the privileges above"))
            continue
        try:
            answer = supported()
        except BPFError as exc:
            findings.append(fail(check, f"probe failed: {exc}", "run as root",
                                 Blocker.KERNEL_REFUSED))
            continue
        findings.append(ok(check, what) if answer else
                        fail(check, f"{what} is not supported", "use Linux 5.17 or later",
                             Blocker.KERNEL_REFUSED))
    return findings


def _load(path: Path, tracefs: Path | None, can_try: bool) -> Finding:
    """The real thing: load the shipped object as the tracer configures it, attach nothing."""
    if not can_try or tracefs is None:
        return skip("load", "needs every FAIL above fixed")
    refusal = _try_load(path, tracefs, follow_children=True)
    if refusal is None:
        return ok("load", f"{path.name}: every program verified and loaded, then unloaded")
    if _try_load(path, tracefs, follow_children=False) is None:
        return warn("load", f"loads without the tp_btf programs, which the kernel refused: "
                    f"{refusal}", "trace with -p PID instead of -- COMMAND")
    return fail("load", f"the kernel refused: {refusal}", "run echo-open -v for the whole "
                "verifier log", Blocker.KERNEL_REFUSED)


def _try_load(path: Path, tracefs: Path, follow_children: bool) -> str | None:
    """None if the object loads; else the kernel's refusal in one line."""
    from .loader import BPFError, BPFObject, LoadError
    from .tracer import Filters, Tracer

    # the tracer's own configuration: the programs, maps and settings it would load
    tracer = Tracer(Filters(pids=[os.getpid()], follow_children=follow_children))
    try:
        with BPFObject.open(path) as obj:
            tracer.configure(obj, tracefs)
            obj.load()  # closing the object frees all it loaded, program arrays included
    except LoadError as exc:
        return first_refusal(exc.log) or str(BPFError(exc.errno, exc.operation))
    except BPFError as exc:
        return str(exc)
    return None


def first_refusal(log: str) -> str | None:
    """``program: first line of the verifier log`` from libbpf's output, if there is one."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        begin = re.search(r"prog '(\w+)': -- BEGIN PROG LOAD LOG --", line)
        if begin:
            verifier = next((v.strip() for v in lines[i + 1:] if v.strip()), "")
            if verifier and "-- END PROG LOAD LOG --" not in verifier:
                return f"{begin.group(1)}: {verifier}"
    failed = [line for line in lines if "failed" in line or "error" in line.lower()]
    return failed[0].removeprefix("libbpf: ").strip() if failed else None


# ---- a private mount namespace in a child process

_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_MOUNT_POINTS = {"tracefs": system.TRACEFS, "securityfs": _SECURITYFS}


def _in_private_mounts(filesystems: list[str],
                       work: Callable[[], list[Finding]]) -> list[Finding]:
    """Run ``work`` in a child with its own mount namespace where ``filesystems`` are
    mounted; the host's mounts are never touched."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: every path out is os._exit
        status = 1
        try:
            os.close(read_end)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(_CLONE_NEWNS) != 0 or \
                    libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "a private mount namespace")
            for fstype in filesystems:
                # may fail (no such filesystem): the check then reports what it finds
                libc.mount(b"nodev", bytes(_MOUNT_POINTS[fstype]), fstype.encode(), 0, None)
            result = json.dumps([f.as_json() for f in work()])
            status = 0
        except BaseException as exc:
            result = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        try:
            with os.fdopen(write_end, "w") as out:
                out.write(result)
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as source:
        text = source.read()
    os.waitpid(pid, 0)
    data = json.loads(text) if text else {"error": "the checking process died"}
    if isinstance(data, dict):
        return [fail("checks", f"could not run in a private mount namespace: {data['error']}",
                     "mount tracefs and securityfs, then run echo-open doctor again",
                     Blocker.NO_TRACEFS)]
    return [Finding.from_json(item) for item in data]
