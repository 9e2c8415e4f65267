"""The two builds of the path walk against the real kernel: direct loads through pointers
cast by the bpf_rdonly_cast kfunc (echo_open_direct.bpf.o, Linux 6.2+) and probe reads
(echo_open.bpf.o, every kernel) must resolve the same real opens to the same bytes.

Both tracers run at once, each sees every open a forked child makes, and their records of
that child are compared field by field (resolved path, how, status bits, namespace).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_io_uring import UringChild, uring_open  # noqa: F401 (a fixture)
from test_resolve import (
    make_deep_dir,
    mounted,
    open_in_deep_dir,
    real,
    run_in_child,
    unshare_mount_namespace,
)

from conftest import collect
from echo_open import Filters, OpenEvent, Tracer, Tuning
from echo_open.system import kernel_has_function, kernel_version
from echo_open.tracer import DIRECT_LOADS_KFUNC, InvalidSetting, default_object_path

HAS_DIRECT = kernel_has_function(DIRECT_LOADS_KFUNC)
HERE = Path(__file__).resolve().parent
# the children's process name: the tracers keep only their opens (a whole machine's, on a
# shared host, can fill a ring and lose the very events compared)
CHILD_COMM = "eo-dl-child"
PR_SET_NAME = 15


# ---- which build a kernel gets

def test_the_kernel_btf_check_matches_the_kernel_version():
    """bpf_rdonly_cast came in 6.2: the BTF check must say so (it decides the build)."""
    assert (kernel_version() >= (6, 2)) == HAS_DIRECT
    assert kernel_has_function("vfs_open")  # a plain kernel function, in every BTF
    assert not kernel_has_function("eo_no_such_function")
    assert not kernel_has_function("task_struct")  # a struct, not a function


def test_the_tracer_loads_the_build_this_kernel_has(start_tracer):
    tracer = start_tracer()
    assert tracer.direct_loads is HAS_DIRECT
    assert tracer.chosen_object_path() == default_object_path(HAS_DIRECT)
    assert tracer.chosen_object_path().name == ("echo_open_direct.bpf.o" if HAS_DIRECT
                                                else "echo_open.bpf.o")


def test_probe_reads_load_on_every_kernel(start_tracer):
    assert start_tracer(direct_loads=False).direct_loads is False


def test_forcing_direct_loads_needs_the_kfunc(start_tracer):
    if HAS_DIRECT:
        assert start_tracer(direct_loads=True).direct_loads is True
    else:
        with pytest.raises(InvalidSetting, match="bpf_rdonly_cast") as raised:
            Tracer(tuning=Tuning(direct_loads=True)).start()
        assert raised.value.setting == "direct_loads"


def test_a_given_object_must_be_the_build_asked_for():
    probe_build = default_object_path(False)
    with pytest.raises(InvalidSetting, match="probe-read build") as raised:
        Tracer(tuning=Tuning(direct_loads=True), object_path=probe_build).start()
    assert raised.value.setting == "direct_loads"


def test_doctor_names_the_build():
    from echo_open.doctor import Status, run_checks

    findings = run_checks()
    (finding,) = [f for f in findings if f.check == "path resolution"]
    assert finding.status is Status.OK
    assert finding.found.startswith("direct loads" if HAS_DIRECT else "probe reads")
    (load,) = [f for f in findings if f.check == "load"]
    assert load.found.startswith(default_object_path().name + ":")


def test_a_direct_build_the_kernel_refuses_falls_back_to_probe_reads(tmp_path):
    """Where the kernel has the kfunc but its verifier refuses the direct build (built here
    without -mcpu=v3, which loses bounds the verifier needs), the tracer's own choice falls
    back to the probe-read build and traces; asked for by name, the refusal is the error."""
    import echo_open

    if not HAS_DIRECT:
        pytest.skip(f"this kernel has no {DIRECT_LOADS_KFUNC}: the direct build is never tried")
    site = Path(echo_open.__file__).parent.parent
    copy = tmp_path / "site"
    shutil.copytree(site / "echo_open", copy / "echo_open")
    if (site / "echo_open.libs").is_dir():  # the wheel's libbpf, found through the RPATH
        shutil.copytree(site / "echo_open.libs", copy / "echo_open.libs")
    root = HERE.parent
    refused = copy / "echo_open" / "bpf" / "echo_open_direct.bpf.o"
    build = subprocess.run(
        ["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", "-DEO_DIRECT_LOADS=1",
         f"-I{root}/bpf", f"-I{root}/vmlinux/x86", "-c", str(root / "bpf/echo_open.bpf.c"),
         "-o", str(refused)], capture_output=True, text=True, timeout=300)
    if build.returncode:
        pytest.fail(f"the object did not build: {build.stderr[-2000:]}")
    program = textwrap.dedent("""
        import os, sys
        from echo_open import Filters, Tracer, Tuning
        from echo_open.loader import LoadError
        with Tracer(Filters(pids=[os.getpid()]), exclude_self=False) as tracer:
            os.open(sys.argv[1], os.O_RDONLY)
            seen = [e.resolved for e in tracer.events(timeout=1.0) if e.path == sys.argv[1]]
            print(tracer.direct_loads, seen)
        try:
            Tracer(tuning=Tuning(direct_loads=True)).start()
            print("loaded")
        except LoadError:
            print("refused")
        """)
    (tmp_path / "file").write_text("x")
    done = subprocess.run([sys.executable, "-c", program, str(tmp_path / "file")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(copy)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"False {[real(tmp_path / 'file')]}", "refused"]


# ---- the same opens through both builds

def signature(event: OpenEvent) -> tuple:
    return (event.syscall, event.path_bytes, event.ret, event.resolved_raw,
            event.resolved_how, event.status, event.resolved_mntns, event.mntns)


@pytest.fixture
def both(start_tracer) -> tuple[Tracer, Tracer]:
    if not HAS_DIRECT:
        pytest.skip(f"this kernel ({os.uname().release}) has no {DIRECT_LOADS_KFUNC}: only "
                    "the probe-read build loads (see test_forcing_direct_loads_needs_the_kfunc)")
    direct = start_tracer(Filters(comm=CHILD_COMM), direct_loads=True)
    probe = start_tracer(Filters(comm=CHILD_COMM), direct_loads=False)
    assert (direct.direct_loads, probe.direct_loads) == (True, False)
    return direct, probe


def opens_of(tracer: Tracer, pid: int, count: int) -> list[OpenEvent]:
    """The pid's opens, at least ``count``, then whatever else comes within 0.3 s."""
    events = collect(tracer, lambda e: e.pid == pid, lambda evs: len(evs) >= count)
    time.sleep(0.3)
    return events + [e for e in tracer.drain() if e.pid == pid]


def assert_same(both: tuple[Tracer, Tracer], pid: int, count: int) -> list[OpenEvent]:
    direct, probe = (opens_of(tracer, pid, count) for tracer in both)
    assert len(direct) >= count
    assert [signature(e) for e in direct] == [signature(e) for e in probe]
    assert [tracer.stats().dropped for tracer in both] == [0, 0]
    return direct


class Counted:
    """os.open in a child, counted, failures kept as events too."""

    def __init__(self) -> None:
        self.count = 0

    def open(self, path: str | Path, flags: int = os.O_RDONLY, **kw) -> int | None:
        self.count += 1
        try:
            return os.open(path, flags, 0o600, **kw)
        except OSError:
            return None


def run(both: tuple[Tracer, Tracer], action: Callable[[Counted], object]) -> list[OpenEvent]:
    def child() -> int:
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.prctl(PR_SET_NAME, CHILD_COMM.encode(), 0, 0, 0) == 0
        opener = Counted()
        action(opener)
        return opener.count

    pid, count = run_in_child(child)
    return assert_same(both, pid, count)


def test_plain_relative_dirfd_symlinked_and_failed_opens(both, tmp_path):
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "dir" / "sub")

    def action(o: Counted) -> None:
        os.chdir(tmp_path / "dir")
        o.open("sub/file")
        o.open("../dir/./sub/file")
        o.open(tmp_path / "link" / "file")
        o.open("missing")
        o.open("/no/such/dir/file")
        o.open(".")
        o.open("/")
        dirfd = o.open(tmp_path / "dir" / "sub", os.O_RDONLY | os.O_DIRECTORY)
        o.open("file", dir_fd=dirfd)
        o.open("absent", dir_fd=dirfd)
        o.open(tmp_path / "dir" / "new", os.O_CREAT | os.O_WRONLY)

    events = run(both, action)
    assert {e.resolved for e in events} >= {real(tmp_path / "dir" / "sub" / "file"), "/",
                                            real(tmp_path / "dir") + "/missing"}


def test_mounts_and_bind_mounts(both, tmp_path):
    (tmp_path / "src" / "inner").mkdir(parents=True)
    (tmp_path / "src" / "inner" / "file").write_text("x")
    with mounted("-t", "tmpfs", "eo-direct", target=tmp_path / "tmpfs") as tmpfs, \
            mounted("--bind", str(tmp_path / "src"), target=tmp_path / "bind") as bind, \
            mounted("--bind", str(tmp_path / "src" / "inner"),
                    target=tmp_path / "tmpfs") as stacked:
        def action(o: Counted) -> None:
            o.open(bind / "inner" / "file")
            os.chdir(bind / "inner")
            o.open("file")
            o.open("missing")
            o.open(stacked / "file")  # a bind mount stacked on a tmpfs mount
            o.open(tmpfs)

        events = run(both, action)
    assert f"{real(tmp_path)}/bind/inner/file" in {e.resolved for e in events}


def test_a_chroot(both, tmp_path):
    jail = tmp_path / "jail"
    (jail / "etc").mkdir(parents=True)
    (jail / "etc" / "conf").write_text("x")

    def action(o: Counted) -> None:
        os.chroot(jail)
        os.chdir("/")
        o.open("/etc/conf")
        o.open("etc/conf")
        o.open("/etc/missing")
        o.open("/")

    events = run(both, action)
    assert real(jail / "etc" / "conf") in {e.resolved for e in events}


def test_deleted_anonymous_and_pseudo_files(both, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("x")

    def action(o: Counted) -> None:
        fd = o.open(victim)
        os.unlink(victim)
        o.open(f"/proc/self/fd/{fd}")
        o.open(tmp_path, os.O_TMPFILE | os.O_RDWR)
        memfd = os.memfd_create("eo-direct")
        o.open(f"/proc/self/fd/{memfd}", os.O_RDWR)
        read_end, _ = os.pipe()
        o.open(f"/proc/self/fd/{read_end}", os.O_RDONLY | os.O_NONBLOCK)
        sock = socket.socket(socket.AF_UNIX)
        o.open(f"/proc/self/fd/{sock.fileno()}")  # ENXIO: joined, not walked

    events = run(both, action)
    assert any(e.resolved_deleted for e in events)
    assert "/memfd:eo-direct" in {e.resolved for e in events}
    assert any(e.resolved and e.resolved.startswith("/pipe:[") for e in events)


def test_a_lazily_unmounted_tmpfs_and_a_new_mount_namespace(both, tmp_path):
    target = tmp_path / "gone"
    target.mkdir()
    (tmp_path / "mnt").mkdir()

    def action(o: Counted) -> None:
        subprocess.run(["mount", "-t", "tmpfs", "eo-gone", str(target)], check=True)
        (target / "file").write_text("x")
        fd = o.open(target / "file")
        subprocess.run(["umount", "-l", str(target)], check=True)
        o.open(f"/proc/self/fd/{fd}")
        unshare_mount_namespace()
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "eo-ns", str(tmp_path / "mnt")], check=True)
        (tmp_path / "mnt" / "file").write_text("x")
        o.open(tmp_path / "mnt" / "file")
        o.open(tmp_path / "mnt" / "missing")

    try:
        events = run(both, action)
    finally:
        if os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], check=True)
    assert any(e.resolved_anonymous and e.resolved == "/file" for e in events)
    assert any(e.mntns != os.stat("/proc/self/ns/mnt").st_ino for e in events)


@pytest.mark.parametrize("total", [4000, 4095, 4096, 5000])
def test_long_paths_near_and_past_path_max(both, tmp_path, total):
    deep = make_deep_dir(tmp_path, total - len("/leaf"))

    def action(o: Counted) -> None:
        # the descent opens every directory on the way: all compared too
        o.count += len(deep.strip("/").split("/")) + 2
        open_in_deep_dir(deep, "leaf", os.O_CREAT | os.O_WRONLY)()
        o.open("missing")

    events = run(both, action)
    leaf = [e for e in events if e.path_bytes == b"leaf"]
    assert len(leaf) == 1 and leaf[0].ok
    assert leaf[0].resolved_truncated == (total > 4095)


@pytest.mark.parametrize("mode", ["openat", "openat2", "fixed", "fixed-alloc"])
def test_io_uring_opens(both, uring_open, tmp_path, mode):  # noqa: F811 (the fixture)
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "file").write_text("x")
    binary = tmp_path / CHILD_COMM  # its process name
    shutil.copy(uring_open, binary)
    for path in ("sub/file", "sub/missing"):
        child = UringChild(binary, mode, tmp_path / "dir", path)
        child.go()
        events = assert_same(both, child.pid, 1)
        (uring,) = [e for e in events if e.syscall == "io_uring"]
        if path == "sub/missing":
            assert uring.resolved == real(tmp_path / "dir") + "/sub/missing"
        elif not uring.fixed_file:
            assert uring.resolved == real(tmp_path / "dir" / "sub" / "file")
