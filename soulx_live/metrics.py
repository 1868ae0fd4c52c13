"""The daemon's health figures: a Prometheus endpoint on loopback and the snapshot ``soulx-live status`` shows.

One :class:`DaemonMetrics` per daemon, with its own ``CollectorRegistry`` (never prometheus_client's global one,
so tests and embedded daemons do not collide). Histograms feed Prometheus; a bounded window of recent samples per
timing gives the p50/p99 the status table prints without a Prometheus server. Every method is cheap and
thread-safe (prometheus_client metrics are; the windows take one lock).
"""
from __future__ import annotations

import logging
import socket
import threading
from collections import deque
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
)

from soulx_live.netaddr import is_loopback_host

__all__ = ["DaemonMetrics", "percentile"]

log = logging.getLogger(__name__)

WINDOW = 512  # recent samples kept per timing for the status percentiles
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0)
LISTEN_BACKLOG = 512  # prometheus_client's server listens with 5: a burst of scrapes timed out in the kernel queue
SCRAPE_TIMEOUT_S = 10.0  # a scraper that stops sending its request holds a thread no longer than this


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN for none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return float(ordered[rank])


class DaemonMetrics:
    """Counters, gauges and histograms of one daemon (see ``configs/daemon.yaml`` ``metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._ttff = Gauge("soulx_time_to_first_frame_seconds", "session start to the first frame at a sink", registry=r)
        self._chunk = Histogram("soulx_chunk_compute_seconds", "engine compute time per chunk",
                                buckets=_LATENCY_BUCKETS, registry=r)
        self._rtf = Histogram("soulx_chunk_compute_ratio", "chunk compute time / chunk duration (< 1: real time)",
                              buckets=_RATIO_BUCKETS, registry=r)
        self._rtf_last = Gauge("soulx_chunk_compute_ratio_last", "compute / duration of the latest chunk", registry=r)
        self._speech = Histogram("soulx_speech_latency_seconds", "speech start after silence to its first frame at a sink",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self._bargein = Histogram("soulx_bargein_latency_seconds", "interrupt to the first idle frame at a sink",
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self._queue = Gauge("soulx_queue_depth", "items waiting in a queue", ["queue"], registry=r)
        self._dropped = Counter("soulx_dropped_frames", "frames a sink never received", ["sink"], registry=r)
        self._duplicated = Counter("soulx_duplicated_frames", "frames a sink repeated (held) while the engine was late",
                                   ["sink"], registry=r)
        self._av_offset = Gauge("soulx_av_offset_seconds", "video minus audio presentation time at a sink", ["sink"],
                                registry=r)
        self._corrections = Counter("soulx_drift_corrections", "drift self-corrections", ["kind"], registry=r)
        self._restarts = Counter("soulx_engine_restarts", "engine worker restarts", ["reason"], registry=r)
        self._cpu_mem = Gauge("soulx_memory_rss_bytes", "resident memory (daemon + engine processes)", registry=r)
        self._gpu_mem = Gauge("soulx_gpu_memory_bytes", "GPU memory held by the engine", registry=r)
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._totals: dict[str, float] = {}
        self._server: Any = None
        self.port: int | None = None  # bound by serve()
        self._server_thread: threading.Thread | None = None

    # -- observations ----------------------------------------------------------------------------

    def observe_chunk(self, compute_s: float, duration_s: float) -> None:
        ratio = compute_s / duration_s if duration_s > 0 else float("inf")
        self._chunk.observe(compute_s)
        self._rtf.observe(ratio)
        self._rtf_last.set(ratio)
        self._remember("chunk_compute_s", compute_s)
        self._remember("chunk_compute_ratio", ratio)
        self._set_total("chunk_compute_last_s", compute_s)  # the Studio's live chart: latest vs its budget
        self._set_total("chunk_budget_s", duration_s)

    def observe_ttff(self, seconds: float) -> None:
        self._ttff.set(seconds)
        self._set_total("ttff_s", seconds)

    def observe_speech_latency(self, seconds: float) -> None:
        self._speech.observe(seconds)
        self._remember("speech_latency_s", seconds)

    def observe_bargein_latency(self, seconds: float) -> None:
        self._bargein.observe(seconds)
        self._remember("bargein_latency_s", seconds)

    def set_queue_depth(self, name: str, n: int) -> None:
        self._queue.labels(queue=name).set(n)
        self._set_total(f"queue_{name}", float(n))

    def add_dropped_frames(self, sink: str, n: int) -> None:
        if n > 0:
            self._dropped.labels(sink=sink).inc(n)
            self._add_total("dropped_frames", n)

    def add_duplicated_frames(self, sink: str, n: int) -> None:
        if n > 0:
            self._duplicated.labels(sink=sink).inc(n)
            self._add_total("duplicated_frames", n)

    def set_av_offset(self, sink: str, seconds: float) -> None:
        self._av_offset.labels(sink=sink).set(seconds)
        with self._lock:
            worst = max(abs(seconds), abs(self._totals.get("av_offset_max_abs_s", 0.0)))
            self._totals["av_offset_max_abs_s"] = worst

    def add_correction(self, kind: str) -> None:
        self._corrections.labels(kind=kind).inc()
        self._add_total("corrections", 1)

    def add_restart(self, reason: str) -> None:
        self._restarts.labels(reason=reason).inc()
        self._add_total("restarts", 1)

    def set_memory(self, cpu_rss_bytes: int, gpu_bytes: int | None = None) -> None:
        self._cpu_mem.set(cpu_rss_bytes)
        self._set_total("memory_rss_mb", cpu_rss_bytes / 2**20)
        if gpu_bytes is not None:
            self._gpu_mem.set(gpu_bytes)
            self._set_total("gpu_memory_mb", gpu_bytes / 2**20)

    # -- reading ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, float]:
        """Flat name -> value for ``StatusReply.metrics``: totals, and p50/p99 of each recent timing."""
        with self._lock:
            out = dict(self._totals)
            windows = {name: list(values) for name, values in self._windows.items()}
        for name, values in windows.items():
            out[f"{name}_p50"] = percentile(values, 50)
            out[f"{name}_p99"] = percentile(values, 99)
        return out

    def exposition(self) -> bytes:
        """The Prometheus text format of this registry (what ``/metrics`` serves)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: any free port) in a daemon thread; returns the bound port."""
        if not is_loopback_host(host):
            log.warning("metrics endpoint on %s is reachable from other machines; metrics.host=127.0.0.1 keeps it local", host)
        self._server = _metrics_server(host, port, self.registry)
        self._server_thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._server_thread.start()
        self.port = int(self._server.server_address[1])
        return self.port

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._server_thread is not None:
            self._server_thread.join(2.0)
            self._server_thread = None

    # -- internals -------------------------------------------------------------------------------

    def _remember(self, name: str, value: float) -> None:
        with self._lock:
            self._windows.setdefault(name, deque(maxlen=WINDOW)).append(float(value))

    def _set_total(self, name: str, value: float) -> None:
        with self._lock:
            self._totals[name] = float(value)

    def _add_total(self, name: str, value: float) -> None:
        with self._lock:
            self._totals[name] = self._totals.get(name, 0.0) + float(value)


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr; a bounded wait for each request line and header."""

    timeout = SCRAPE_TIMEOUT_S

    def log_message(self, *args: Any) -> None:
        pass


class _MetricsServer(ThreadingMixIn, WSGIServer):
    """A thread per scrape, with a listen backlog that absorbs a burst of concurrent scrapers."""

    daemon_threads = True  # a scrape in progress never blocks shutdown
    request_queue_size = LISTEN_BACKLOG


def _metrics_server(host: str, port: int, registry: CollectorRegistry) -> WSGIServer:
    """``/metrics`` of ``registry`` bound on ``host:port`` (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("_MetricsServerFamily", (_MetricsServer,), {"address_family": family})
    return make_server(host.strip("[]"), port, make_wsgi_app(registry), server_class, handler_class=_QuietHandler)
