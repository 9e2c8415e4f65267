"""How many events/s the OTLP exporter sustains, against the SDK's own per-record path.

    .venv/bin/python bench/otlp_export.py [--opens 20000] [--repeat 5]

A child makes --opens real opens (missing files, and existing ones) under a Tracer; the
batches are kept and, --repeat times over, handed to:

  echo-open   echo_open.otlp.OtlpExporter (official protobuf classes, repeated attributes
              serialised once, one POST per 4096 records)
  sdk         opentelemetry-sdk: LoggerProvider + BatchLogRecordProcessor + OTLPLogExporter,
              one SDK LogRecord per event with the same attributes (the JSON line's)

both posting to a receiver on loopback (http.server, a thread) that answers 200 and counts
the bytes. Rate = records the exporter reported exported / seconds from the first submit to
the end of the flush. Needs root (the tracer) and the otlp extra.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from echo_open import Filters, Tracer, Tuning
from echo_open.events import decode_batch
from echo_open.otlp import OtlpExporter
from echo_open.render import JsonRenderer

CHILD = """
import os, sys
sys.stdin.readline()
for i in range(int(sys.argv[1])):
    path = f"/tmp/eo-otlp-bench-missing/{i % 500}" if i % 2 else "/etc/hostname"
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError:
        pass
"""


class _Sink(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        _Sink.received += len(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def capture(opens: int) -> tuple[list, int]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(opens)], stdin=subprocess.PIPE,
                             text=True)
    batches = []
    with Tracer(Filters(pids=[child.pid]), Tuning(resolve_paths=True)).start() as tracer:
        child.stdin.write("go\n")
        child.stdin.flush()
        got = 0
        deadline = time.monotonic() + 60
        while got < opens and time.monotonic() < deadline:
            batch = tracer.read_records(0.2)
            if len(batch):
                batches.append(batch)
                got += len(batch)
        offset = tracer.wall_offset_ns
    child.wait()
    return batches, offset


def bench_ours(url: str, batches: list, offset: int, repeat: int) -> tuple[float, dict]:
    records = sum(len(b) for b in batches) * repeat
    exporter = OtlpExporter(url, queue_records=records + 1)
    start = time.perf_counter()
    for _ in range(repeat):
        for batch in batches:
            exporter.submit(batch, offset)
    stats = exporter.close(timeout=600)
    return stats["exported"] / (time.perf_counter() - start), stats


def bench_sdk(url: str, batches: list, offset: int, repeat: int) -> tuple[float, int]:
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource({"service.name": "echo-open"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=url), max_queue_size=1 << 20, max_export_batch_size=4096))
    logger = provider.get_logger("echo-open")
    renderer = JsonRenderer()
    # the same attributes: the JSON line's keys (null values left out: the SDK drops them)
    lines = []
    for batch in batches:
        text = b"".join(bytes(c) for c in renderer.render_batch(batch, offset)).decode()
        lines.extend(json.loads(line) for line in text.splitlines())
    events = [e for b in batches for e in decode_batch(b, offset)]
    start = time.perf_counter()
    for _ in range(repeat):
        for event, line in zip(events, lines, strict=True):
            logger.emit(
                timestamp=event.wall_ns, body=line["path"],
                severity_number=SeverityNumber.WARN if event.ret < 0 else SeverityNumber.INFO,
                attributes={k: v for k, v in line.items() if v is not None})
    provider.force_flush(600_000)
    seconds = time.perf_counter() - start
    provider.shutdown()
    return len(events) * repeat / seconds, len(events) * repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opens", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-sdk", action="store_true", help="skip the SDK's path")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/otlp_export.py: run as root (it traces)")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/logs"
    batches, offset = capture(args.opens)
    captured = sum(len(b) for b in batches)
    print(f"captured {captured} events in {len(batches)} batches")
    rate, stats = bench_ours(url, batches, offset, args.repeat)
    print(f"echo-open OtlpExporter: {rate:,.0f} events/s ({stats}; "
          f"{_Sink.received / max(1, stats['exported']):.0f} bytes/record on the wire)")
    if not args.no_sdk:
        rate, count = bench_sdk(url, batches, offset, max(1, args.repeat // 5))
        print(f"SDK LogRecord + BatchLogRecordProcessor: {rate:,.0f} events/s ({count} records)")
    server.shutdown()


if __name__ == "__main__":
    main()
