"""contrib/: the systemd unit run as systemd would run it (its user, its capabilities and
nothing more, its signals), and the DaemonSet's arguments run as the CLI takes them."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import Child

ECHO_OPEN = str(Path(sys.executable).parent / "echo-open")
CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
UNIT = CONTRIB / "echo-open.service"
DAEMONSET = CONTRIB / "echo-open-daemonset.yaml"
READY = "echo-open: tracing"
NOBODY = 65534  # what a DynamicUser is to the process: a uid that owns nothing else

# capability numbers (linux/capability.h), for /proc/PID/status's CapEff
CAP_NUMBERS = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38,
               "CAP_BPF": 39}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections: key -> every value given (systemd allows repeats)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture
def service_root() -> Iterator[Path]:
    """A folder the service's user can reach (pytest's own are root's, mode 0700)."""
    root = Path(tempfile.mkdtemp(prefix="eo-service-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


def test_the_unit_has_what_it_needs_and_nothing_more():
    service = parse_unit(UNIT)["Service"]
    caps = set(service["AmbientCapabilities"][0].split())
    assert caps == set(service["CapabilityBoundingSet"][0].split())
    assert caps == set(CAP_NUMBERS), "the README's Needs: BPF, PERFMON, DAC_READ_SEARCH " \
                                     "(+ SYS_ADMIN where perf_event_paranoid > 2)"
    for hardening in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "DynamicUser"):
        assert service[hardening] == ["yes"], hardening
    assert service["ProtectSystem"] == ["strict"]
    assert service["KillSignal"] == ["SIGINT"]
    assert service["Restart"] == ["on-failure"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    argv = shlex.split(service["ExecStart"][0])
    logs = Path(_option(argv, "-o")).parent
    assert logs == Path("/var/log") / service["LogsDirectory"][0]
    assert "--json" in argv and "--max-size" in argv
    assert _option(argv, "--metrics") == "127.0.0.1:9464"


def _setpriv(caps: set[str]) -> list[str]:
    names = ",".join(f"+{c.removeprefix('CAP_').lower()}" for c in sorted(caps))
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            f"--inh-caps=-all,{names}", f"--ambient-caps=-all,{names}",
            f"--bounding-set=-all,{names}", "--no-new-privs", "--"]


def _wait_for(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def _has_line_with(path: Path, text: str) -> bool:
    return path.exists() and any(text in line for line in path.read_text().splitlines())


@pytest.mark.skipif(Path("/proc/1/comm").read_text().strip() == "systemd",
                    reason="systemd is PID 1: test_the_unit_runs_under_systemd runs it")
def test_the_units_command_traces_with_only_its_capabilities(service_root):
    # no systemd here: its ExecStart run as systemd would (an unprivileged user with the
    # unit's ambient capabilities, no others, no new privileges), into a LogsDirectory
    # of our own and a free port; kernel.perf_event_paranoid as it is (3 on 6.1: the
    # unit's CAP_SYS_ADMIN is what lets it attach there)
    service = parse_unit(UNIT)["Service"]
    caps = set(service["AmbientCapabilities"][0].split())
    argv = shlex.split(service["ExecStart"][0])
    logs = service_root / "log"
    logs.mkdir(mode=0o750)
    os.chown(logs, NOBODY, NOBODY)
    out = logs / Path(_option(argv, "-o")).name
    port = _free_port()
    argv = [ECHO_OPEN, *argv[1:]]
    argv[argv.index("-o") + 1] = str(out)
    argv[argv.index("--metrics") + 1] = f"127.0.0.1:{port}"
    proc = subprocess.Popen([*_setpriv(caps), *argv], stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stderr.readline() for _ in range(2)]
        assert any(line.startswith(READY) for line in lines), [*lines, proc.stderr.read()]
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{NOBODY}\s", status, re.M)
        effective = int(re.search(r"^CapEff:\s+(\w+)", status, re.M).group(1), 16)
        assert effective == sum(1 << CAP_NUMBERS[c] for c in caps), "those, and no other"

        work = service_root / "work"
        work.mkdir()
        Child(f"openat:.:{work}/first:{os.O_RDONLY | os.O_CREAT}").go()
        assert _wait_for(lambda: _has_line_with(out, f"{work}/first")), "traced into FILE"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        assert re.search(r'^echo_open_events_total\{result="ok",syscall="openat"\} [1-9]',
                         text, re.M), text[:2000]

        # ExecReload after a logrotate's rename: a new FILE, the events go on there
        out.rename(logs / "opens.jsonl.old")
        proc.send_signal(signal.SIGHUP)  # (kill -HUP $MAINPID)
        assert _wait_for(out.exists), "reopened"
        Child(f"openat:.:{work}/second:{os.O_RDONLY | os.O_CREAT}").go()
        assert _wait_for(lambda: _has_line_with(out, f"{work}/second"))
        assert not _has_line_with(logs / "opens.jsonl.old", f"{work}/second")
        assert os.stat(out).st_uid == NOBODY
    finally:
        proc.send_signal(getattr(signal, service["KillSignal"][0]))
        _, err = proc.communicate(timeout=float(service["TimeoutStopSec"][0]))
    assert proc.returncode == 0, err
    assert re.search(r"^echo-open: \d+ events shown", err, re.M), err


@pytest.mark.skipif(Path("/proc/1/comm").read_text().strip() != "systemd",
                    reason="systemd is not PID 1 here (the ExecStart test runs the command)")
def test_the_unit_runs_under_systemd(service_root):
    # the unit itself, as a transient copy pointing at this build and a free port
    text = UNIT.read_text()
    port = _free_port()
    text = text.replace("/usr/local/bin/echo-open", ECHO_OPEN)
    text = text.replace("127.0.0.1:9464", f"127.0.0.1:{port}")
    name = f"echo-open-test-{os.getpid()}.service"
    text = text.replace("LogsDirectory=echo-open", f"LogsDirectory={name}")
    text = text.replace("/var/log/echo-open/", f"/var/log/{name}/")
    unit = Path("/run/systemd/system") / name
    unit.write_text(text)
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    try:
        subprocess.run(["systemctl", "start", name], check=True)
        work = service_root / "work"
        work.mkdir()
        out = Path(f"/var/log/{name}/opens.jsonl")
        assert _wait_for(out.exists, 30), "started"
        time.sleep(1)
        Child(f"openat:.:{work}/first:{os.O_RDONLY | os.O_CREAT}").go()
        assert _wait_for(lambda: _has_line_with(out, f"{work}/first"))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            assert "echo_open_events_total" in reply.read().decode()
        out.rename(out.with_name("opens.jsonl.old"))
        subprocess.run(["systemctl", "reload", name], check=True)
        assert _wait_for(out.exists)
        subprocess.run(["systemctl", "stop", name], check=True)
        shown = subprocess.run(["systemctl", "show", name, "-p", "ExecMainStatus"],
                               capture_output=True, text=True, check=True).stdout
        assert shown.strip() == "ExecMainStatus=0"
    finally:
        subprocess.run(["systemctl", "stop", name])
        unit.unlink()
        subprocess.run(["systemctl", "daemon-reload"])
        shutil.rmtree(f"/var/log/{name}", ignore_errors=True)


def _daemonset() -> dict:
    manifest = yaml.safe_load(DAEMONSET.read_text())
    assert manifest["kind"] == "DaemonSet" and manifest["apiVersion"] == "apps/v1"
    return manifest


def test_the_daemonset_is_a_daemonset_with_the_host_and_capabilities_it_needs():
    spec = _daemonset()["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    (container,) = spec["containers"]
    added = set(container["securityContext"]["capabilities"]["add"])
    assert added == {c.removeprefix("CAP_") for c in CAP_NUMBERS}
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["privileged"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    for path in ("/sys/kernel/btf", "/sys/kernel/tracing", "/var/log/echo-open"):
        assert host[mounts[path]] == path
    args = container["args"]
    assert Path(_option(args, "-o")).parent == Path("/var/log/echo-open")
    port = int(_option(args, "--metrics").rpartition(":")[2])
    assert {p["containerPort"] for p in container["ports"]} == {port}
    annotations = _daemonset()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_the_daemonsets_arguments_are_ones_the_cli_takes(tmp_path):
    (container,) = _daemonset()["spec"]["template"]["spec"]["containers"]
    args = list(container["args"])
    out = tmp_path / "opens.jsonl"
    args[args.index("-o") + 1] = str(out)
    port = _free_port()
    args[args.index("--metrics") + 1] = f"127.0.0.1:{port}"
    proc = subprocess.Popen([ECHO_OPEN, *args, "-d", "2"], stderr=subprocess.PIPE, text=True)
    lines = [proc.stderr.readline() for _ in range(2)]
    assert any(line.startswith(READY) for line in lines), lines
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert "echo_open_ring_size_bytes" in reply.read().decode()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    for line in out.read_text().splitlines():
        json.loads(line)  # JSON lines, as the node's log shipper expects
