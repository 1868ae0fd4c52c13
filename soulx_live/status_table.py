"""``soulx-live status`` as a readable table: the daemon's state, its sinks and the metrics snapshot."""
from __future__ import annotations

import math

from soulx_live.protocol import StatusReply

__all__ = ["format_status"]

# (metrics key, label, unit scale, unit) in the order they are shown; absent keys are skipped.
_METRIC_ROWS: tuple[tuple[str, str, float, str], ...] = (
    ("ttff_s", "time to first frame", 1000.0, "ms"),
    ("chunk_compute_s_p50", "chunk compute p50", 1000.0, "ms"),
    ("chunk_compute_s_p99", "chunk compute p99", 1000.0, "ms"),
    ("chunk_compute_ratio_p50", "compute / real time p50", 1.0, "x"),
    ("chunk_compute_ratio_p99", "compute / real time p99", 1.0, "x"),
    ("speech_latency_s_p50", "silence->speech p50", 1000.0, "ms"),
    ("bargein_latency_s_p50", "barge-in p50", 1000.0, "ms"),
    ("dropped_frames", "dropped frames", 1.0, ""),
    ("duplicated_frames", "held (repeated) frames", 1.0, ""),
    ("av_offset_max_abs_s", "A/V offset (max |.|)", 1000.0, "ms"),
    ("corrections", "drift corrections", 1.0, ""),
    ("restarts", "engine restarts", 1.0, ""),
    ("memory_rss_mb", "memory (RSS)", 1.0, "MB"),
    ("gpu_memory_mb", "GPU memory", 1.0, "MB"),
)


def _value(value: float, scale: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    scaled = value * scale
    text = f"{scaled:.0f}" if unit in ("", "MB") else f"{scaled:.1f}" if unit == "ms" else f"{scaled:.2f}"
    return f"{text} {unit}".rstrip()


def format_status(reply: StatusReply) -> str:
    """Two aligned columns: what and value; metrics the daemon did not report are left out."""
    rows: list[tuple[str, str]] = [
        ("state", reply.state + (f" ({reply.detail})" if reply.detail else "")),
        ("engine", reply.engine or "-"),
        ("session", reply.session_id or "-"),
        ("uptime", f"{reply.uptime_s:.1f} s"),
        ("chunks", str(reply.chunks_done)),
        ("restarts", str(reply.restarts)),
    ]
    if reply.studio_url:
        rows.append(("studio", f"{reply.studio_url}/  (a login link: soulx-live studio)"))
    rows += [(f"sink {name}", state) for name, state in sorted(reply.sinks.items())]
    metrics = reply.metrics
    for key, label, scale, unit in _METRIC_ROWS:
        if key in metrics and key != "restarts":  # restarts: already a row of their own
            rows.append((label, _value(float(metrics[key]), scale, unit)))
    queues = sorted(k for k in metrics if k.startswith("queue_"))
    rows += [(f"queue {k[len('queue_'):]}", f"{metrics[k]:.0f}") for k in queues]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)
