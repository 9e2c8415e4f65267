"""--metrics: Prometheus's text format, scraped directly and by a real Prometheus server."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_io_uring import UringChild
from test_io_uring import uring_open as uring_binary  # noqa: F401 (a fixture: uring_open.c)

from conftest import Child
from echo_open import Filters, Tracer, Tuning
from echo_open.metrics import BadAddress, MetricsServer, parse_address

ECHO_OPEN = str(Path(sys.executable).parent / "echo-open")
READY = "echo-open: tracing"
METRICS_AT = re.compile(r"^echo-open: metrics at (\S+)$")
SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
PROMETHEUS = shutil.which("prometheus")
NO_LABELS: frozenset = frozenset()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_samples(text: str) -> dict[tuple[str, frozenset], float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, labels, value = SAMPLE.match(line).groups()
        pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


class Traced:
    """echo-open [COMMAND] --metrics ADDR ARGS... (port 0: it picks one), until stopped."""

    def __init__(self, *args: str, address: str = "127.0.0.1:0",
                 command: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen([ECHO_OPEN, *command, "--metrics", address, *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.url = ""
        for line in self.proc.stderr:
            if match := METRICS_AT.match(line.strip()):
                self.url = match.group(1)
            if line.startswith(READY):
                break
        assert self.url, "echo-open says where its metrics are before it traces"

    def samples(self) -> dict[tuple[str, frozenset], float]:
        with urllib.request.urlopen(self.url, timeout=10) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain")
            return parse_samples(reply.read().decode())

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, err


def _opens(work: Path) -> tuple[list[str], dict[tuple[str, str], int]]:
    """A child's opens in work/, and how many of each (syscall, result) they make."""
    (work / "file").write_text("x")
    actions = ([f"openat:.:{work}/file"] * 7 + [f"open:{work}/file"] * 3
               + [f"openat:.:{work}/missing"] * 4         # ENOENT
               + [f"open:{work}/file/below"] * 2          # ENOTDIR
               + [f"creat:{work}/made", f"openat2:{work}/file:0:0"])
    return actions, {("openat", "ok"): 7, ("open", "ok"): 3, ("openat", "ENOENT"): 4,
                     ("open", "ENOTDIR"): 2, ("creat", "ok"): 1, ("openat2", "ok"): 1}


def _events(samples: dict) -> dict[tuple[str, str], float]:
    return {(dict(labels)["syscall"], dict(labels)["result"]): value
            for (name, labels), value in samples.items() if name == "echo_open_events_total"}


def _until(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_a_scrape_counts_the_opens_by_syscall_and_result(tmp_path):
    actions, expected = _opens(tmp_path)
    traced = Traced("--path-prefix", f"{tmp_path}/", "--json")
    try:
        Child(*actions).go()
        assert _until(lambda: _events(traced.samples()) == expected), _events(traced.samples())
        samples = _until(lambda: (s := traced.samples())[("echo_open_events_handled_total",
                                                          NO_LABELS)] == 18 and s)
        assert samples, "the consumer took all 18 from the ring"
        assert samples[("echo_open_emitted_total", NO_LABELS)] == 18
        assert samples[("echo_open_ring_size_bytes", NO_LABELS)] == 4 << 20
        assert samples[("echo_open_ring_pending_bytes", NO_LABELS)] == 0
        for reason in ("ring_full", "args_full", "internal"):
            assert samples[("echo_open_lost_total", frozenset({("reason", reason)}))] == 0
        assert samples[("echo_open_filtered_total", NO_LABELS)] > 0  # every other open
        assert 0 <= samples[("echo_open_consumer_lag_seconds", NO_LABELS)] < 5
        assert samples[("process_resident_memory_bytes", NO_LABELS)] > 0
    finally:
        status, err = traced.stop()
    assert status == 0, err
    assert "18 events shown" in err


def test_pending_bytes_are_what_the_ring_holds_until_it_is_read(tmp_path):
    # the figure behind echo_open_ring_pending_bytes, with a consumer that waits on purpose
    actions, _ = _opens(tmp_path)
    with Tracer(Filters(path_prefixes=[f"{tmp_path}/"]), Tuning(count_outcomes=True)) as tr:
        assert tr.ring_pending_bytes() == 0
        Child(*actions).go()
        pending = _until(lambda: tr.ring_pending_bytes() >= 18 * 100 and
                         tr.ring_pending_bytes(), 5)
        assert pending, "18 records with their paths are waiting"
        records = 0
        while records < 18:
            records += len(tr.read_records(1.0))
        assert tr.ring_pending_bytes() == 0
        assert sum(tr.outcomes().values()) == 18


def test_the_lag_grows_while_records_wait_and_is_the_last_batchs_once_caught_up(tmp_path):
    actions, _ = _opens(tmp_path)
    with Tracer(Filters(path_prefixes=[f"{tmp_path}/"]), Tuning(count_outcomes=True)) as tr:
        server = MetricsServer(("127.0.0.1", 0))
        # the consumer's state as the CLI's keeps it: it handled an open made 3 s ago,
        # 1 ms after it was made, and has not read since
        consumer = SimpleNamespace(shown=1, lag_ns=1_000_000,
                                   newest_ts_ns=time.monotonic_ns() - 3_000_000_000)
        server.serve(tr, consumer)
        try:
            def lag() -> float:
                with urllib.request.urlopen(server.url, timeout=10) as reply:
                    samples = parse_samples(reply.read().decode())
                return samples[("echo_open_consumer_lag_seconds", NO_LABELS)]

            assert lag() == 0.001, "nothing waits: the last batch's lag"
            Child(*actions).go()
            assert _until(lambda: tr.ring_pending_bytes(), 5)
            assert lag() >= 3.0, "records wait: the newest handled open's age"
            while tr.read_records(0.5):
                pass
            assert lag() == 0.001
        finally:
            server.close()


@pytest.mark.parametrize("view", [[], ["-o", "FILE"], ["--summary"], ["top", "--json"]])
def test_metrics_work_with_every_view(tmp_path, view):
    actions, expected = _opens(tmp_path)
    view = [str(tmp_path / "out") if a == "FILE" else a for a in view]
    command = tuple(view[:1]) if view[:1] == ["top"] else ()
    traced = Traced(*view[len(command):], "--path-prefix", f"{tmp_path}/", command=command)
    try:
        Child(*actions).go()
        assert _until(lambda: _events(traced.samples()) == expected)
        assert _until(lambda: traced.samples()[("echo_open_events_handled_total",
                                                NO_LABELS)] == 18)
    finally:
        status, err = traced.stop()
    assert status == 0, err


def test_io_uring_opens_are_counted_as_io_uring(tmp_path, uring_binary):  # noqa: F811
    (tmp_path / "file").write_text("x")
    children = [UringChild(uring_binary, "openat", tmp_path, name) for name in
                ("file", "file", "missing")]
    with Tracer(Filters(pids=[c.pid for c in children]), Tuning(count_outcomes=True)) as tr:
        for child in children:
            child.go()
        counted = _until(lambda: {k: v for k, v in tr.outcomes().items()
                                  if k[0] == "io_uring"} == {("io_uring", "ok"): 2,
                                                             ("io_uring", "ENOENT"): 1}, 10)
        assert counted, tr.outcomes()


def test_outcomes_are_not_counted_unless_asked_for(tmp_path):
    with Tracer(Filters(path_prefixes=[f"{tmp_path}/"])) as tr, \
            pytest.raises(RuntimeError, match="count_outcomes"):
        tr.outcomes()


def test_the_otlp_counters_of_an_exporter_are_exported():
    server = MetricsServer(("127.0.0.1", 0),
                           extra=lambda: {"submitted": 5, "exported": 4, "dropped": 1})
    try:
        with urllib.request.urlopen(server.url, timeout=10) as reply:
            samples = parse_samples(reply.read().decode())
    finally:
        server.close()
    for outcome, count in (("submitted", 5), ("exported", 4), ("dropped", 1)):
        assert samples[("echo_open_otlp_records_total", frozenset({("outcome", outcome)}))
                       ] == count


def test_ipv6_loopback():
    traced = Traced("-n", "no-such-process", address="[::1]:0")
    try:
        assert traced.url.startswith("http://[::1]:")
        assert ("echo_open_ring_size_bytes", NO_LABELS) in traced.samples()
    finally:
        status, err = traced.stop()
    assert status == 0, err


def test_a_busy_port_is_exit_73_in_one_line_and_nothing_runs(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        marker = tmp_path / "ran"
        done = subprocess.run([ECHO_OPEN, "--metrics", f"127.0.0.1:{port}", "--",
                               "touch", str(marker)], capture_output=True, text=True,
                              timeout=30)
    assert done.returncode == 73, done.stderr
    assert done.stderr == (f"echo-open: --metrics: cannot listen on 127.0.0.1:{port}: "
                           "Address already in use\n")
    assert not marker.exists(), "COMMAND never ran"


@pytest.mark.parametrize("address", ["9464", "localhost", "1.2.3.4:99999", "host:port",
                                     "::1:9464", "[nope]:9464", "a b:1", ":", "[::1]"])
def test_a_bad_address_is_a_usage_error(address):
    done = subprocess.run([ECHO_OPEN, "--metrics", address, "-d", "1"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "'--metrics'" in done.stderr, done.stderr


def test_addresses_parse():
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address("localhost:0") == ("localhost", 0)
    assert parse_address(":9464") == ("0.0.0.0", 9464)
    with pytest.raises(BadAddress):
        parse_address("[::1]")


def test_startup_does_not_import_prometheus_without_metrics():
    code = ("import sys; import echo_open.cli; "
            "assert 'prometheus_client' not in sys.modules; print('clean')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout == "clean\n", done.stderr


# ---- a real Prometheus server

def _query(api: str, expression: str) -> list[dict]:
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            answer = json.load(reply)
    except OSError:
        return []  # not up yet
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _values(api: str, expression: str) -> list[float]:
    return [float(r["value"][1]) for r in _query(api, expression)]


@pytest.mark.skipif(PROMETHEUS is None,
                    reason="no prometheus binary: ./bootstrap.sh test installs it")
def test_prometheus_scrapes_the_counters_of_the_opens_made(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    actions, expected = _opens(work)
    port = _free_port()
    traced = Traced("--json", "--path-prefix", f"{work}/", address=f"127.0.0.1:{port}")
    prometheus = None
    log_path = tmp_path / "prometheus.log"
    try:
        web = _free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: echo-open\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{port}']\n")
        with log_path.open("w") as log:  # a file: a pipe would fill and block it
            prometheus = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path}/tsdb",
                 f"--web.listen-address=127.0.0.1:{web}"], stdout=log, stderr=log)
        api = f"http://127.0.0.1:{web}"
        assert _until(lambda: _values(api, 'up{job="echo-open"}') == [1.0], 180), \
            log_path.read_text()[-3000:]
        Child(*actions).go()

        def scraped() -> dict[tuple[str, str], float]:
            return {(r["metric"]["syscall"], r["metric"]["result"]): float(r["value"][1])
                    for r in _query(api, "echo_open_events_total")}

        assert _until(lambda: scraped() == expected, 60), scraped()
        assert _until(lambda: _values(api, "echo_open_events_handled_total") == [18.0], 30)
        assert _values(api, "sum(echo_open_lost_total)") == [0.0]
        assert _values(api, "echo_open_ring_size_bytes") == [4 << 20]
        assert _values(api, 'sum(echo_open_events_total{result!="ok"})') == [6.0]
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        status, err = traced.stop()
    assert status == 0, err
