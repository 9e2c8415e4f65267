"""echo-open doctor, run as a user would run it, on this machine and on machines made
worse on purpose (no privileges, no tracefs, no BTF, BPF stats on)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from echo_open import Filters, Tracer, doctor, system
from echo_open.loader import BPFObject, LoadError

HERE = Path(__file__).resolve().parent
ECHO_OPEN = str(Path(sys.executable).parent / "echo-open")
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
UNMOUNT_TRACEFS = "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; "
REQUIRED = {"libbpf", "privileges", "btf", "tracefs", "ring buffer", "task storage", "bpf_loop",
            "load"}


def run_doctor(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, ECHO_OPEN, "doctor", *args], capture_output=True,
                          text=True, timeout=120)


def in_private_mounts(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)


def lines_by_status(stdout: str) -> dict[str, list[str]]:
    """The finding lines grouped by their first word; the summary line apart."""
    *findings, summary = stdout.splitlines()
    assert summary.startswith("echo-open doctor: tracing will")
    grouped: dict[str, list[str]] = {}
    for line in findings:
        grouped.setdefault(line.split()[0], []).append(line)
    assert set(grouped) <= {"ok", "warn", "FAIL", "skip"}, stdout
    return grouped


@contextmanager
def sysctl(name: str, value: int) -> Iterator[None]:
    path = Path("/proc/sys", *name.split("."))
    before = path.read_text()
    path.write_text(str(value))
    try:
        yield
    finally:
        path.write_text(before)


def test_doctor_passes_here_with_every_required_item_ok():
    done = run_doctor("--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["will_trace"] is True and report["exit_status"] == 0
    status = {f["check"]: f["status"] for f in report["findings"]}
    assert {check: status.get(check) for check in REQUIRED} == dict.fromkeys(REQUIRED, "ok")
    assert "FAIL" not in status.values() and "skip" not in status.values()
    # one line per tracepoint the tracer attaches (either io_uring submit name on one line)
    with Tracer(Filters(pids=[os.getpid()], follow_children=True)) as tracer:
        attached = set(tracer.attached_tracepoints)
    checked = {check.split()[1] for check in status if check.startswith("tracepoint ")}
    # each line names one tracepoint or its alternatives (category:a|b): the tracer
    # attached one of each line's
    alternatives = [{f"{tp.partition(':')[0]}:{event}"
                     for event in tp.partition(":")[2].split("|")} for tp in checked]
    assert len(alternatives) == len(attached)
    assert all(len(names & attached) == 1 for names in alternatives), (checked, attached)
    assert all(status[f"tracepoint {tp}"] == "ok" for tp in checked)
    assert status["tp_btf sched_process_fork"] == status["tp_btf sched_process_exit"] == "ok"


def test_text_report_is_one_line_per_finding_and_a_summary():
    done = run_doctor()
    assert done.returncode == 0, done.stdout + done.stderr
    grouped = lines_by_status(done.stdout)
    assert done.stdout.splitlines()[-1].startswith("echo-open doctor: tracing will work")
    assert any(line.startswith("ok    load: ") for line in grouped["ok"])
    assert done.stderr == ""


def test_nothing_stays_loaded_or_mounted():
    def bpf_fds() -> list[str]:
        """What this process holds: anon_inode:bpf-prog, bpf-map, bpf_link, ..."""
        held = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except FileNotFoundError:  # the fd that listed the directory
                continue
            if "bpf" in target:
                held.append(target)
        return sorted(held)

    mounts = Path("/proc/self/mountinfo").read_text()
    before = bpf_fds()
    findings = doctor.run_checks()
    assert doctor.first_blocker(findings) is None, findings
    assert bpf_fds() == before
    assert Path("/proc/self/mountinfo").read_text() == mounts


def test_unprivileged_is_exit_77_with_one_fail_line_that_says_what_to_do():
    done = run_doctor(prefix=NOBODY)
    assert done.returncode == 77, done.stdout + done.stderr
    failed = lines_by_status(done.stdout)["FAIL"]
    assert len(failed) == 1 and failed[0].startswith("FAIL  privileges: uid 65534")
    assert "sudo" in failed[0]
    assert "Traceback" not in done.stderr


def test_capabilities_instead_of_root_pass(perf_events_for_capabilities):
    caps = "+bpf,+perfmon,+dac_read_search"
    done = run_doctor(prefix=(*NOBODY, f"--inh-caps={caps}", f"--ambient-caps={caps}"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_tracefs_unmounted_and_not_mountable_is_exit_72(perf_events_for_capabilities):
    done = in_private_mounts(UNMOUNT_TRACEFS + "exec setpriv --inh-caps=-sys_admin "
                             f"--bounding-set=-sys_admin {ECHO_OPEN} doctor")
    assert done.returncode == 72, done.stdout + done.stderr
    failed = lines_by_status(done.stdout)["FAIL"]
    assert len(failed) == 1 and failed[0].startswith("FAIL  tracefs: not mounted")
    assert "mount -t tracefs" in failed[0]


def test_tracefs_unmounted_but_mountable_is_ok_and_left_unmounted():
    done = in_private_mounts(UNMOUNT_TRACEFS + f"{ECHO_OPEN} doctor; status=$?; "
                             "test -d /sys/kernel/tracing/events && echo STILL-MOUNTED; "
                             "exit $status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "STILL-MOUNTED" not in done.stdout
    tracefs = [line for line in done.stdout.splitlines() if line.startswith("ok    tracefs:")]
    assert tracefs == ["ok    tracefs: not mounted; it can be: echo-open mounts it at "
                       "/sys/kernel/tracing when it starts"]
    # the tracepoints were still looked up (in the checker's own mount namespace)
    assert "ok    tracepoint syscalls:sys_enter_openat: present" in done.stdout


def test_missing_btf_is_exit_78():
    done = in_private_mounts(f"mount -t tmpfs none /sys/kernel/btf && exec {ECHO_OPEN} doctor")
    assert done.returncode == 78, done.stdout + done.stderr
    failed = lines_by_status(done.stdout)["FAIL"]
    assert len(failed) == 1 and failed[0].startswith("FAIL  btf: /sys/kernel/btf/vmlinux")
    assert "CONFIG_DEBUG_INFO_BTF" in failed[0]


def test_bpf_stats_enabled_is_a_warning_and_exit_0():
    with sysctl("kernel.bpf_stats_enabled", 1):
        done = run_doctor("--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    stats = next(f for f in report["findings"] if f["check"] == "kernel.bpf_stats_enabled")
    assert stats["status"] == "warn" and "sysctl kernel.bpf_stats_enabled=0" in stats["fix"]
    assert report["warnings"] >= 1 and report["will_trace"] is True


def test_perf_event_paranoid_3_with_capabilities_only_is_what_the_kernel_does():
    # Debian's kernels refuse every perf event without CAP_SYS_ADMIN at 3; upstream ones
    # (this 6.18) accept 3 and ignore it. Whichever this kernel is, the tracer and doctor
    # must agree with it: trace, or refuse up front naming the sysctl, never a bare EPERM.
    caps = "+bpf,+perfmon,+dac_read_search"
    prefix = (*NOBODY, f"--inh-caps={caps}", f"--ambient-caps={caps}")
    with sysctl("kernel.perf_event_paranoid", 3):
        traced = subprocess.run([*prefix, ECHO_OPEN, "-d", "0.5", "-p", "1"],
                                capture_output=True, text=True, timeout=30)
        checked = run_doctor("--json", prefix=prefix)
    paranoid = next(f for f in json.loads(checked.stdout)["findings"]
                    if f["check"] == "kernel.perf_event_paranoid")
    if traced.returncode == 0:
        assert "echo-open: tracing (" in traced.stderr
        assert checked.returncode == 0 and paranoid["status"] == "ok"
        assert "not enforced" in paranoid["found"]
    else:
        assert traced.returncode == 77, traced.stderr
        assert traced.stderr.count("\n") == 1
        assert "kernel.perf_event_paranoid" in traced.stderr
        assert "sysctl kernel.perf_event_paranoid=2" in traced.stderr
        assert checked.returncode == 77 and paranoid["status"] == "FAIL"


def test_the_privilege_check_agrees_with_a_real_perf_event_here():
    # as root the probe must open its dummy event: it is what every attach does
    assert system.perf_events_allowed()
    system.check_privileges()


def test_json_exit_status_is_the_process_status():
    done = run_doctor("--json", prefix=NOBODY)
    report = json.loads(done.stdout)
    assert report["exit_status"] == done.returncode == 77
    privileges = next(f for f in report["findings"] if f["check"] == "privileges")
    assert privileges == {"check": "privileges", "status": "FAIL",
                          "found": privileges["found"], "fix": privileges["fix"],
                          "blocker": "not_permitted"}


def test_bad_option_is_a_usage_error():
    done = run_doctor("--bogus")
    assert done.returncode == 2
    assert "--bogus" in done.stderr and "Traceback" not in done.stderr


def test_a_command_named_doctor_is_traced_after_two_dashes(tmp_path):
    command = tmp_path / "doctor"
    command.write_text("#!/bin/sh\nexit 5\n")
    command.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    done = subprocess.run([ECHO_OPEN, "--", "doctor"], capture_output=True, text=True,
                          timeout=30, env=env)
    assert done.returncode == 5, done.stderr
    assert "echo-open: tracing (" in done.stderr and "echo-open doctor" not in done.stdout


# ---- the pieces, on real objects


@pytest.fixture(scope="module")
def loader_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clang = shutil.which("clang")
    assert clang, "clang builds the test BPF object (./bootstrap.sh installs it)"
    out = tmp_path_factory.mktemp("doctor") / "loader_progs.bpf.o"
    subprocess.run([clang, "-g", "-O2", "-target", "bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86",
                    f"-I{HERE.parent / 'vmlinux' / 'x86'}", "-c",
                    str(HERE / "loader_progs.bpf.c"), "-o", str(out)], check=True)
    return out


def test_a_refusal_is_the_program_and_the_first_verifier_line(loader_object):
    with BPFObject.open(loader_object) as obj:
        obj.program("bad_access").autoload = True
        with pytest.raises(LoadError) as info:
            obj.load()
    refusal = doctor.first_refusal(info.value.log)
    assert refusal is not None and "\n" not in refusal
    assert refusal.startswith("bad_access: ")
    first_line = info.value.log.split("-- BEGIN PROG LOAD LOG --", 1)[1].strip().splitlines()[0]
    assert refusal == f"bad_access: {first_line.strip()}"


def test_tracepoints_come_from_the_program_sections(loader_object):
    with BPFObject.open(loader_object) as obj:
        sections = [program.section for program in obj.programs.values()]
    assert set(doctor.attached_tracepoints(sections)) == {("syscalls", "sys_enter_getppid"),
                                                          ("syscalls", "sys_exit_getppid")}


def test_btf_typedefs_are_read_from_the_kernels_btf():
    names = doctor.btf_typedef_names(system.BTF_PATH.read_bytes())
    assert {"btf_trace_sched_process_fork", "btf_trace_sched_process_exit", "u32"} <= names
    assert "task_struct" not in names  # a struct, not a typedef
