"""Namespace names: network namespaces by the name `ip netns` (or docker) gave them.

A named network namespace is a file bind-mounted over the namespace (`ip netns add NAME`
makes /var/run/netns/NAME; docker keeps its own in /var/run/docker/netns): its inode is
the namespace's, the number the kernel reports. pyroute2 lists them; it is imported only
here, and only when a name is looked up (importing it costs ~0.2 s).
"""

from __future__ import annotations

import os

# where named network namespaces are kept: iproute2's, then docker's
NETNS_DIRS = ("/var/run/netns", "/var/run/docker/netns")


def named_netns() -> dict[str, int]:
    """Every named network namespace: name -> namespace inode (the first folder wins)."""
    import pyroute2.netns  # lazily: see the module's docstring

    found: dict[str, int] = {}
    for folder in NETNS_DIRS:
        if not os.path.isdir(folder):
            continue
        try:
            names = pyroute2.netns.listnetns(folder)
        except OSError:
            continue
        for name in names:
            try:
                inode = os.stat(os.path.join(folder, name)).st_ino
            except OSError:
                continue  # removed under us, or a leftover file of a deleted namespace
            found.setdefault(name, inode)
    return found


def netns_inode(name_or_id: str) -> int | None:
    """A network namespace named NAME, or given by its inode number: the inode; None when
    no namespace has that name."""
    if name_or_id.isdigit():
        return int(name_or_id)
    return named_netns().get(name_or_id)


def own_namespace(kind: str, pid: int | str = "self") -> int:
    """The inode of a process's namespace of that kind (``mnt``, ``pid``, ``net``, ...)."""
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
