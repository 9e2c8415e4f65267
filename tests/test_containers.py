"""Container ids from cgroup paths (containers.py): pure functions, no kernel."""

from __future__ import annotations

import pytest

from echo_open.containers import Container, container_of, matches_id

HEX = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 4


@pytest.mark.parametrize(("path", "runtime", "cgroup"), [
    (f"/docker/{HEX}", "cgroupfs", f"/docker/{HEX}"),
    (f"/system.slice/docker-{HEX}.scope", "docker", f"/system.slice/docker-{HEX}.scope"),
    (f"/kubepods/besteffort/pod1234-5678/{HEX}", "cgroupfs",
     f"/kubepods/besteffort/pod1234-5678/{HEX}"),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice/"
     f"cri-containerd-{HEX}.scope", "containerd",
     f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice/"
     f"cri-containerd-{HEX}.scope"),
    (f"/kubepods.slice/kubepods-pod1.slice/crio-{HEX}.scope", "cri-o",
     f"/kubepods.slice/kubepods-pod1.slice/crio-{HEX}.scope"),
    (f"/machine.slice/libpod-{HEX}.scope", "podman", f"/machine.slice/libpod-{HEX}.scope"),
    # below the container's own cgroup: still that container
    (f"/system.slice/docker-{HEX}.scope/init.scope", "docker",
     f"/system.slice/docker-{HEX}.scope"),
])
def test_container_ids_of_each_runtime(path, runtime, cgroup):
    found = container_of(path)
    assert found == Container(runtime, HEX, cgroup)
    assert found.short_id == HEX[:12]


def test_nspawn_machines_by_name_unescaped():
    found = container_of("/machine.slice/machine-my\\x2dbox.scope/payload")
    assert found == Container("systemd-nspawn", "my-box", "/machine.slice/machine-my\\x2dbox.scope")
    assert found.short_id == "my-box"  # a name is shown whole


@pytest.mark.parametrize("path", [
    None, "", "/", "/user.slice/user-1000.slice/session-2.scope", "/system.slice/cron.service",
    f"/machine.slice/libpod-conmon-{HEX}.scope", f"/kubepods.slice/crio-conmon-{HEX}.scope",
    f"/system.slice/docker-{HEX[:63]}.scope",      # one digit short
    f"/docker/{HEX.upper()}",                      # runtimes write lowercase ids
    "/machine.slice/machine-.scope",
])
def test_not_containers(path):
    assert container_of(path) is None


def test_the_innermost_container_wins():
    found = container_of(f"/docker/{HEX}/docker/{OTHER}")
    assert found is not None and found.id == OTHER
    assert found.cgroup == f"/docker/{HEX}/docker/{OTHER}"


def test_id_prefixes():
    docker = container_of(f"/docker/{HEX}")
    assert matches_id(docker, HEX[:12]) and matches_id(docker, HEX) and matches_id(docker, "0")
    assert matches_id(docker, HEX[:12].upper())
    assert not matches_id(docker, "") and not matches_id(docker, OTHER[:12])
    machine = container_of("/machine.slice/machine-box.scope")
    assert matches_id(machine, "box") and not matches_id(machine, "bo")
