"""io_uring opens against the real kernel: a small C child (uring_open.c, built here with
gcc and liburing) opens through IORING_OP_OPENAT / OPENAT2 only, never through open(2)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import collect
from echo_open import Filters, OpenEvent, Tracer

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "uring_open.c"
RESOLVE_BENEATH = 0x08
FIXED_SLOT = 3  # the slot uring_open.c's "fixed" mode opens into


@pytest.fixture(scope="session")
def uring_open(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """uring_open.c, built once per session."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    binary = tmp_path_factory.mktemp("uring") / "uring_open"
    build = subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(SOURCE),
                            "-luring"], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"building uring_open.c failed (liburing-dev installed?):\n{build.stderr}")
    return binary


class UringChild:
    """uring_open waiting to open (its pid is known before it does)."""

    def __init__(self, binary: Path, mode: str, directory: Path, path: str) -> None:
        self.path = path
        self.proc = subprocess.Popen([str(binary), mode, str(directory), path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        word, pid = self.proc.stdout.readline().split()
        assert word == "ready"
        self.pid = int(pid)
        assert self.pid == self.proc.pid

    def go(self) -> dict[str, int]:
        """Let it open; returns {"pid", "dirfd", "res"} as the child saw them."""
        out, err = self.proc.communicate("go\n", timeout=30)
        assert self.proc.returncode == 0, err
        return json.loads(out)


def uring_opens(tracer: Tracer, child: UringChild, count: int = 1,
                timeout: float = 10.0) -> list[OpenEvent]:
    """The child's io_uring opens."""
    def mine(e: OpenEvent) -> bool:
        return e.pid == child.pid and e.syscall == "io_uring"

    return collect(tracer, mine, lambda evs: len(evs) >= count, timeout)


def run_open(tracer: Tracer, binary: Path, mode: str, directory: Path,
             path: str) -> tuple[dict[str, int], OpenEvent]:
    child = UringChild(binary, mode, directory, path)
    result = child.go()
    (event,) = uring_opens(tracer, child)
    return result, event


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp_path/dir/sub/file; the child's dirfd is on tmp_path/dir."""
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "file").write_text("x")
    return tmp_path


def test_openat_relative_to_a_dirfd(tracer, uring_open, tree):
    result, event = run_open(tracer, uring_open, "openat", tree / "dir", "sub/file")
    assert result["res"] >= 0
    assert event.syscall == "io_uring"
    assert event.pid == result["pid"]
    assert event.fd == result["res"]
    assert event.dfd == result["dirfd"]
    assert event.path == "sub/file"
    assert event.resolved == os.path.realpath(tree / "dir" / "sub" / "file")
    assert event.resolved_canonical
    assert not event.fixed_file
    assert event.mntns == event.resolved_mntns == os.stat("/proc/self/ns/mnt").st_ino
    assert event.comm == "uring_open"
    assert event.latency_ns > 0


def test_openat_of_a_missing_file_is_enoent(tracer, uring_open, tree):
    result, event = run_open(tracer, uring_open, "openat", tree / "dir", "sub/missing")
    assert result["res"] == -errno.ENOENT
    assert event.ret == -errno.ENOENT
    assert event.error == "ENOENT"
    assert event.fd is None
    assert event.resolved == os.path.realpath(tree / "dir") + "/sub/missing"
    assert not event.resolved_canonical


def test_openat2_carries_its_resolve_flags(tracer, uring_open, tree):
    result, event = run_open(tracer, uring_open, "openat2", tree / "dir", "sub/file")
    assert result["res"] >= 0
    assert event.syscall == "io_uring"
    assert event.resolve == RESOLVE_BENEATH
    assert event.fd == result["res"]
    assert event.resolved == os.path.realpath(tree / "dir" / "sub" / "file")


def test_openat2_refused_by_resolve_beneath_is_exdev(tracer, uring_open, tree):
    result, event = run_open(tracer, uring_open, "openat2", tree / "dir", "../dir/sub/file")
    assert result["res"] == -errno.EXDEV
    assert event.error == "EXDEV"
    assert event.path == "../dir/sub/file"
    # joined and normalised lexically: what was asked for, not proof it exists
    assert event.resolved == os.path.realpath(tree / "dir" / "sub" / "file")
    assert not event.resolved_canonical


@pytest.mark.parametrize("mode", ["fixed", "fixed-alloc"])
def test_a_fixed_file_open_has_no_fd_but_is_resolved(tracer, uring_open, tree, mode):
    result, event = run_open(tracer, uring_open, mode, tree / "dir", "sub/file")
    assert result["res"] >= 0
    if mode == "fixed":
        assert result["res"] == 0  # a chosen slot: 0 on success
    assert event.fixed_file
    assert event.ok and event.ret == result["res"]
    assert event.fd is None  # a slot in the ring's table, not a descriptor
    assert event.path == "sub/file"
    assert event.resolved == os.path.realpath(tree / "dir" / "sub" / "file")
    assert event.resolved_canonical


def test_a_fixed_file_open_of_a_missing_file_is_enoent(tracer, uring_open, tree):
    result, event = run_open(tracer, uring_open, "fixed", tree / "dir", "missing")
    assert result["res"] == -errno.ENOENT
    assert event.fixed_file
    assert event.error == "ENOENT"
    assert event.resolved == os.path.realpath(tree / "dir") + "/missing"


def test_a_pid_filter_keeps_other_processes_io_uring_opens_out(start_tracer, uring_open,
                                                               tree):
    child = UringChild(uring_open, "openat", tree / "dir", "sub/file")
    others = start_tracer(Filters(pids=[os.getppid()]))
    ours = start_tracer(Filters(pids=[child.pid]))
    child.go()
    assert len(uring_opens(ours, child)) == 1
    assert uring_opens(others, child, timeout=1.0) == []
    assert [e for e in others.read(0.2) if e.pid == child.pid] == []


def test_io_uring_opens_are_not_seen_as_openat_syscalls(tracer, uring_open, tree):
    child = UringChild(uring_open, "openat", tree / "dir", "sub/file")
    child.go()
    events = collect(tracer, lambda e: e.pid == child.pid and e.path == "sub/file",
                     lambda evs: len(evs) >= 2, timeout=2.0)
    assert [e.syscall for e in events] == ["io_uring"]
