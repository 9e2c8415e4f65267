"""Run by a wheel's virtualenv (``python -I wheel_probe.py FILE``), usually where the
system's libbpf and libelf are hidden: which echo_open and which libbpf this interpreter
loads, and whether a Tracer sees a child open FILE. Prints one JSON object; only the
standard library and echo_open are used (this file is not part of the wheel).
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import time
from pathlib import Path


def mapped(*names: str) -> list[str]:
    """Files mapped into this process whose name starts with one of names."""
    paths = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and Path(fields[5]).name.startswith(names):
            paths.add(fields[5])
    return sorted(paths)


def main(target: str) -> dict:
    import echo_open
    import echo_open._libbpf as binding
    from echo_open import Filters, Tracer, Tuning
    from echo_open.loader import libbpf_version

    # held before its open until the tracer is attached
    child = subprocess.Popen(
        [sys.executable, "-I", "-c", "import sys; sys.stdin.readline(); open(sys.argv[1]).close()",
         target], stdin=subprocess.PIPE, text=True)
    events = []
    with Tracer(Filters(pids=[child.pid]), Tuning(poll_interval=0.05)) as tracer:
        child.stdin.write("go\n")
        child.stdin.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(e.path == target for e in events):
            events.extend(tracer.read(0.2))
    child.wait(30)
    ldd = subprocess.run(["ldd", binding.__file__], capture_output=True, text=True)
    try:  # by the name the system's copy has (the wheel's is renamed): hidden, it fails
        ctypes.CDLL("libbpf.so.1")
        system_libbpf = "loaded"
    except OSError as e:
        system_libbpf = f"OSError: {e}"
    return {
        "python": list(sys.version_info[:3]),
        "echo_open": echo_open.__file__,
        "binding": binding.__file__,
        "libbpf_version": list(libbpf_version()),
        "mapped": mapped("libbpf", "libelf"),
        "ldd": ldd.stdout,
        "system_libbpf": system_libbpf,
        "child_pid": child.pid,
        "child_status": child.returncode,
        "events": [{"pid": e.pid, "comm": e.comm, "syscall": e.syscall, "path": e.path,
                    "fd": e.fd, "error": e.error, "resolved": e.resolved} for e in events],
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
