"""Container ids from cgroup v2 paths: pure functions of the path, no system access.

A container runtime puts each container in a cgroup of its own and names it after the
container; everything below that cgroup belongs to the container too. The names:

  docker (cgroupfs driver)       /docker/<64 hex>
  docker (systemd driver)        /system.slice/docker-<64 hex>.scope
  containerd / CRI (cgroupfs)    /kubepods/besteffort/pod<uid>/<64 hex>
  containerd / CRI (systemd)     .../kubepods-...-pod<uid>.slice/cri-containerd-<64 hex>.scope
  CRI-O                          .../crio-<64 hex>.scope
  podman                         /machine.slice/libpod-<64 hex>.scope
  systemd-nspawn                 /machine.slice/machine-<name>.scope

Not containers: podman's and CRI-O's monitors (``libpod-conmon-<hex>.scope``,
``crio-conmon-<hex>.scope``), which run beside the container on the host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# the table shows ids cut to this many hex digits, as `docker ps` does
SHORT_ID_LEN = 12

_HEX_ID = r"[0-9a-f]{64}"
# one cgroup directory name -> (runtime, its container id); the first rule that matches
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"docker-({_HEX_ID})\.scope"), "docker"),
    (re.compile(rf"cri-containerd-({_HEX_ID})\.scope"), "containerd"),
    (re.compile(rf"crio-({_HEX_ID})\.scope"), "cri-o"),
    (re.compile(rf"libpod-({_HEX_ID})\.scope"), "podman"),
    (re.compile(r"machine-(.+)\.scope"), "systemd-nspawn"),
    # a bare id: docker's cgroupfs driver, kubepods' pods, and other runtimes alike
    (re.compile(f"({_HEX_ID})"), "cgroupfs"),
)
# systemd escapes a unit name's '-' (and other bytes) as \xNN
_UNIT_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True)
class Container:
    """A container a cgroup belongs to: ``id`` is the runtime's full id (64 hex digits)
    or, for systemd-nspawn, the machine name; ``cgroup`` the container's own cgroup
    directory (a prefix of the path it was found in)."""

    runtime: str
    id: str
    cgroup: str

    @property
    def short_id(self) -> str:
        """The id as `docker ps` shows it: 12 hex digits (a machine name whole)."""
        if self.runtime == "systemd-nspawn":
            return self.id
        return self.id[:SHORT_ID_LEN]


def _match(name: str) -> tuple[str, str] | None:
    for rule, runtime in _RULES:
        match = rule.fullmatch(name)
        if match:
            ident = match.group(1)
            if runtime == "systemd-nspawn":
                # libpod containers run under machine.slice too, but as libpod-*: already
                # matched; a machine name is a unit name, escaped
                ident = _UNIT_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), ident)
                if not ident:
                    return None
            return runtime, ident
    return None


def container_of(cgroup_path: str | None) -> Container | None:
    """The container a cgroup v2 path (``/system.slice/docker-<id>.scope/...``) belongs
    to: the innermost one named on the path (a container inside a container is that
    inner one); None outside containers, or for no path."""
    if not cgroup_path:
        return None
    found = None
    parts = cgroup_path.split("/")
    for depth, name in enumerate(parts):
        match = _match(name)
        if match:
            found = Container(match[0], match[1], "/".join(parts[:depth + 1]) or "/")
    return found


def matches_id(container: Container, prefix: str) -> bool:
    """``prefix`` names this container: a prefix of its id (hex ids in any case), or
    the whole machine name."""
    if container.runtime == "systemd-nspawn":
        return container.id == prefix
    return bool(prefix) and container.id.startswith(prefix.lower())
