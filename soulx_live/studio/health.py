"""The health figures the Studio charts: the same numbers ``/metrics`` serves, as one JSON object.

Totals and recent percentiles come from the status snapshot (``DaemonMetrics.snapshot``); the per-sink and
per-queue figures are read from the Prometheus registry itself, so the page and a Prometheus scrape can never
disagree.
"""
from __future__ import annotations

import math
import time
from typing import Any

from soulx_live.protocol import StatusReply

__all__ = ["health_figures"]

# Prometheus sample name -> (key in the JSON, label that names the series)
_LABELLED = {
    "soulx_av_offset_seconds": ("av_offset_s", "sink"),
    "soulx_queue_depth": ("queues", "queue"),
    "soulx_dropped_frames_total": ("dropped_frames", "sink"),
    "soulx_duplicated_frames_total": ("held_frames", "sink"),
}


def _labelled(metrics: Any) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {key: {} for key, _ in _LABELLED.values()}
    registry = getattr(metrics, "registry", None)
    if registry is None:
        return out
    for family in registry.collect():
        for sample in family.samples:
            found = _LABELLED.get(sample.name)
            if found is not None:
                key, label = found
                out[key][sample.labels.get(label, "")] = float(sample.value)
    return out


def health_figures(status: StatusReply, metrics: Any) -> dict[str, Any]:
    """One sample for the page's charts; ``metrics`` is the run's ``DaemonMetrics`` (None: metrics are off)."""
    snap = status.metrics

    def num(key: str) -> float | None:
        value = snap.get(key)
        return None if value is None or math.isnan(value) else float(value)  # NaN (no sample yet) -> None

    return {
        "t": time.time(),
        "metrics_on": metrics is not None,
        "state": status.state,
        "session": status.session_id,
        "chunks": status.chunks_done,
        "restarts": status.restarts,
        "chunk_compute_s": num("chunk_compute_last_s"),
        "chunk_budget_s": num("chunk_budget_s"),
        "chunk_compute_p50_s": num("chunk_compute_s_p50"),
        "chunk_compute_p99_s": num("chunk_compute_s_p99"),
        "bargein_p50_s": num("bargein_latency_s_p50"),
        "speech_latency_p50_s": num("speech_latency_s_p50"),
        "memory_mb": num("memory_rss_mb"),
        "gpu_memory_mb": num("gpu_memory_mb"),
        "dropped_total": num("dropped_frames") or 0.0,
        "held_total": num("duplicated_frames") or 0.0,
        **_labelled(metrics),
    }
