"""The cgroup v2 hierarchy as user space sees it: its mounts, and cgroup ids to paths.

The kernel reports a cgroup by id (``bpf_get_current_cgroup_id``): on cgroup2 that is the
kernfs inode number of the cgroup's directory, so a walk of a cgroup2 mount finds it
(``st_ino``). The root cgroup is id 1 whether or not cgroup2 is mounted anywhere.
Paths are the hierarchy's ("/system.slice/x.scope"), as /proc/PID/cgroup's "0::" line.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

ROOT_ID = 1
_MOUNTINFO = "/proc/self/mountinfo"
# a miss rescans the hierarchy, but not more often than this: ids of cgroups that are
# gone (or were never on this machine) must not make every event walk the tree
_RESCAN_INTERVAL = 1.0
_MAX_CACHED = 1 << 16


@dataclass(frozen=True)
class Mount:
    """A cgroup2 mount: ``directory`` shows the hierarchy's ``root`` (not "/" inside a
    cgroup namespace, or for a bind mount of a sub-tree)."""

    directory: str
    root: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \\ooo
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def mounts(mountinfo: str = _MOUNTINFO) -> list[Mount]:
    """Every cgroup2 mount of this mount namespace, in mount order."""
    found = []
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as lines:
            for line in lines:
                fields = line.split()
                try:
                    sep = fields.index("-")
                except ValueError:
                    continue
                if fields[sep + 1] == "cgroup2":
                    found.append(Mount(_unescape(fields[4]), _unescape(fields[3])))
    except OSError:
        pass
    return found


def mount_of(path: str, mountinfo: str = _MOUNTINFO) -> tuple[str, str] | None:
    """(mount point, filesystem type) of the mount that holds ``path``."""
    real = os.path.realpath(path)
    best: tuple[str, str] | None = None
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as lines:
            for line in lines:
                fields = line.split()
                try:
                    sep = fields.index("-")
                except ValueError:
                    continue
                point = _unescape(fields[4])
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                # the last mount on the longest prefix is the one on top
                if inside and (best is None or len(point) >= len(best[0])):
                    best = (point, fields[sep + 1])
    except OSError:
        return None
    return best


def hierarchy_path(directory: str, mount: Mount) -> str:
    """The cgroup path of a directory under a cgroup2 mount."""
    rel = os.path.relpath(os.path.realpath(directory), mount.directory)
    base = mount.root.rstrip("/")
    return "/" if rel == "." and not base else (base + "/" + rel if rel != "." else base)


def cgroup2_directory(path: str) -> tuple[str, str] | None:
    """``path`` as (directory, cgroup path) if it is a directory on a cgroup2 mount, or
    a cgroup path ("/a/b") found under one; None otherwise."""
    if os.path.isdir(path):
        where = mount_of(path)
        if where is not None and where[1] == "cgroup2":
            mount = next((m for m in mounts() if m.directory == where[0]), None)
            if mount is not None:
                return os.path.realpath(path), hierarchy_path(path, mount)
    # not a cgroup2 directory (or none of this name): a cgroup path, as events show it
    if path.startswith("/"):
        for mount in mounts():
            rel = path.rstrip("/")
            root = mount.root.rstrip("/")
            if rel == root or rel.startswith(root + "/"):
                candidate = mount.directory + rel[len(root):]
                if os.path.isdir(candidate):
                    return candidate, rel or "/"
    return None


def walk(mount: Mount):
    """(directory, cgroup path, id) of every cgroup under a cgroup2 mount."""
    for directory, subdirs, _ in os.walk(mount.directory, onerror=lambda exc: None):
        subdirs[:] = [d for d in subdirs
                      if not os.path.islink(os.path.join(directory, d))]
        try:
            ident = os.stat(directory).st_ino
        except OSError:
            continue
        yield directory, hierarchy_path(directory, mount), ident


class Resolver:
    """cgroup id -> cgroup path (None: not found), from walks of the cgroup2 mounts,
    cached. The first miss of an id rescans (a cgroup made since the last walk); an id
    that missed before, only once _RESCAN_INTERVAL has passed since the last walk."""

    def __init__(self) -> None:
        self._paths: dict[int, str] = {ROOT_ID: "/"}
        self._missed: set[int] = set()
        self._scanned = -_RESCAN_INTERVAL

    def rescan(self) -> None:
        self._scanned = time.monotonic()
        if len(self._paths) > _MAX_CACHED:
            self._paths = {ROOT_ID: "/"}
        for mount in mounts():
            for _, path, ident in walk(mount):
                self._paths[ident] = path

    def path(self, cgroup_id: int) -> str | None:
        path = self._paths.get(cgroup_id)
        if path is None:
            recent = time.monotonic() - self._scanned < _RESCAN_INTERVAL
            if cgroup_id in self._missed and recent:
                return None
            if len(self._missed) > _MAX_CACHED:
                self._missed.clear()
            self._missed.add(cgroup_id)
            self.rescan()
            path = self._paths.get(cgroup_id)
        return path


_resolver: Resolver | None = None


def path_of(cgroup_id: int) -> str | None:
    """The cgroup path of an id, by the process-wide resolver."""
    global _resolver
    if _resolver is None:
        _resolver = Resolver()
    return _resolver.path(cgroup_id)


def container_directories(prefix: str) -> dict[str, list[str]]:
    """The containers whose id ``prefix`` names (containers.matches_id), each with its
    cgroup directories (one per cgroup2 mount that shows it): id -> directories."""
    from .containers import container_of, matches_id

    found: dict[str, list[str]] = {}
    for mount in mounts():
        for directory, path, _ in walk(mount):
            container = container_of(path)
            # the container's own directory: its descendants are under it
            if container is None or container.cgroup != path or not matches_id(container,
                                                                              prefix):
                continue
            found.setdefault(container.id, []).append(directory)
    return found
