"""How fast echo-open's consumer turns a full ring into events, and events into text.

    .venv/bin/python bench/drain.py [--ring-mib 64] [--modes miss,hit] [--json]

The ring is filled by the storm while nobody reads it (wakeup threshold just
under the ring size), then emptied in this process under a timer:

  copy     RingBuffer.drain(): libbpf + the C batch callback copying records out
  decode   decode_batch() over those batches: records -> OpenEvent objects
           (and again with the cyclic GC disabled, to show what it costs)
  read     Tracer.read(0) until empty (copy + decode, as the CLI does it)
  drain    Tracer.drain() (copy + decode in one call)
  table    TableRenderer().lines(events)       (the library's Python renderer)
  json     JsonRenderer().lines(events)
  table C  TableRenderer().render_batch(batch) (the CLI's path: csrc/render.c)
  json C   JsonRenderer().render_batch(batch)

The issue's target: >= 1.5M records/s decoded (read/drain).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

from echo_open import OpenEvent, Tracer, Tuning
from echo_open.events import decode_batch
from echo_open.render import JsonRenderer, TableRenderer

# a short storm record is ~180 bytes of ring (header, path, resolved path)
RECORD_ESTIMATE = 150


def fill_ring(tracer: Tracer, mode: str, ring_bytes: int) -> int:
    """Run the storm until the ring must be full; returns how many records it holds."""
    before = tracer.stats()
    harness.run_storm(harness.StormSpec(mode, count=ring_bytes // RECORD_ESTIMATE))
    return (tracer.stats() - before).emitted


def timed(work: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def copy_then_decode(tracer: Tracer) -> tuple[float, float, float, list[OpenEvent], list]:
    """The two halves apart: the ring copy, then the Python decode (and again, GC off)."""
    ring = tracer._ring  # the benchmark looks inside on purpose
    assert ring is not None
    copy_s, batches = timed(lambda: list(ring.drain()))
    offset = tracer.wall_offset_ns

    def decode() -> list[OpenEvent]:
        events: list[OpenEvent] = []
        for batch in batches:  # type: ignore[attr-defined]
            events.extend(decode_batch(batch, offset))
        return events

    decode_s, events = timed(decode)
    del events
    # the same work without the cyclic GC: how much of decode is collector passes
    gc.disable()
    try:
        nogc_s, events = timed(decode)
    finally:
        gc.enable()
    return copy_s, decode_s, nogc_s, events, batches  # type: ignore[return-value]


def render_in_c(renderer: TableRenderer | JsonRenderer, batches: list, offset: int) -> int:
    """Bytes of text for every batch through the C formatter (as the CLI writes it)."""
    return sum(len(chunk) for batch in batches
               for chunk in renderer.render_batch(batch, offset))


def read_until_empty(tracer: Tracer) -> int:
    count = 0
    while batch := tracer.read(0):
        count += len(batch)
    return count


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def measure_mode(mode: str, ring_mib: int) -> dict[str, object]:
    """Fill and empty the ring three ways; render what the first decoded."""
    ring_bytes = ring_mib << 20
    tracer = Tracer(tuning=Tuning(ring_size=ring_bytes, wakeup_bytes=ring_bytes - (64 << 10)))
    with tracer:
        filled = fill_ring(tracer, mode, ring_bytes)
        copy_s, decode_s, nogc_s, events, batches = copy_then_decode(tracer)
        n = len(events)
        table_s, _ = timed(lambda: TableRenderer().lines(events))
        json_s, _ = timed(lambda: JsonRenderer().lines(events))
        offset = tracer.wall_offset_ns
        table_c_s, _ = timed(lambda: render_in_c(TableRenderer(), batches, offset))
        json_c_s, _ = timed(lambda: render_in_c(JsonRenderer(), batches, offset))
        batches.clear()
        # hundreds of thousands of live events would make the collector slow what follows
        events.clear()
        gc.collect()
        fill_ring(tracer, mode, ring_bytes)
        read_s, read_count = timed(lambda: read_until_empty(tracer))
        fill_ring(tracer, mode, ring_bytes)
        drain_s, drained = timed(tracer.drain)
        lost = tracer.stats().ring_full
    return {
        "mode": mode, "ring_mib": ring_mib, "records": n, "emitted": filled,
        "ring_full_drops": lost,
        "copy_per_s": rate(n, copy_s), "decode_per_s": rate(n, decode_s),
        "decode_nogc_per_s": rate(n, nogc_s),
        "copy_decode_per_s": rate(n, copy_s + decode_s),
        "read_per_s": rate(read_count, read_s),  # type: ignore[arg-type]
        "drain_per_s": rate(len(drained), drain_s),  # type: ignore[arg-type]
        "table_per_s": rate(n, table_s), "json_per_s": rate(n, json_s),
        "table_c_per_s": rate(n, table_c_s), "json_c_per_s": rate(n, json_c_s),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ring-mib", type=int, default=64, help="ring size, a power of two")
    parser.add_argument("--modes", default="miss,hit", help="storm modes to fill with")
    parser.add_argument("--json", action="store_true", help="one JSON line at the end")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("drain.py loads BPF programs: run it as root")
    harness.build_storm()
    runs = []
    for mode in args.modes.split(","):
        row = measure_mode(mode.strip(), args.ring_mib)
        runs.append(row)
        print(f"{row['mode']}: {row['records']:,} records; copy {row['copy_per_s']:,.0f}/s, "
              f"decode {row['decode_per_s']:,.0f}/s (GC off {row['decode_nogc_per_s']:,.0f}/s), "
              f"read() {row['read_per_s']:,.0f}/s, "
              f"drain() {row['drain_per_s']:,.0f}/s; table {row['table_per_s']:,.0f}/s, "
              f"json {row['json_per_s']:,.0f}/s; in C: table {row['table_c_per_s']:,.0f}/s, "
              f"json {row['json_c_per_s']:,.0f}/s", file=sys.stderr)
    if args.json:
        print(json.dumps({"runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
