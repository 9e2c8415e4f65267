"""Events as OpenTelemetry log records, sent over OTLP/HTTP (protobuf) to a collector.

    exporter = OtlpExporter("http://127.0.0.1:4318/v1/logs")
    with Tracer() as tracer:
        exporter.submit(tracer.read_records(1.0), tracer.wall_offset_ns)
    exporter.close()          # flushes for at most 2 s
    exporter.stats()          # {"submitted": ..., "exported": ..., "dropped": ...}

Each open is one LogRecord: body the path, timestamp the open's wall time, severity INFO
(WARN for a failed open), attributes the keys and values of its JSON line (render.JSON_FIELDS,
the same writers; null as an empty AnyValue, OTLP's null). The resource: service.name
echo-open, service.version, host.name, host.id (/etc/machine-id), os.type, process.pid,
merged with OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME (the SDK's detector), then with the
caller's attributes.

Tracing never waits for the collector: ``submit`` only appends the batch (already a copy) to
a queue bounded in records, or drops it (counted) when the queue is full; a worker thread
encodes and posts. Records are built with the official protobuf classes
(opentelemetry-proto), not through the SDK's per-record LogRecord objects (~250 us an event
through LoggerProvider + BatchLogRecordProcessor + OTLPLogExporter: bench/otlp_export.py):
what repeats from one open to the next of a process (pid, comm, flags, result, ...), and a
path opened again, is serialised once and merged into each record (protobuf merges
concatenated messages; repeated fields append).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

from . import __version__
from .events import OpenEvent, decode_batch
from .loader import RecordBatch
from .render import _REPEAT_KEY, JSON_FIELDS, _Clock

try:
    import requests
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.util.re import parse_env_headers
except ImportError as exc:  # the optional extra is not installed
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

INSTALL_HINT = "pip install 'echo-open[otlp]'"

# OTLP's SeverityNumber values
SEVERITY_INFO = 9
SEVERITY_WARN = 13

DEFAULT_QUEUE_RECORDS = 65536      # what may wait for the collector; past it, drops
DEFAULT_REQUEST_RECORDS = 4096     # records per POST at most
DEFAULT_REQUEST_TIMEOUT = 10.0     # seconds a POST may take (as the SDK's exporter)
DEFAULT_FLUSH_TIMEOUT = 2.0        # seconds close() waits for the queue to empty

# the memo of what repeats (see the module's docstring) is forgotten past this many keys
_MEMO_LIMIT = 4096


def describe_failure(exc: BaseException) -> str:
    """A failed POST in a few words: its type and the innermost reason (requests wraps
    urllib3, which wraps the socket's error: "ConnectionError: Connection refused")."""
    reason, inner, depth = None, exc, 0
    while inner is not None and depth < 8:
        if isinstance(inner, OSError) and inner.strerror:
            reason = inner.strerror
        elif isinstance(inner, TimeoutError):
            reason = "timed out"
        following = inner.__cause__ or inner.__context__ or getattr(inner, "reason", None)
        if following is None and inner.args and isinstance(inner.args[0], BaseException):
            following = inner.args[0]
        inner, depth = following, depth + 1
    text = reason or str(exc)
    return f"{type(exc).__name__}: {text[:160]}"


def _env_headers(text: str) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_HEADERS's "key=value,..." as the SDK reads it (liberal, where the
    SDK has that: 1.22 and later)."""
    try:
        return parse_env_headers(text, liberal=True)
    except TypeError:
        return parse_env_headers(text)


class MissingExtra(ImportError):
    """The OpenTelemetry packages are not installed (the ``otlp`` extra)."""


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be an OTLP/HTTP endpoint (None if it can). Needs no extra."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError as exc:
        return f"{url!r} is not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"{url!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:4318/v1/logs)"
    if not parts.hostname:
        return f"{url!r} names no host"
    if port == 0:
        return f"{url!r}: port 0"
    return None


def machine_id() -> str | None:
    """The host's machine id (systemd's, else D-Bus's), as OpenTelemetry's host.id."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def default_resource_attributes() -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "service.name": "echo-open", "service.version": __version__,
        "host.name": socket.gethostname(), "os.type": "linux", "process.pid": os.getpid()}
    if (host_id := machine_id()) is not None:
        attributes["host.id"] = host_id
    return attributes


def _set_value(any_value: AnyValue, value: object) -> None:
    """A JSON value into an AnyValue (null: an AnyValue with no value, OTLP's null)."""
    if value is None:
        any_value.SetInParent()
        return
    if isinstance(value, bool):
        any_value.bool_value = value
    elif isinstance(value, int):
        any_value.int_value = value
    elif isinstance(value, float):
        any_value.double_value = value
    else:
        any_value.string_value = str(value)


def _add_attributes(attributes, pairs: Mapping[str, object]) -> None:
    # add() and setters: ~3x faster than KeyValue(key=..., value=AnyValue(...)) under upb
    for key, value in pairs.items():
        pair = attributes.add()
        pair.key = key
        _set_value(pair.value, value)


def _json_value(text: str) -> object:
    """A JSON value as JSON_FIELDS writes it; the common shapes without the parser."""
    first = text[0]
    if first == '"':
        if "\\" not in text:
            return text[1:-1]
    elif first == "n":
        return None
    elif first == "t" or first == "f":
        return first == "t"
    elif text.lstrip("-").isdigit():
        return int(text)
    return json.loads(text)


class _RecordEncoder:
    """OpenEvents into LogRecords. The attributes are the JSON line's keys in its order,
    their values what JSON_FIELDS writes (parsed back from that JSON text, so the two
    outputs cannot disagree). Runs of keys are serialised once and merged in: the run that
    repeats from one open to the next of a process (keyed as the JSON renderer keys it),
    and the paths' run (keyed by its JSON text: the same file is opened again and again);
    only the run with the clock in it (ts_ns, time, latency_ns) is built for every event."""

    def __init__(self) -> None:
        self._clock = _Clock("%Y-%m-%dT%H:%M:%S", utc=True)  # the JSON renderer's
        # runs of keys as in render._json_segments: (repeats, fields)
        runs: list[tuple[bool, list]] = []
        for field in JSON_FIELDS:
            if runs and runs[-1][0] == field.repeats:
                runs[-1][1].append(field)
            else:
                runs.append((field.repeats, [field]))
        # (how, fields): how is "repeats", "texts" (memoised by its JSON texts) or "clock"
        self._runs = [("repeats" if repeats else
                       "clock" if any(f.value is None for f in fields) else "texts", fields)
                      for repeats, fields in runs]
        self._memo: dict[tuple, bytes] = {}
        self._texts_memo: dict[tuple, bytes] = {}

    def _pairs(self, fields: list, event: OpenEvent) -> dict[str, object]:
        pairs = {}
        for field in fields:
            if field.value is None:  # the time: the JSON renderer's clock
                pairs[field.key] = f"{self._clock(event.wall_ns)}Z"
            else:
                pairs[field.key] = _json_value(field.value(event))
        return pairs

    @staticmethod
    def _serialised(pairs: dict[str, object]) -> bytes:
        record = LogRecord()
        _add_attributes(record.attributes, pairs)
        if "path" in pairs:  # the body is the path
            record.body.string_value = pairs["path"]
        return record.SerializeToString()

    def _repeated(self, fields: list, event: OpenEvent) -> bytes:
        key = _REPEAT_KEY(event)
        part = self._memo.get(key)
        if part is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            part = self._memo[key] = self._serialised(self._pairs(fields, event))
        return part

    def _by_texts(self, fields: list, event: OpenEvent) -> bytes:
        texts = tuple([field.value(event) for field in fields])
        part = self._texts_memo.get(texts)
        if part is None:
            if len(self._texts_memo) >= _MEMO_LIMIT:
                self._texts_memo.clear()
            pairs = {field.key: _json_value(text)
                     for field, text in zip(fields, texts, strict=True)}
            part = self._texts_memo[texts] = self._serialised(pairs)
        return part

    def fill(self, record: LogRecord, event: OpenEvent, observed_ns: int) -> None:
        failed = event.ret < 0
        record.time_unix_nano = event.wall_ns
        record.observed_time_unix_nano = observed_ns
        record.severity_number = SEVERITY_WARN if failed else SEVERITY_INFO
        record.severity_text = "WARN" if failed else "INFO"
        for how, fields in self._runs:
            # merging appends to the repeated attributes: the JSON order is kept
            if how == "repeats":
                record.MergeFromString(self._repeated(fields, event))
            elif how == "texts":
                record.MergeFromString(self._by_texts(fields, event))
            else:
                pairs = self._pairs(fields, event)
                if "path" in pairs:
                    record.body.string_value = pairs["path"]
                _add_attributes(record.attributes, pairs)


class OtlpExporter:
    """A sink of raw batches (``submit``) that exports them as OTLP log records from a
    thread of its own; never blocks its caller. ``stats()``: submitted == exported +
    dropped + (still queued or in flight; none after close)."""

    def __init__(self, url: str, resource_attributes: Mapping[str, object] | None = None, *,
                 queue_records: int = DEFAULT_QUEUE_RECORDS,
                 request_records: int = DEFAULT_REQUEST_RECORDS,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                 headers: Mapping[str, str] | None = None) -> None:
        if _MISSING is not None:
            raise MissingExtra(f"the OpenTelemetry packages are not installed "
                               f"({_MISSING}): {INSTALL_HINT}")
        if (problem := check_url(url)) is not None:
            raise ValueError(problem)
        self.url = url
        resource = Resource(default_resource_attributes()).merge(OTELResourceDetector().detect())
        if resource_attributes:
            resource = resource.merge(Resource(dict(resource_attributes)))
        self.resource_attributes = dict(resource.attributes)
        self._resource_logs = ResourceLogs(schema_url=resource.schema_url or "")
        _add_attributes(self._resource_logs.resource.attributes, self.resource_attributes)
        self._scope = InstrumentationScope(name="echo-open", version=__version__)
        self._queue_records = queue_records
        self._request_records = request_records
        self._timeout = request_timeout
        self._headers = {"Content-Type": "application/x-protobuf",
                         "User-Agent": f"echo-open/{__version__}"}
        # as the SDK's exporter: OTEL_EXPORTER_OTLP_[LOGS_]HEADERS (e.g. an API key)
        for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_LOGS_HEADERS"):
            self._headers.update(_env_headers(os.environ.get(variable, "")))
        self._headers.update(headers or {})
        self._session = requests.Session()
        self._encoder = _RecordEncoder()

        self._lock = threading.Condition()
        self._queue: deque[tuple[RecordBatch, int]] = deque()
        self._queued = 0       # records in the queue
        self._in_flight = 0    # records the worker took and has not settled
        self._submitted = 0
        self._exported = 0
        self._dropped = 0
        self._closing = False
        self._abandoned = False  # close() gave up waiting: what is left is counted dropped
        self.last_error: str | None = None
        # started by the first submit: no thread yet when the CLI forks a COMMAND
        self._worker = threading.Thread(target=self._work, name="echo-open-otlp", daemon=True)

    # ---- the tracer's side: never waits

    def submit(self, batch: RecordBatch, wall_offset_ns: int) -> None:
        """Queue a batch (a RecordBatch of the tracer's; its buffers are not reused), or
        drop it, counted, when the queue holds too many records already."""
        count = len(batch)
        if not count:
            return
        with self._lock:
            self._submitted += count
            if self._closing or self._queued + count > self._queue_records:
                self._dropped += count
                return
            self._queue.append((batch, wall_offset_ns))
            self._queued += count
            if self._worker.ident is None:
                self._worker.start()
            self._lock.notify()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"submitted": self._submitted, "exported": self._exported,
                    "dropped": self._dropped}

    def close(self, timeout: float = DEFAULT_FLUSH_TIMEOUT) -> dict[str, int]:
        """Send what is queued, for at most ``timeout`` seconds; what is not sent by then
        is dropped (counted). Returns the final stats."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        if self._worker.ident is not None:  # never started: nothing was queued
            self._worker.join(timeout)
        with self._lock:
            if self._worker.is_alive():  # a stalled collector: stop waiting for it
                self._abandoned = True
                self._dropped += self._queued + self._in_flight
                self._queue.clear()
                self._queued = self._in_flight = 0
        if not self._worker.is_alive():
            self._session.close()
        return self.stats()

    def __enter__(self) -> OtlpExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the worker

    def _take(self) -> list[tuple[RecordBatch, int]] | None:
        """Batches for one request (None: closing and nothing left)."""
        with self._lock:
            while not self._queue and not self._closing:
                self._lock.wait()
            if not self._queue:
                return None
            taken = [self._queue.popleft()]
            records = len(taken[0][0])
            while self._queue and records + len(self._queue[0][0]) <= self._request_records:
                batch = self._queue.popleft()
                taken.append(batch)
                records += len(batch[0])
            self._queued -= records
            self._in_flight += records
            return taken

    def _settle(self, records: int, exported: int) -> None:
        with self._lock:
            if not self._abandoned:  # else close() has counted them
                self._exported += exported
                self._dropped += records - exported
                self._in_flight -= records

    def _work(self) -> None:
        while (taken := self._take()) is not None:
            try:
                events = [event for batch, wall_offset_ns in taken
                          for event in decode_batch(batch, wall_offset_ns)]
            except ValueError as exc:  # a batch the decoder refuses: none of it is sent
                self.last_error = f"undecodable batch: {exc}"
                self._settle(sum(len(batch) for batch, _ in taken), 0)
                continue
            # one tracer batch can hold more than a request should: cut it up
            for start in range(0, len(events), self._request_records):
                chunk = events[start:start + self._request_records]
                exported = 0
                try:
                    exported = self._post(self._request(chunk), len(chunk))
                except Exception as exc:  # a collector's failure only drops
                    self.last_error = describe_failure(exc)
                self._settle(len(chunk), exported)
                if self._abandoned:
                    return

    def _request(self, events: list[OpenEvent]) -> bytes:
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.CopyFrom(self._resource_logs)
        scope_logs = resource_logs.scope_logs.add()  # filled in place: no copy of records
        scope_logs.scope.CopyFrom(self._scope)
        add = scope_logs.log_records.add
        fill = self._encoder.fill
        observed = time.time_ns()
        for event in events:
            fill(add(), event, observed)
        return request.SerializeToString()

    def _post(self, body: bytes, records: int) -> int:
        """POST one request; how many of its records the collector took."""
        answer = self._session.post(self.url, data=body, headers=self._headers,
                                    timeout=self._timeout)
        if not 200 <= answer.status_code < 300:
            self.last_error = f"HTTP {answer.status_code} {answer.reason}"
            return 0
        rejected = 0
        if answer.content:  # partial success: the collector says how many it refused
            response = ExportLogsServiceResponse.FromString(answer.content)
            rejected = min(records, response.partial_success.rejected_log_records)
            if rejected:
                self.last_error = (f"the collector rejected {rejected} records: "
                                   f"{response.partial_success.error_message}")
        return records - rejected
