"""Resolved absolute paths against the real kernel: a forked child opens, the tracer resolves.

The rules under test (see bpf/echo_open.bpf.c, resolve()):
  * a successful open resolves to the opened file itself, walked up its dentries and mounts
    to the root of the mount namespace the file's mount is in (``resolved_canonical``);
  * a failed open resolves to the directory it was looked up from (cwd, dirfd, or the
    process root for an absolute path) joined with the path, normalised lexically;
  * the walk ignores chroot: the path is the one seen from the namespace root;
  * ``resolved_mntns`` names that namespace; a file of another namespace is marked by it;
  * unlinked files are ``resolved_deleted``; pipes, memfds and other files of internal
    mounts are ``resolved_anonymous`` with their pseudo name (``/memfd:x``, ``/pipe:[ino]``);
  * a path longer than 4095 bytes is ``resolved_truncated`` and holds the leaf end.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import subprocess
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import collect
from echo_open import OpenEvent, Tracer
from echo_open.render import resolved_marks

PATH_MAX = 4096  # bytes, NUL included: 4095 bytes of path at most
CLONE_NEWNS = 0x00020000
SYS_OPENAT2 = 437  # x86_64
RESOLVE_IN_ROOT = 0x10


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2) through syscall(2): the fd, or -errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    how = OpenHow(flags, 0, resolve)
    ret = libc.syscall(SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how),
                       ctypes.sizeof(how))
    return ret if ret >= 0 else -ctypes.get_errno()


# ---- a forked child that runs one function and reports its result

def run_in_child(action: Callable[[], Any]) -> tuple[int, Any]:
    """Fork, run ``action`` in the child, return (child pid, its JSON-able result)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 0
        try:
            os.close(read_end)
            payload = {"ok": action()}
        except BaseException:
            payload = {"error": traceback.format_exc()}
            status = 1
        with contextlib.suppress(BaseException):
            os.write(write_end, json.dumps(payload).encode())
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = json.loads(pipe.read() or b'{"error": "child died"}')
    os.waitpid(pid, 0)
    if "error" in payload:
        pytest.fail(f"child failed:\n{payload['error']}")
    return pid, payload["ok"]


class Opens:
    """Every event the tracer delivers, kept, so finding one open never loses another."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.seen: list[OpenEvent] = []

    def all(self, pid: int, path: str | bytes, count: int = 1) -> list[OpenEvent]:
        """The opens of exactly ``path`` (as passed) by ``pid``: waits for ``count``."""
        wanted = os.fsencode(path)

        def mine(events: list[OpenEvent]) -> list[OpenEvent]:
            return [e for e in events if e.pid == pid and e.path_bytes == wanted]

        if len(mine(self.seen)) < count:
            self.seen += collect(self.tracer, lambda e: True,
                                 lambda evs: len(mine(self.seen + evs)) >= count)
        found = mine(self.seen)
        assert len(found) == count, f"{len(found)} opens of {path!r}, expected {count}"
        return found

    def one(self, pid: int, path: str | bytes) -> OpenEvent:
        (event,) = self.all(pid, path)
        return event


@pytest.fixture
def opens(tracer: Tracer) -> Opens:
    return Opens(tracer)


def unshare_mount_namespace() -> None:
    """unshare(CLONE_NEWNS) (os.unshare is Python 3.12+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")


def own_mntns() -> int:
    return os.stat("/proc/self/ns/mnt").st_ino


def shown(event: OpenEvent, own: int) -> str:
    """The resolved path as the table shows it: the documented marks, then the path."""
    return resolved_marks(event, own) + (event.resolved or "?")


def real(path: Path) -> str:
    """The path as the kernel walks it (no symlinks in it)."""
    return os.path.realpath(path)


def assert_canonical(event: OpenEvent, expected: str) -> None:
    assert event.ok, event
    assert event.resolved == expected
    assert event.resolved_canonical
    assert not (event.resolved_truncated or event.resolved_deleted or event.resolved_anonymous)
    assert event.resolved_mntns == event.mntns == own_mntns()


# ---- relative opens, dirfds, '..' and symlinks

def test_relative_open_after_chdir(opens, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "file").write_text("x")

    def child() -> int:
        os.chdir(tmp_path / "sub")
        return os.open("file", os.O_RDONLY)

    pid, fd = run_in_child(child)
    event = opens.one(pid, "file")
    assert event.fd == fd
    assert event.syscall == "openat"
    assert_canonical(event, real(tmp_path / "sub" / "file"))


def test_openat_with_a_dirfd_elsewhere_than_cwd(opens, tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "file").write_text("x")

    def child() -> int:
        os.chdir("/")
        dirfd = os.open(tmp_path / "dir", os.O_RDONLY | os.O_DIRECTORY)
        return os.open("file", os.O_RDONLY, dir_fd=dirfd)

    pid, _ = run_in_child(child)
    assert_canonical(opens.one(pid, "file"), real(tmp_path / "dir" / "file"))


def test_dotdot_segments_and_a_symlink_resolve_to_the_real_file(opens, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "file").write_text("x")
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    passed = "a/b/../../link/./file"

    def child() -> int:
        os.chdir(tmp_path)
        return os.open(passed, os.O_RDONLY)

    pid, _ = run_in_child(child)
    assert_canonical(opens.one(pid, passed), real(tmp_path / "real" / "file"))


def test_a_failed_relative_open_is_directory_joined_with_the_path(opens, tmp_path):
    (tmp_path / "dir").mkdir()
    passed = "dir/../missing"

    def child() -> int:
        os.chdir(tmp_path)
        try:
            os.open(passed, os.O_RDONLY)
        except FileNotFoundError:
            return errno.ENOENT
        return 0

    pid, err = run_in_child(child)
    assert err == errno.ENOENT
    event = opens.one(pid, passed)
    assert event.error == "ENOENT"
    assert event.resolved == f"{real(tmp_path)}/missing"
    assert not event.resolved_canonical
    assert event.resolved_mntns == own_mntns()


def test_a_failed_open_with_a_dirfd_joins_the_dirfd(opens, tmp_path):
    (tmp_path / "dir").mkdir()

    def child() -> None:
        dirfd = os.open(tmp_path / "dir", os.O_RDONLY | os.O_DIRECTORY)
        with contextlib.suppress(FileNotFoundError):
            os.open("missing", os.O_RDONLY, dir_fd=dirfd)

    pid, _ = run_in_child(child)
    event = opens.one(pid, "missing")
    assert event.resolved == f"{real(tmp_path)}/dir/missing"
    assert not event.resolved_canonical


def test_openat2_resolve_in_root_joins_an_absolute_path_to_the_dirfd(opens, tmp_path):
    (tmp_path / "root" / "etc").mkdir(parents=True)
    (tmp_path / "root" / "etc" / "conf").write_text("x")

    def child() -> list[int]:
        dirfd = os.open(tmp_path / "root", os.O_RDONLY | os.O_DIRECTORY)
        return [openat2(dirfd, "/etc/conf", os.O_RDONLY, RESOLVE_IN_ROOT),
                openat2(dirfd, "/etc/missing", os.O_RDONLY, RESOLVE_IN_ROOT)]

    pid, (found, missing) = run_in_child(child)
    assert found >= 0 and missing == -errno.ENOENT
    assert_canonical(opens.one(pid, "/etc/conf"), real(tmp_path / "root" / "etc" / "conf"))
    failed = opens.one(pid, "/etc/missing")
    assert failed.syscall == "openat2" and failed.resolve == RESOLVE_IN_ROOT
    assert failed.resolved == f"{real(tmp_path)}/root/etc/missing"
    assert not failed.resolved_canonical


# ---- mounts: tmpfs and bind, made here and removed after

@contextlib.contextmanager
def mounted(*mount_args: str, target: Path) -> Iterator[Path]:
    target.mkdir(exist_ok=True)
    subprocess.run(["mount", *mount_args, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def test_an_open_on_a_tmpfs_mounted_by_the_test(opens, tmp_path):
    with mounted("-t", "tmpfs", "eo-test", target=tmp_path / "mnt") as mnt:
        (mnt / "inner").mkdir()
        (mnt / "inner" / "file").write_text("x")
        passed = str(mnt / "inner" / "file")
        pid, _ = run_in_child(lambda: os.open(passed, os.O_RDONLY))
        assert_canonical(opens.one(pid, passed), real(mnt / "inner" / "file"))


def test_an_open_across_a_bind_mount_resolves_through_the_mount_point(opens, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "file").write_text("x")
    with mounted("--bind", str(tmp_path / "src"), target=tmp_path / "bind") as bind:
        def child() -> int:
            os.chdir(bind)
            return os.open("file", os.O_RDONLY)

        pid, _ = run_in_child(child)
        assert_canonical(opens.one(pid, "file"), f"{real(tmp_path)}/bind/file")


def test_a_file_on_a_lazily_unmounted_tmpfs_is_anonymous(opens, tmp_path):
    """Detached from every namespace: no path to give, so marked, never a wrong path."""
    target = tmp_path / "gone"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "eo-gone", str(target)], check=True)
    try:
        (target / "inner").mkdir()
        (target / "inner" / "file").write_text("x")

        def child() -> str:
            fd = os.open(target / "inner" / "file", os.O_RDONLY)
            subprocess.run(["umount", "-l", str(target)], check=True)
            magic = f"/proc/self/fd/{fd}"
            os.open(magic, os.O_RDONLY)
            return magic

        pid, magic = run_in_child(child)
    finally:
        if os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], check=True)
    event = opens.one(pid, magic)
    assert event.ok
    assert event.resolved_anonymous
    assert event.resolved_mntns == 0
    assert event.resolved == "/inner/file"  # the path inside the detached tmpfs
    assert shown(event, own_mntns()) == "(anon)/inner/file"


# ---- deleted and anonymous files

def test_an_unlinked_file_reopened_through_proc_is_deleted(opens, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("x")

    def child() -> str:
        fd = os.open(victim, os.O_RDONLY)
        os.unlink(victim)
        magic = f"/proc/self/fd/{fd}"
        os.open(magic, os.O_RDONLY)
        return magic

    pid, magic = run_in_child(child)
    event = opens.one(pid, magic)
    assert event.ok
    assert event.resolved == real(tmp_path) + "/victim"
    assert event.resolved_deleted
    assert not event.resolved_anonymous
    assert shown(event, own_mntns()) == f"(deleted){real(tmp_path)}/victim"


def test_an_o_tmpfile_is_deleted_and_named_like_the_kernel_does(opens, tmp_path):
    def child() -> int:
        fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR, 0o600)
        return os.fstat(fd).st_ino

    pid, ino = run_in_child(child)
    event = opens.one(pid, str(tmp_path))
    assert event.resolved == f"{real(tmp_path)}/#{ino}"
    assert event.resolved_deleted and event.resolved_canonical


def test_a_memfd_reopened_through_proc_is_anonymous(opens):
    def child() -> str:
        fd = os.memfd_create("eo-memfd")
        magic = f"/proc/self/fd/{fd}"
        os.open(magic, os.O_RDWR)
        return magic

    pid, magic = run_in_child(child)
    event = opens.one(pid, magic)
    assert event.ok
    assert event.resolved_anonymous
    assert event.resolved == "/memfd:eo-memfd"
    assert event.resolved_mntns == 0
    assert shown(event, own_mntns()) == "(anon)/memfd:eo-memfd"


def test_a_pipe_reopened_through_proc_is_anonymous(opens):
    def child() -> list[Any]:
        read_end, _write_end = os.pipe()
        magic = f"/proc/self/fd/{read_end}"
        os.open(magic, os.O_RDONLY | os.O_NONBLOCK)
        return [magic, os.fstat(read_end).st_ino]

    pid, (magic, ino) = run_in_child(child)
    event = opens.one(pid, magic)
    assert event.ok
    assert event.resolved_anonymous
    assert event.resolved == f"/pipe:[{ino}]"
    assert not event.resolved_deleted


# ---- chroot and mount namespaces

def test_inside_a_chroot_the_path_is_the_real_one_from_the_namespace_root(opens, tmp_path):
    jail = tmp_path / "jail"
    (jail / "etc").mkdir(parents=True)
    (jail / "etc" / "conf").write_text("x")

    def child() -> None:
        os.chroot(jail)
        os.chdir("/")
        os.open("/etc/conf", os.O_RDONLY)
        os.open("etc/conf", os.O_RDONLY)
        with contextlib.suppress(FileNotFoundError):
            os.open("/etc/missing", os.O_RDONLY)

    pid, _ = run_in_child(child)
    assert_canonical(opens.one(pid, "/etc/conf"), real(jail / "etc" / "conf"))
    assert_canonical(opens.one(pid, "etc/conf"), real(jail / "etc" / "conf"))
    failed = opens.one(pid, "/etc/missing")
    assert failed.resolved == f"{real(jail)}/etc/missing"
    assert not failed.resolved_canonical


def test_a_file_in_a_new_mount_namespace_is_marked_with_that_namespace(opens, tmp_path):
    (tmp_path / "mnt").mkdir()
    (tmp_path / "plain").write_text("x")

    def child() -> int:
        unshare_mount_namespace()
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "eo-ns", str(tmp_path / "mnt")], check=True)
        subprocess.run(["touch", str(tmp_path / "mnt" / "file")], check=True)
        os.open(tmp_path / "mnt" / "file", os.O_RDONLY)
        os.open(tmp_path / "plain", os.O_RDONLY)
        return os.stat("/proc/self/ns/mnt").st_ino

    pid, child_ns = run_in_child(child)
    ours = own_mntns()
    assert child_ns != ours
    assert not os.path.ismount(tmp_path / "mnt")  # the mount stayed in the child's namespace
    for name in ("mnt/file", "plain"):
        event = opens.one(pid, str(tmp_path / name))
        assert event.resolved == f"{real(tmp_path)}/{name}"
        assert event.resolved_canonical
        assert event.mntns == event.resolved_mntns == child_ns
        assert shown(event, ours) == f"(mnt:{child_ns}){real(tmp_path)}/{name}"


# ---- long paths

def make_deep_dir(base: Path, total: int) -> str:
    """A directory whose absolute path is exactly ``total`` bytes (may pass PATH_MAX).

    Made with fd-relative mkdirat/openat, so no syscall ever sees more than one name.
    """
    base.mkdir(exist_ok=True)
    path = real(base)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while len(path) < total:
            name = "d" * min(200, total - len(path) - 1)
            if total - len(path) - 1 - len(name) in range(1, 2):
                name = name[:-2]  # never leave room for only an empty name
            os.mkdir(name, dir_fd=fd)
            next_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
            path = f"{path}/{name}"
    finally:
        os.close(fd)
    assert len(path) == total
    return path


def open_in_deep_dir(deep: str, name: str, flags: int) -> Callable[[], int]:
    """A child action: walk down into ``deep`` fd by fd, chdir there, open ``name``."""
    def action() -> int:
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        for part in deep.strip("/").split("/"):
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        os.fchdir(fd)
        try:
            return os.open(name, flags, 0o600)
        except OSError as err:
            return -err.errno

    return action


def test_a_4000_byte_path_is_resolved_whole(opens, tmp_path):
    deep = make_deep_dir(tmp_path, 4000 - len("/leaf"))
    pid, fd = run_in_child(open_in_deep_dir(deep, "leaf", os.O_CREAT | os.O_WRONLY))
    assert fd >= 0
    event = opens.one(pid, "leaf")
    assert len(event.resolved_bytes) == 4000
    assert_canonical(event, f"{deep}/leaf")


def test_a_4095_byte_resolved_path_is_whole_and_4096_is_truncated(opens, tmp_path):
    fits = make_deep_dir(tmp_path / "a", PATH_MAX - 1 - len("/leaf"))
    too_long = make_deep_dir(tmp_path / "b", PATH_MAX - len("/leaf"))
    flags = os.O_CREAT | os.O_WRONLY
    pid_fits, _ = run_in_child(open_in_deep_dir(fits, "leaf", flags))
    pid_long, _ = run_in_child(open_in_deep_dir(too_long, "leaf", flags))
    assert_canonical(opens.one(pid_fits, "leaf"), f"{fits}/leaf")
    cut = opens.one(pid_long, "leaf")
    assert cut.resolved_truncated
    assert f"{too_long}/leaf".endswith(cut.resolved)


def test_a_path_deeper_than_path_max_keeps_its_leaf_end(opens, tmp_path):
    deep = make_deep_dir(tmp_path / "a", 4000)
    leaf = "f" * 200
    full = f"{deep}/{leaf}"
    pid, fd = run_in_child(open_in_deep_dir(deep, leaf, os.O_CREAT | os.O_WRONLY))
    assert fd >= 0
    event = opens.one(pid, leaf)
    assert event.ok and event.resolved_canonical
    assert event.resolved_truncated
    resolved = event.resolved_bytes
    assert resolved.startswith(b"/")  # cut at a component boundary
    assert len(resolved) <= PATH_MAX - 1
    assert os.fsencode(full).endswith(resolved)
    assert resolved.endswith(b"/" + leaf.encode())
    assert shown(event, own_mntns()).startswith("...")


def test_a_failed_open_deeper_than_path_max_is_truncated_too(opens, tmp_path):
    deep = make_deep_dir(tmp_path / "a", 4000)
    leaf = "m" * 200
    pid, ret = run_in_child(open_in_deep_dir(deep, leaf, os.O_RDONLY))
    assert ret == -errno.ENOENT
    event = opens.one(pid, leaf)
    assert not event.resolved_canonical
    assert event.resolved_truncated
    assert os.fsencode(f"{deep}/{leaf}").endswith(event.resolved_bytes)


def test_a_cut_failed_path_keeps_its_dotdot(opens, tmp_path):
    deep = make_deep_dir(tmp_path / "a", 4000)
    passed = "../" + "m" * 200
    pid, ret = run_in_child(open_in_deep_dir(deep, passed, os.O_RDONLY))
    assert ret == -errno.ENOENT
    event = opens.one(pid, passed)
    assert event.resolved_truncated and not event.resolved_canonical
    # not normalised: a leading '..' would pop a component that was cut off
    assert event.resolved.endswith("/" + passed)
    assert os.fsencode(f"{deep}/{passed}").endswith(event.resolved_bytes)


def open_in_child(passed: str) -> tuple[int, int]:
    """A child opens ``passed``: (its pid, the errno, 0 if the open succeeded)."""
    def child() -> int:
        try:
            os.open(passed, os.O_RDONLY)
        except OSError as err:
            return err.errno
        return 0

    return run_in_child(child)


def test_an_absolute_path_too_long_to_read_whole_resolves_to_nothing(opens):
    passed = "/" + "x" * (PATH_MAX + 100)
    pid, err = open_in_child(passed)
    assert err == errno.ENAMETOOLONG
    (event,) = collect(opens.tracer, lambda e: e.pid == pid and e.truncated,
                       lambda evs: len(evs) >= 1)
    assert event.path_bytes == os.fsencode(passed)[:PATH_MAX - 1]
    assert event.resolved is None


@pytest.mark.parametrize(("length", "cut"), [(PATH_MAX - 1, False), (PATH_MAX, True)])
def test_a_path_as_passed_is_whole_up_to_4095_bytes_and_flagged_past(opens, length, cut):
    passed = ("/" + "d/" * PATH_MAX)[:length - 1] + "z"
    assert len(passed) == length
    pid, _ = open_in_child(passed)
    (event,) = collect(opens.tracer, lambda e: e.pid == pid and e.path_bytes.startswith(b"/d/"),
                       lambda evs: len(evs) >= 1)
    assert event.truncated is cut
    assert event.path_bytes == os.fsencode(passed)[:PATH_MAX - 1]
