"""--otlp and echo_open.otlp: events as OTLP log records, received by a real HTTP server on
loopback that decodes each request with opentelemetry-proto, against a child's real opens."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from conftest import Child
from echo_open import Filters
from echo_open.otlp import SEVERITY_INFO, SEVERITY_WARN, OtlpExporter
from echo_open.render import JSON_KEYS

ECHO_OPEN = str(Path(sys.executable).parent / "echo-open")
READY = "echo-open: tracing"
OTLP_LINE = re.compile(r"^echo-open: otlp: (\d+) events exported, (\d+) dropped", re.M)


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


class Receiver:
    """An OTLP/HTTP logs endpoint on 127.0.0.1: decodes every request; ``stall`` seconds
    of sleep before each answer (a collector that hangs)."""

    def __init__(self, port: int = 0, stall: float = 0.0) -> None:
        self.records: list[dict] = []
        self.resources: list[dict] = []
        self.requests = 0
        self.content_types: set[str] = set()
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if stall:
                    time.sleep(stall)
                receiver._take(self.path, dict(self.headers), body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/logs"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _take(self, path: str, headers: dict[str, str], body: bytes) -> None:
        request = ExportLogsServiceRequest.FromString(body)
        with self._lock:
            self.requests += 1
            self.headers.append(headers)
            self.content_types.add(f"{path} {headers['Content-Type']}")
            for resource_logs in request.resource_logs:
                resource = {a.key: _value(a.value) for a in resource_logs.resource.attributes}
                self.resources.append(resource)
                for scope_logs in resource_logs.scope_logs:
                    assert scope_logs.scope.name == "echo-open"
                    for record in scope_logs.log_records:
                        self.records.append({
                            "time_unix_nano": record.time_unix_nano,
                            "severity_number": record.severity_number,
                            "severity_text": record.severity_text,
                            "body": _value(record.body),
                            "keys": [a.key for a in record.attributes],
                            "attributes": {a.key: _value(a.value) for a in record.attributes},
                            "resource": resource})

    def records_of(self, pid: int) -> list[dict]:
        with self._lock:
            return [r for r in self.records if r["attributes"]["pid"] == pid]

    def wait_for(self, pid: int, count: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.records_of(pid)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.records_of(pid)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cli:
    """echo-open in the background, ready once attached; stdout read with a deadline."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([ECHO_OPEN, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        ready = self.proc.stderr.readline().decode()
        assert ready.startswith(READY), ready + self.proc.stderr.read().decode()
        self._out = b""

    def lines_until(self, done, timeout: float = 15.0) -> list[str]:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not done(self._out.decode().splitlines()) and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._out += chunk
        return self._out.decode().splitlines()

    def stop(self, timeout: float = 15.0) -> tuple[int, str, str, float]:
        """SIGINT; (status, rest of stdout, stderr, seconds it took to exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=timeout)
        self._out += out
        return (self.proc.returncode, self._out.decode(), err.decode(),
                time.monotonic() - started)


# how long an exit may take with a stalled collector: the flush's 2 s, and detaching (~0.5 s
# here, several seconds under qemu's emulation); a POST waits 10 s for its answer, so an exit
# that waited for one would take longer
_EXIT_LIMIT = 2.0 + 7.5


def _otlp_counts(stderr: str) -> tuple[int, int]:
    match = OTLP_LINE.search(stderr)
    assert match, stderr
    return int(match[1]), int(match[2])


def _check_resource(resource: dict, exporter_pid: int) -> None:
    assert resource["service.name"] == "echo-open"
    assert resource["service.version"] == "0.1.0"
    assert resource["host.name"] == socket.gethostname()
    assert resource["os.type"] == "linux"
    assert resource["process.pid"] == exporter_pid
    # systemd's machine id, else D-Bus's
    ids = [p.read_text().strip() for p in (Path("/etc/machine-id"),
                                           Path("/var/lib/dbus/machine-id")) if p.exists()]
    ids = [one for one in ids if one]
    if ids:
        assert resource["host.id"] == ids[0]
    else:
        assert "host.id" not in resource


def test_every_open_arrives_as_its_json_line(tmp_path, receiver):
    """--json and --otlp at once: one record per JSON line, its attributes that line's keys
    in order with the same values, body the path, severity by result, the resource."""
    collector = receiver()
    (tmp_path / "there").write_text("x")
    child = Child(f"openat:.:{tmp_path}/there", f"open:{tmp_path}/missing",
                  f"openat:{tmp_path}:there:{os.O_WRONLY}", f"creat:{tmp_path}/made")
    cli = Cli("--json", "--otlp", collector.url, "-p", str(child.pid))
    results = child.go()
    cli.lines_until(lambda ls: sum(str(tmp_path) in line for line in ls) >= 4)
    status, out, err, _ = cli.stop()
    assert status == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    mine = [line for line in lines if line["pid"] == child.pid and str(tmp_path) in line["path"]]
    assert [line["ret"] >= 0 for line in mine] == [r["ret"] >= 0 for r in results]
    records = collector.wait_for(child.pid, len([x for x in lines if x["pid"] == child.pid]))
    assert "/v1/logs application/x-protobuf" in collector.content_types
    # every JSON line the child caused has its record (same values, same key order)
    by_ts = {r["attributes"]["ts_ns"]: r for r in records}
    for line in (x for x in lines if x["pid"] == child.pid):
        record = by_ts[line["ts_ns"]]
        assert record["keys"] == list(JSON_KEYS)
        assert record["attributes"] == line
        assert record["body"] == line["path"]
        failed = line["ret"] < 0
        assert record["severity_number"] == (SEVERITY_WARN if failed else SEVERITY_INFO)
        assert record["severity_text"] == ("WARN" if failed else "INFO")
        # the record's timestamp is the JSON line's time, to its microsecond
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S",
                              time.gmtime(record["time_unix_nano"] // 1_000_000_000))
        micros = record["time_unix_nano"] // 1000 % 1_000_000
        assert line["time"] == f"{stamp}.{micros:06d}Z"
        _check_resource(record["resource"], cli.proc.pid)
    by_path = {r["attributes"]["path"]: r["attributes"] for r in records}
    assert by_path[f"{tmp_path}/missing"]["error"] == "ENOENT"
    assert by_path[f"{tmp_path}/missing"]["fd"] is None
    assert by_path["there"]["resolved"] == f"{tmp_path}/there"
    assert by_path[f"{tmp_path}/made"]["syscall"] == "creat"
    exported, dropped = _otlp_counts(err)
    assert dropped == 0 and exported == len(lines)
    assert "Traceback" not in err


def test_library_exporter_counts_and_keeps_odd_bytes(tmp_path, start_tracer, receiver):
    """OtlpExporter on the Tracer's raw batches: a name that is not UTF-8 (and holds a
    newline) comes with path_b64; submitted == exported; a resource attribute added."""
    collector = receiver()
    odd = os.fsencode(str(tmp_path)) + b"/bad\xff\nname"
    child = Child(f"open:x{odd.hex()}", f"open:{tmp_path}/none")
    tracer = start_tracer(Filters(pids=[child.pid]), resolve_paths=True)
    exporter = OtlpExporter(collector.url, {"deployment.environment": "test"})
    child.go()
    got = 0
    deadline = time.monotonic() + 10
    while got < 2 and time.monotonic() < deadline:
        batch = tracer.read_records(0.2)
        got += len(batch)
        exporter.submit(batch, tracer.wall_offset_ns)
    stats = exporter.close()
    assert stats == {"submitted": got, "exported": got, "dropped": 0}
    records = collector.wait_for(child.pid, 2)
    assert len(records) == got
    odd_record = next(r for r in records if r["attributes"]["path_b64"] is not None)
    assert base64.b64decode(odd_record["attributes"]["path_b64"]) == odd
    assert odd_record["body"] == odd.decode("utf-8", "replace")
    assert "\n" in odd_record["body"]  # a log record's body is data, not a line
    assert odd_record["resource"]["deployment.environment"] == "test"
    _check_resource(odd_record["resource"], os.getpid())


def test_the_sdk_environment_adds_headers_and_resource_attributes(tmp_path, start_tracer,
                                                                 receiver, monkeypatch):
    """OTEL_EXPORTER_OTLP_HEADERS (an API key, say) and OTEL_RESOURCE_ATTRIBUTES /
    OTEL_SERVICE_NAME, read as the SDK reads them."""
    collector = receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=secret-1,x-tenant=t2")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,team=storage")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "opens-of-ci")
    child = Child(f"open:{tmp_path}/none")
    tracer = start_tracer(Filters(pids=[child.pid]))
    exporter = OtlpExporter(collector.url)
    child.go()
    got = 0
    deadline = time.monotonic() + 10
    while got < 1 and time.monotonic() < deadline:
        batch = tracer.read_records(0.2)
        got += len(batch)
        exporter.submit(batch, tracer.wall_offset_ns)
    assert exporter.close()["exported"] == got >= 1
    (record,) = [r for r in collector.records_of(child.pid) if r["body"] == f"{tmp_path}/none"]
    assert record["resource"]["deployment.environment"] == "ci"
    assert record["resource"]["team"] == "storage"
    assert record["resource"]["service.name"] == "opens-of-ci"
    assert record["resource"]["host.name"] == socket.gethostname()
    headers = {k.lower(): v for k, v in collector.headers[0].items()}
    assert headers["x-api-key"] == "secret-1" and headers["x-tenant"] == "t2"


def test_full_queue_drops_without_waiting(tmp_path, start_tracer, receiver):
    """A collector that hangs: submit never waits; what the queue cannot hold is dropped
    and counted; close gives up after its timeout and counts the rest."""
    stalled = receiver(stall=30)
    child = Child(*(f"open:{tmp_path}/n{i}" for i in range(300)))
    tracer = start_tracer(Filters(pids=[child.pid]))
    exporter = OtlpExporter(stalled.url, queue_records=50, request_records=10)
    child.go()
    got, slowest = 0, 0.0
    deadline = time.monotonic() + 10
    while got < 300 and time.monotonic() < deadline:
        batch = tracer.read_records(0.2)
        started = time.monotonic()
        exporter.submit(batch, tracer.wall_offset_ns)
        slowest = max(slowest, time.monotonic() - started)
        got += len(batch)
    assert got == 300
    assert slowest < 0.05, "submit waited"
    running = exporter.stats()
    assert running["submitted"] == 300 and running["exported"] == 0
    assert running["dropped"] >= 300 - 50 - 10  # past the queue and the request in flight
    started = time.monotonic()
    final = exporter.close(timeout=1.0)
    assert time.monotonic() - started < 2.0
    assert final == {"submitted": 300, "exported": 0, "dropped": 300}


def test_receiver_down_at_start_then_up(tmp_path, receiver):
    """Nothing listens at first: the trace goes on, those records are dropped and counted;
    once a collector listens on the port, later records arrive."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1/logs"
    before = Child(*(f"open:{tmp_path}/before{i}" for i in range(5)), name="eo-otlp-before")
    after = Child(*(f"open:{tmp_path}/after{i}" for i in range(5)), name="eo-otlp-after")
    cli = Cli("--otlp", url, "-n", "eo-otlp-")
    before.go()
    lines = cli.lines_until(lambda ls: sum("/before" in line for line in ls) >= 5)
    assert sum("/before" in line for line in lines) == 5
    time.sleep(1.0)  # the worker tries them (connection refused) and drops them
    collector = receiver(port=port)
    after.go()
    lines = cli.lines_until(lambda ls: sum("/after" in line for line in ls) >= 5)
    assert sum("/after" in line for line in lines) == 5
    records = collector.wait_for(after.pid, 5)
    status, _, err, _ = cli.stop()
    assert status == 0, err
    paths = [r["attributes"]["path"] for r in collector.records]
    assert sorted(p for p in paths if "/after" in p) == sorted(
        f"{tmp_path}/after{i}" for i in range(5))
    assert not any("/before" in p for p in paths)
    assert all(r["attributes"]["comm"] == "eo-otlp-after" for r in records)
    exported, dropped = _otlp_counts(err)
    shown = int(re.search(r"echo-open: (\d+) events shown", err)[1])
    assert dropped >= 5 and exported >= 5 and exported + dropped == shown
    # said while tracing too, with the reason
    assert re.search(r"^echo-open: warning: otlp: \d+ events dropped in the last interval "
                     r"\(ConnectionError", err, re.M), err
    assert "Traceback" not in err


def test_stalled_receiver_never_holds_the_trace(tmp_path, receiver):
    """A collector that takes requests and never answers: every event is still shown, at
    once, with a COMMAND and a filter; the exit (flush included) is bounded."""
    stalled = receiver(stall=60)
    ended = tmp_path / "ended"
    script = ("import os, time\n"
              "for i in range(200):\n"
              f"    try: os.close(os.open('{tmp_path}/f%d' % i, os.O_RDONLY))\n"
              "    except OSError: pass\n"
              f"open('{ended}', 'w').write(repr(time.time()))\n")
    out_file = tmp_path / "trace.txt"
    done = subprocess.run([ECHO_OPEN, "--otlp", stalled.url, "-x", "-o", str(out_file), "--",
                           sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    took = time.time() - float(ended.read_text())  # from the command's end to our exit
    assert done.returncode == 0, done.stderr
    shown = [line for line in out_file.read_text().splitlines() if str(tmp_path) in line]
    assert len(shown) == 200 and all("ENOENT" in line for line in shown)
    exported, dropped = _otlp_counts(done.stderr)
    assert exported == 0 and dropped > 0
    # the flush's 2 s and detaching (~0.5 s, several under qemu); a request waits 10 s
    assert took < _EXIT_LIMIT, f"the stalled collector held the exit for {took:.1f} s"
    assert stalled.requests == 0  # none was answered
    assert all(line.startswith("echo-open: ") for line in done.stderr.splitlines()), done.stderr


def test_stalled_receiver_exit_on_sigint_is_bounded(tmp_path, receiver):
    stalled = receiver(stall=60)
    child = Child(*(f"open:{tmp_path}/s{i}" for i in range(20)))
    cli = Cli("--otlp", stalled.url, "-p", str(child.pid))
    child.go()
    lines = cli.lines_until(lambda ls: sum(str(tmp_path) in line for line in ls) >= 20)
    assert sum(str(tmp_path) in line for line in lines) == 20
    status, _, err, took = cli.stop()
    assert status == 0, err
    assert took < _EXIT_LIMIT, f"exit took {took:.1f} s"
    exported, dropped = _otlp_counts(err)
    assert (exported, dropped) == (0, 20)


@pytest.mark.parametrize("url", ["not-a-url", "ftp://127.0.0.1/v1/logs", "http:///v1/logs",
                                 "http://127.0.0.1:99999/v1/logs", "http://127.0.0.1:x/"])
def test_bad_url_is_a_usage_error(url):
    done = subprocess.run([ECHO_OPEN, "--otlp", url, "-d", "1"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--otlp" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and READY not in done.stderr


def test_without_the_extra_says_what_to_install(receiver):
    collector = receiver()
    # the CLI as installed, with the OpenTelemetry packages made unimportable
    script = ("import sys\n"
              "for name in ('opentelemetry', 'google.protobuf', 'requests'):\n"
              "    sys.modules[name] = None\n"
              "from echo_open.cli import main\n"
              f"sys.argv = ['echo-open', '--otlp', {collector.url!r}, '-d', '1']\n"
              "main()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 69, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "pip install 'echo-open[otlp]'" in done.stderr
    assert READY not in done.stderr and collector.requests == 0


def test_opentelemetry_is_not_imported_without_otlp():
    probe = ("import sys\n"
             "import echo_open.cli\n"
             "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', "
             "'google.protobuf', 'requests'))))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=30, check=True)
    assert done.stdout.strip() == "[]"
