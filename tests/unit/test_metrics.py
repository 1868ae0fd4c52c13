"""DaemonMetrics: the real Prometheus endpoint scraped over HTTP, snapshot percentiles, status table."""
from __future__ import annotations

import math
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from soulx_live.metrics import DaemonMetrics, percentile
from soulx_live.protocol import StatusReply
from soulx_live.status_table import format_status


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_endpoint_serves_every_observation_in_prometheus_format() -> None:
    m = DaemonMetrics()
    port = m.serve("127.0.0.1", 0)
    try:
        for compute in (0.05, 0.1, 0.3):
            m.observe_chunk(compute, 0.2)
        m.observe_ttff(1.25)
        m.set_queue_depth("intake_samples", 640)
        m.add_dropped_frames("recorder", 5)
        m.add_duplicated_frames("recorder", 3)
        m.set_av_offset("virtualcam", -0.012)
        m.add_correction("color")
        m.add_restart("killed")
        m.set_memory(300 * 2**20, 2 * 2**30)
        got = _scrape(port)
    finally:
        m.close()
    assert got[("soulx_chunk_compute_seconds_count", ())] == 3
    assert got[("soulx_chunk_compute_seconds_sum", ())] == pytest.approx(0.45)
    assert got[("soulx_chunk_compute_ratio_last", ())] == pytest.approx(1.5)
    assert got[("soulx_time_to_first_frame_seconds", ())] == 1.25
    assert got[("soulx_queue_depth", (("queue", "intake_samples"),))] == 640
    assert got[("soulx_dropped_frames_total", (("sink", "recorder"),))] == 5
    assert got[("soulx_duplicated_frames_total", (("sink", "recorder"),))] == 3
    assert got[("soulx_av_offset_seconds", (("sink", "virtualcam"),))] == pytest.approx(-0.012)
    assert got[("soulx_drift_corrections_total", (("kind", "color"),))] == 1
    assert got[("soulx_engine_restarts_total", (("reason", "killed"),))] == 1
    assert got[("soulx_memory_rss_bytes", ())] == 300 * 2**20
    assert got[("soulx_gpu_memory_bytes", ())] == 2 * 2**30


def test_two_daemons_do_not_share_a_registry() -> None:
    a, b = DaemonMetrics(), DaemonMetrics()
    a.add_restart("killed")
    assert b"soulx_engine_restarts_total{" not in b.exposition()
    assert b'soulx_engine_restarts_total{reason="killed"} 1.0' in a.exposition()


def test_snapshot_percentiles_and_totals() -> None:
    m = DaemonMetrics()
    for i in range(1, 101):
        m.observe_chunk(i / 1000, 0.2)
    m.add_dropped_frames("a", 2)
    m.add_dropped_frames("b", 3)
    m.add_dropped_frames("b", 0)
    snap = m.snapshot()
    assert snap["chunk_compute_s_p50"] == pytest.approx(0.050, abs=0.0011)
    assert snap["chunk_compute_s_p99"] == pytest.approx(0.099, abs=0.0011)
    assert snap["chunk_compute_ratio_p99"] == pytest.approx(0.495, abs=0.006)
    assert snap["dropped_frames"] == 5
    assert math.isnan(percentile([], 50))


def test_status_table_shows_state_sinks_and_metrics_aligned() -> None:
    m = DaemonMetrics()
    m.observe_chunk(0.12, 0.2)
    m.observe_ttff(0.8)
    m.set_memory(512 * 2**20)
    reply = StatusReply(state="running", engine="lite", session_id="abc", chunks_done=42, restarts=1, uptime_s=12.34,
                        sinks={"recorder": "42 chunks"}, metrics=m.snapshot())
    text = format_status(reply)
    lines = text.splitlines()
    assert lines[0].split() == ["state", "running"]
    assert any(line.split()[-2:] == ["42", "chunks"] and line.startswith("sink recorder") for line in lines)
    assert "120.0 ms" in next(line for line in lines if line.startswith("chunk compute p50"))
    assert "800.0 ms" in next(line for line in lines if line.startswith("time to first frame"))
    assert "512 MB" in next(line for line in lines if line.startswith("memory (RSS)"))
    values_column = {line.index(line.split("  ")[-1].strip()) for line in lines}
    assert len(values_column) == 1, f"values are not aligned:\n{text}"


def test_a_burst_of_200_concurrent_scrapes_all_answer_promptly() -> None:
    """Issue 18: with prometheus_client's listen backlog of 5, 200 concurrent scrapes lost SYNs (retried after
    1 s, 3 s, ...) and 12 timed out at 20 s. All 200 connect at once here, on loopback, and each must answer
    within 5 s (a dropped SYN alone costs 1 s, two cost 3 s)."""
    import socket
    import threading
    import time

    m = DaemonMetrics()
    port = m.serve("127.0.0.1", 0)
    n = 200
    go = threading.Barrier(n)
    took: list[float] = []
    failed: list[str] = []

    def scrape() -> None:
        go.wait()
        t0 = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                connected = time.monotonic() - t0
                conn.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
            assert data.startswith(b"HTTP/1.0 200") and b"soulx_engine_restarts" in data
            took.append(connected)
        except (OSError, AssertionError) as exc:
            failed.append(repr(exc))

    threads = [threading.Thread(target=scrape, daemon=True) for _ in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        m.close()
    assert not failed, f"{len(failed)} of {n} scrapes failed: {failed[:3]}"
    assert len(took) == n and max(took) < 0.9, f"slowest connect {max(took):.2f} s: SYNs were dropped (backlog full)"
