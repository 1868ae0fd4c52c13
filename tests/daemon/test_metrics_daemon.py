"""The real metrics endpoint of a live daemon (supervised lite worker): scraped over HTTP while it runs, and the
same figures in ``status`` and its table; a kill -9 shows up as a restart."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from live_support import (
    DaemonThread,
    ProbeSink,
    live_config,
    scrape_metrics,
    short_tmp,
    wait_for,
    write_tone,
)

from plugins.recorder import RecorderSink
from soulx_live.control.client import query_status
from soulx_live.daemon import Daemon
from soulx_live.status_table import format_status

pytestmark = pytest.mark.timeout(40)


def test_metrics_endpoint_and_status_table_of_a_running_daemon() -> None:
    with short_tmp() as root:
        speech = write_tone(root / "speech.wav", 10.0)
        config = live_config(root, **{"audio.file": str(speech), "audio.realtime": True,
                                      "metrics.enabled": True, "metrics.port": 0})
        probe = ProbeSink(RecorderSink(root / "rec.mp4"))
        daemon = Daemon(config, sink_factory=lambda _: [probe])
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: len(probe.speech_writes()) >= 5, 15, "speech frames")
            pid = daemon.worker_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: daemon.status().restarts == 1 and daemon.status().state == "running", 12, "restart")
            wait_for(lambda: daemon.metrics is not None and daemon.metrics.port is not None, 5, "metrics endpoint")
            scraped = scrape_metrics(daemon.metrics.port)
            reply = query_status(config.bus, timeout_s=2.0)
        finally:
            assert runner.stop() == 0
    assert scraped["soulx_chunk_compute_seconds_count[]"] >= 5
    assert scraped["soulx_engine_restarts_total[('reason', 'killed')]"] == 1
    assert scraped["soulx_time_to_first_frame_seconds[]"] > 0
    assert scraped["soulx_memory_rss_bytes[]"] > 50 * 2**20
    assert reply.metrics["chunk_compute_s_p50"] > 0 and reply.metrics["restarts"] == 1
    table = format_status(reply)
    assert "chunk compute p50" in table and "memory (RSS)" in table and "engine restarts" not in table
