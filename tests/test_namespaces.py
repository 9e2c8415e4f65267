"""Namespaces, cgroups and containers, against the real kernel: processes in namespaces
and cgroups the tests make (unshare, ip netns, a cgroup2 mount), each event's fields
checked against /proc, and the kernel's filters made to keep exactly their opens."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import ECHO_OPEN, Cli

from conftest import Child, collect
from echo_open import Filters, InvalidSetting
from echo_open.cgroups import mounts

UNSHARE_PID = ("unshare", "--pid", "--fork", "--mount-proc")


def host_pid(name: str, timeout: float = 5.0) -> int:
    """The pid (in our namespace) of the one process whose comm is ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if (entry / "comm").read_text().strip() == name[:15]:
                        found.append(int(entry.name))
        if len(found) == 1:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no single process is named {name}")


def ns_inode(pid: int, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def nspid_of(pid: int) -> int:
    """The innermost pid of /proc/PID/status's NSpid line: the pid inside its namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid line")


def opens_of(tracer, pid: int, path: str, timeout: float = 10.0):
    return collect(tracer, lambda e: e.pid == pid and e.path == path,
                   lambda evs: len(evs) >= 1, timeout)


class NsChild:
    """An opener started under a namespace-making prefix (unshare, ip netns exec), its
    pid in our namespace found by its name."""

    def __init__(self, path: Path, prefix: tuple[str, ...] = ()) -> None:
        self.path = str(path)
        self.child = Child(f"openat:.:{path}", prefix=prefix,
                           name=f"eo-ns-{secrets.token_hex(4)}")
        self.pid = host_pid(self.child.name)

    def go(self) -> list[dict]:
        return self.child.go()


# ---- namespaces


def test_pid_namespace_fields_match_proc(start_tracer, tmp_path):
    inside = NsChild(tmp_path / "in-pidns", UNSHARE_PID)
    tracer = start_tracer(Filters(pids=[inside.pid]))
    expected = {kind: ns_inode(inside.pid, kind) for kind in ("pid", "mnt", "net", "user")}
    nspid = nspid_of(inside.pid)
    inside.go()
    [event] = opens_of(tracer, inside.pid, inside.path)
    assert event.pid == inside.pid != nspid == event.nspid == 1  # pid 1 of its namespace
    assert event.pidns == expected["pid"] != ns_inode(os.getpid(), "pid")
    assert event.mntns == expected["mnt"] != ns_inode(os.getpid(), "mnt")  # --mount-proc
    assert event.netns == expected["net"] == ns_inode(os.getpid(), "net")
    assert event.userns == expected["user"] == ns_inode(os.getpid(), "user")


def test_own_namespaces_outside_containers(start_tracer, tmp_path):
    child = NsChild(tmp_path / "plain")
    tracer = start_tracer(Filters(pids=[child.pid]))
    child.go()
    [event] = opens_of(tracer, child.pid, child.path)
    assert event.nspid == event.pid == child.pid
    for kind, value in (("pid", event.pidns), ("mnt", event.mntns), ("net", event.netns),
                        ("user", event.userns)):
        assert value == ns_inode(os.getpid(), kind), kind


def test_net_and_user_namespaces(start_tracer, tmp_path):
    inside = NsChild(tmp_path / "in-netns", ("unshare", "--net", "--user"))
    tracer = start_tracer(Filters(pids=[inside.pid]))
    net, user = ns_inode(inside.pid, "net"), ns_inode(inside.pid, "user")
    inside.go()
    [event] = opens_of(tracer, inside.pid, inside.path)
    assert event.netns == net != ns_inode(os.getpid(), "net")
    assert event.userns == user != ns_inode(os.getpid(), "user")
    assert event.pidns == ns_inode(os.getpid(), "pid")


@pytest.mark.parametrize(("kind", "prefix"), [
    ("pid", UNSHARE_PID), ("mnt", ("unshare", "--mount")), ("net", ("unshare", "--net"))])
def test_namespace_filter_keeps_exactly_its_opens(start_tracer, tmp_path, kind, prefix):
    inside = NsChild(tmp_path / "inside", prefix)
    outside = NsChild(tmp_path / "outside")
    inode = ns_inode(inside.pid, kind)
    tracer = start_tracer(Filters(**{f"{kind}ns": inode}))
    outside.go()  # first: its open would be in the ring before the inside one's
    inside.go()
    events = collect(tracer, lambda e: e.path.startswith(str(tmp_path)),
                     lambda evs: any(e.pid == inside.pid for e in evs))
    assert [(e.pid, e.path) for e in events] == [(inside.pid, inside.path)]
    assert all(getattr(e, f"{kind}ns") == inode for e in events)
    assert tracer.stats().filtered > 0


@pytest.fixture
def named_netns() -> Iterator[str]:
    name = f"eo-test-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


def test_netns_by_name_in_the_cli(tmp_path, named_netns):
    inside = NsChild(tmp_path / "named", ("ip", "netns", "exec", named_netns))
    outside = NsChild(tmp_path / "not-named")
    inode = os.stat(f"/var/run/netns/{named_netns}").st_ino
    assert ns_inode(inside.pid, "net") == inode
    cli = Cli("--json", "--netns", named_netns, "--path-prefix", str(tmp_path))
    outside.go()
    inside.go()
    lines = cli.lines_until(lambda ls: any(inside.path in line for line in ls))
    status, _ = cli.stop()
    assert status == 0
    records = [json.loads(line) for line in lines]
    assert [(r["pid"], r["path"], r["netns"]) for r in records] == [
        (inside.pid, inside.path, inode)]


@pytest.mark.parametrize(("args", "says"), [
    (("--netns", "eo-no-such-namespace"), "no network namespace is named 'eo-no-such-namespace'"),
    (("--cgroup", "/tmp"), "is not a cgroup v2 directory"),
    (("--container", "e0e0e0e0e0e0"), "no container's id starts with 'e0e0e0e0e0e0'"),
    (("--mntns", "0"), "--mntns"),
    (("--pidns", "4294967296"), "no namespace inode is 4294967296"),
])
def test_bad_namespace_and_cgroup_options_are_one_line_usage_errors(args, says):
    for command in ((), ("top",)):
        done = subprocess.run([ECHO_OPEN, *command, *args, "-d", "1"], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 2, done.stderr
        assert says in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not done.stdout


# ---- cgroups and containers


@pytest.fixture(scope="module")
def cgroup2() -> Iterator[Path]:
    """The root of a cgroup2 mount: one already there, or one mounted for these tests."""
    for mount in mounts():
        if mount.root == "/":
            yield Path(mount.directory)
            return
    where = Path(tempfile.mkdtemp(prefix="eo-cgroup2-"))
    subprocess.run(["mount", "-t", "cgroup2", "none", str(where)], check=True)
    yield where
    subprocess.run(["umount", str(where)], check=True)
    where.rmdir()


@pytest.fixture
def make_cgroup(cgroup2) -> Iterator:
    """make_cgroup("a/b") -> the new cgroup directory; all removed after the test (their
    processes moved back to the root first)."""
    made: list[Path] = []

    def make(relative: str) -> Path:
        path = cgroup2
        for part in relative.split("/"):
            path = path / part
            if not path.exists():
                path.mkdir()
                made.append(path)
        return path

    yield make
    for path in reversed(made):
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (cgroup2 / "cgroup.procs").write_text(pid)
        for _ in range(50):  # a process that just exited may hold it a moment
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def move_into(cgroup: Path, pid: int) -> None:
    (cgroup / "cgroup.procs").write_text(str(pid))


def proc_cgroup(pid: int) -> str:
    """The cgroup v2 path of a process, from its "0::" line."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError("no cgroup v2 line")


def test_cgroup_fields_and_filter_with_descendants(start_tracer, tmp_path, make_cgroup,
                                                   cgroup2):
    top = f"eo-test-{secrets.token_hex(3)}"
    inner = make_cgroup(f"{top}/inner")
    inside = NsChild(tmp_path / "in-cgroup")
    outside = NsChild(tmp_path / "out-of-cgroup")
    move_into(inner, inside.pid)  # before it opens anything
    in_proc = proc_cgroup(inside.pid)
    assert in_proc == f"/{top}/inner"
    # the filter names the parent: a process in a cgroup below it matches
    tracer = start_tracer(Filters(cgroups=[cgroup2 / top]))
    outside.go()
    inside.go()
    events = collect(tracer, lambda e: e.path.startswith(str(tmp_path)),
                     lambda evs: any(e.pid == inside.pid for e in evs))
    assert [(e.pid, e.path) for e in events] == [(inside.pid, inside.path)]
    [event] = events
    assert event.cgroup_id == os.stat(inner).st_ino
    assert event.cgroup == in_proc
    assert event.container is None


def test_cgroup_given_as_its_hierarchy_path(make_cgroup, cgroup2):
    top = f"eo-test-{secrets.token_hex(3)}"
    made = make_cgroup(top)
    assert Filters(cgroups=[f"/{top}"]).cgroups == (str(made),)
    # "/" is a directory of every machine, but not a cgroup2 one: the hierarchy's root
    [root] = Filters(cgroups=["/"]).cgroups
    assert os.stat(root).st_ino == 1  # the root cgroup's id
    with pytest.raises(InvalidSetting, match="not a cgroup v2 directory"):
        Filters(cgroups=[f"/{top}-missing"])


def test_outside_any_cgroup2_mount_is_refused(tmp_path):
    with pytest.raises(InvalidSetting) as raised:
        Filters(cgroups=[tmp_path])
    assert raised.value.setting == "cgroups"


@pytest.fixture
def fake_docker(make_cgroup) -> tuple[str, Path]:
    """A container's cgroup as docker's systemd driver names it: (its id, directory)."""
    ident = secrets.token_hex(32)
    return ident, make_cgroup(f"system.slice/docker-{ident}.scope")


def test_container_id_derived_and_filtered_api(start_tracer, tmp_path, fake_docker):
    ident, directory = fake_docker
    inside = NsChild(tmp_path / "in-container")
    outside = NsChild(tmp_path / "on-host")
    move_into(directory, inside.pid)
    in_proc = proc_cgroup(inside.pid)
    filters = Filters(containers=[ident[:12]])
    assert filters.container_cgroups == (str(directory),)
    tracer = start_tracer(filters)
    outside.go()
    inside.go()
    events = collect(tracer, lambda e: e.path.startswith(str(tmp_path)),
                     lambda evs: any(e.pid == inside.pid for e in evs))
    assert [(e.pid, e.path) for e in events] == [(inside.pid, inside.path)]
    [event] = events
    assert event.container == ident
    assert event.cgroup == f"/system.slice/docker-{ident}.scope" == in_proc
    assert event.container_info.runtime == "docker"


def test_container_in_json_and_table_of_the_cli(tmp_path, fake_docker):
    ident, directory = fake_docker
    inside = NsChild(tmp_path / "in-container")
    outside = NsChild(tmp_path / "on-host")
    move_into(directory, inside.pid)
    json_cli = Cli("--json", "--container", ident[:12], "--path-prefix", str(tmp_path))
    table_cli = Cli("-C", "--path-prefix", str(tmp_path))
    outside.go()
    inside.go()
    lines = json_cli.lines_until(lambda ls: any(inside.path in line for line in ls))
    table = table_cli.lines_until(lambda ls: sum(str(tmp_path) in line for line in ls) >= 2)
    assert json_cli.stop()[0] == 0 and table_cli.stop()[0] == 0
    records = [json.loads(line) for line in lines]
    assert [(r["pid"], r["path"], r["container"], r["cgroup"], r["cgroup_id"])
            for r in records] == [(inside.pid, inside.path, ident,
                                   f"/system.slice/docker-{ident}.scope",
                                   os.stat(directory).st_ino)]
    assert table[0].split()[:3] == ["CONTAINER", "PID", "TID"]
    rows = {int(line.split()[1]): line.split()[0] for line in table[1:]
            if str(tmp_path) in line}
    assert rows == {inside.pid: ident[:12], outside.pid: "-"}


def test_ambiguous_container_prefix(make_cgroup):
    first, second = "ab" + secrets.token_hex(31), "ab" + secrets.token_hex(31)
    make_cgroup(f"system.slice/docker-{first}.scope")
    make_cgroup(f"system.slice/docker-{second}.scope")
    with pytest.raises(InvalidSetting, match="names 2 containers"):
        Filters(containers=["ab"])
    assert Filters(containers=[first[:12]]).container_cgroups  # more of the id: one


def test_filters_combine_container_and_namespace(start_tracer, tmp_path, fake_docker):
    ident, directory = fake_docker
    in_both = NsChild(tmp_path / "both", ("unshare", "--net"))
    container_only = NsChild(tmp_path / "container-only")
    move_into(directory, in_both.pid)
    move_into(directory, container_only.pid)
    tracer = start_tracer(Filters(containers=[ident], netns=ns_inode(in_both.pid, "net")))
    container_only.go()
    in_both.go()
    events = collect(tracer, lambda e: e.path.startswith(str(tmp_path)),
                     lambda evs: any(e.pid == in_both.pid for e in evs))
    assert [(e.pid, e.path) for e in events] == [(in_both.pid, in_both.path)]


def test_pidns_filter_and_fields_in_the_cli_json(tmp_path):
    inside = NsChild(tmp_path / "in-pidns", UNSHARE_PID)
    outside = NsChild(tmp_path / "outside")
    pidns = ns_inode(inside.pid, "pid")
    cli = Cli("--json", "--pidns", str(pidns), "--path-prefix", str(tmp_path))
    outside.go()
    inside.go()
    lines = cli.lines_until(lambda ls: any(inside.path in line for line in ls))
    assert cli.stop()[0] == 0
    records = [json.loads(line) for line in lines]
    assert [(r["pid"], r["nspid"], r["pidns"], r["path"]) for r in records] == [
        (inside.pid, 1, pidns, inside.path)]


def test_names_need_pyroute2_inodes_do_not():
    # startup stays fast: pyroute2 (~0.2 s to import) only for --netns NAME
    script = ("import sys, echo_open.cli, echo_open.render\n"
              "from echo_open.namespaces import netns_inode\n"
              "assert netns_inode('4026531840') == 4026531840\n"
              "assert 'pyroute2' not in sys.modules\n"
              "assert netns_inode('eo-surely-not-a-namespace') is None\n"
              "assert 'pyroute2' in sys.modules\n")
    subprocess.run([sys.executable, "-c", script], check=True)
