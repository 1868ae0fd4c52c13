"""The run's Prometheus metrics: served on loopback when ``metrics.enabled``, fed from every thread.

A metrics failure never stops the session: every observation goes through :meth:`MetricsHub.observe`, which
logs and swallows errors. A busy port costs the endpoint, not the session.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from soulx_live.config import MetricsConfig
from soulx_live.corrections import CorrectionTally

__all__ = ["MetricsHub"]

log = logging.getLogger(__name__)


class MetricsHub:
    """``soulx_live.metrics.DaemonMetrics`` behind a never-raising facade (``metrics`` is None when off)."""

    def __init__(self, config: MetricsConfig) -> None:
        self._config = config
        self.metrics: Any = None
        self._first_frame_seen = False
        self._bargein_seen = 0  # newest epoch whose latency was observed
        self._corrections = CorrectionTally()

    def start(self) -> None:
        cfg = self._config
        if not cfg.enabled:
            return
        try:
            from soulx_live.metrics import DaemonMetrics
        except ImportError as exc:
            log.debug("metrics are not part of this build: %s", exc)
            return
        metrics = DaemonMetrics()
        try:
            port = metrics.serve(cfg.host, cfg.port)
            log.info("metrics on http://%s:%d/metrics", cfg.host, port)
        except OSError as exc:
            log.warning("metrics endpoint not served on %s:%d (%s); set metrics.port (0: any free port)",
                        cfg.host, cfg.port, exc)
        self.metrics = metrics

    def close(self) -> None:
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            try:
                metrics.close()
            except Exception:
                log.exception("closing the metrics endpoint failed")

    def observe(self, method: str, *args: object) -> None:
        """``metrics.<method>(*args)`` when metrics are on; errors are logged, never raised."""
        metrics = self.metrics
        if metrics is None:
            return
        try:
            getattr(metrics, method)(*args)
        except Exception:
            log.debug("metrics.%s failed", method, exc_info=True)

    def note_corrections(self, regenerated: int, re_anchored: int) -> None:
        """The engine session's correction totals (after a chunk, or from a worker heartbeat): count the new ones."""
        for kind, n in self._corrections.new(regenerated, re_anchored).items():
            log.info("drift self-correction: %d chunk(s) %s", n, kind.replace("_", "-"))
            for _ in range(n):
                self.observe("add_correction", kind)

    def engine_restarted(self) -> None:
        self._corrections.restart()

    def observe_delivery(self, sink_epoch: int, started_mono: float, interrupt_mono: float) -> None:
        """A sink got frames: time to first frame (once) and barge-in latency (once per epoch)."""
        now = time.monotonic()
        if not self._first_frame_seen:
            self._first_frame_seen = True
            self.observe("observe_ttff", now - started_mono)
        if sink_epoch > self._bargein_seen and interrupt_mono:
            self._bargein_seen = sink_epoch
            self.observe("observe_bargein_latency", now - interrupt_mono)

    def snapshot(self, engine_rss_mb: float = 0.0, engine_gpu_mb: int = 0) -> dict[str, float]:
        """The numbers ``status`` shows, after refreshing memory (this process plus the engine worker's)."""
        metrics = self.metrics
        if metrics is None:
            return {}
        try:
            from soulx_live.memory_watch import process_rss_bytes

            own = process_rss_bytes(os.getpid(), children=False)
            gpu = engine_gpu_mb * 2**20 if engine_gpu_mb else None
            metrics.set_memory(own + int(engine_rss_mb * 2**20), gpu)
            return {str(k): float(v) for k, v in metrics.snapshot().items()}
        except Exception:
            log.debug("metrics snapshot failed", exc_info=True)
            return {}
