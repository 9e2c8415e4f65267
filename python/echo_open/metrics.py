"""Prometheus metrics of a running Tracer, served over HTTP (--metrics ADDR).

Every figure is read when Prometheus scrapes (a custom collector), from the kernel's
per-CPU counters and the ring's position pages, so tracing pays nothing per event for
them. prometheus_client is imported here only, and this module only when metrics are
asked for.

    server = MetricsServer(("127.0.0.1", 9464))     # binds now: a busy port fails here
    server.serve(tracer, consumer)                   # after tracer.start()
    ...
    server.close()                                   # before tracer.close()
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server

if TYPE_CHECKING:
    from .tracer import Tracer


# a host name or IPv4 address: dot-separated labels of letters, digits, - and _
_HOST = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class BadAddress(ValueError):
    """ADDR is not host:port or [v6]:port."""


def parse_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:9464``, ``[::1]:9464``, ``localhost:9464``, ``:9464`` (every address)
    -> (host, port); port 0 picks a free one."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise BadAddress(f"{text!r} is not HOST:PORT or [IPv6]:PORT (a port 0 to 65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BadAddress(f"{text!r}: {host!r} in brackets is not an IPv6 address"
                             ) from None
    elif ":" in host:
        raise BadAddress(f"{text!r}: an IPv6 address goes in brackets: [::1]:9464")
    elif host and not _HOST.fullmatch(host):
        raise BadAddress(f"{text!r}: {host!r} is not a host name or address")
    return host or "0.0.0.0", int(port_text)


class Consumer(Protocol):
    """What the consumer of the ring tells at a scrape."""

    shown: int            # events taken from the ring and shown, written or counted
    lag_ns: int           # when it took its last batch: that batch's newest open, how old
    newest_ts_ns: int     # that open's time (CLOCK_MONOTONIC, as the records' ts_ns); 0: none


class _Collector:
    """The figures of one tracer, read at each scrape; empty once detached."""

    def __init__(self, extra: Callable[[], Mapping[str, int]] | None) -> None:
        self._lock = threading.Lock()  # a scrape never reads a tracer being closed
        self._tracer: Tracer | None = None
        self._consumer: Consumer | None = None
        self._extra = extra

    def attach(self, tracer: Tracer, consumer: Consumer) -> None:
        with self._lock:
            self._tracer, self._consumer = tracer, consumer

    def detach(self) -> None:
        with self._lock:
            self._tracer = self._consumer = None

    def describe(self) -> list[Metric]:
        return []  # (no figures at registration: nothing is read before the tracer runs)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._tracer is not None and self._tracer.running:
                yield from self._tracer_figures(self._tracer)
                if self._consumer is not None:
                    yield from self._consumer_figures(self._consumer,
                                                      self._tracer.ring_pending_bytes())
        if self._extra is not None:
            records = CounterMetricFamily(
                "echo_open_otlp_records", "OTLP log records by outcome", labels=["outcome"])
            for outcome, count in sorted(self._extra().items()):
                records.add_metric([outcome], count)
            yield records

    @staticmethod
    def _tracer_figures(tracer: Tracer) -> Iterator[Metric]:
        stats = tracer.stats()
        if tracer.tuning.count_outcomes:
            events = CounterMetricFamily(
                "echo_open_events", "Opens traced (past every filter), by syscall and "
                "result: ok or the errno's name", labels=["syscall", "result"])
            for (syscall, result), count in sorted(tracer.outcomes().items()):
                events.add_metric([syscall, result], count)
            yield events
        yield CounterMetricFamily("echo_open_emitted", "Records written to the ring buffer",
                                  value=stats.emitted)
        yield CounterMetricFamily("echo_open_filtered", "Opens a filter kept out, in the kernel",
                                  value=stats.filtered)
        lost = CounterMetricFamily("echo_open_lost", "Events lost, by reason",
                                   labels=["reason"])
        for reason in ("ring_full", "args_full", "internal"):
            lost.add_metric([reason], getattr(stats, reason))
        yield lost
        yield CounterMetricFamily("echo_open_path_unreadable",
                                  "Events delivered without their path (unreadable)",
                                  value=stats.path_fault)
        yield CounterMetricFamily("echo_open_children_untraced",
                                  "New processes of a followed tree the pid map had no "
                                  "room for", value=stats.children_untraced)
        yield CounterMetricFamily("echo_open_wakeups", "Consumer wake-ups the kernel forced",
                                  value=stats.wakeups)
        yield GaugeMetricFamily("echo_open_ring_pending_bytes",
                                "Bytes in the ring buffer not yet taken by the consumer",
                                value=tracer.ring_pending_bytes())
        yield GaugeMetricFamily("echo_open_ring_size_bytes", "Size of the ring buffer",
                                value=tracer.tuning.ring_size)

    @staticmethod
    def _consumer_figures(consumer: Consumer, pending: int) -> Iterator[Metric]:
        yield CounterMetricFamily("echo_open_events_handled",
                                  "Events the consumer took from the ring and showed, wrote "
                                  "or counted", value=consumer.shown)
        # with records waiting, the lag grows until the consumer takes them: now minus the
        # newest open it handled; with none, it is what the last batch's was (an idle
        # machine is no lag)
        lag_ns = consumer.lag_ns
        if pending and consumer.newest_ts_ns:
            lag_ns = max(lag_ns, time.monotonic_ns() - consumer.newest_ts_ns)
        yield GaugeMetricFamily("echo_open_consumer_lag_seconds",
                                "How far behind the opens the consumer is: with records "
                                "waiting in the ring, the age of the newest open it handled; "
                                "else how old that open was when it was handled",
                                value=lag_ns / 1e9)


class MetricsServer:
    """An HTTP server of Prometheus's text format (any path; /metrics by convention),
    bound when made (an OSError if it cannot listen), serving from its own thread."""

    def __init__(self, address: tuple[str, int],
                 extra: Callable[[], Mapping[str, int]] | None = None) -> None:
        registry = CollectorRegistry(auto_describe=False)
        self._collector = _Collector(extra)
        registry.register(self._collector)  # type: ignore[arg-type]
        ProcessCollector(registry=registry)  # the tracer's own CPU time and memory
        self._server, self._thread = start_http_server(address[1], address[0],
                                                        registry=registry)
        self.started = time.monotonic()

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the port chosen, for a port 0)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def serve(self, tracer: Tracer, consumer: Consumer) -> None:
        """Scrapes read this tracer (started) and consumer from now on."""
        self._collector.attach(tracer, consumer)

    def close(self) -> None:
        """Stop serving; a scrape under way finishes first. Call before tracer.close()."""
        self._collector.detach()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
