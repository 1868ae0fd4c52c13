"""The metrics that need a real path to feed them: silence -> speech latency (speech onset at intake -> its first
frame at each sink), the A/V offset each sink presents, and drift self-corrections made in the engine (in the
worker process, carried to the daemon by its heartbeats; or in-process). Scraped over HTTP from a running daemon
and read from ``status``, as a user sees them."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon_fakes import tone, write_audio  # noqa: E402
from live_support import SR, DaemonThread, ProbeSink, live_config, scrape_metrics, short_tmp, wait_for  # noqa: E402

from plugins.recorder import RecorderSink  # noqa: E402
from soulx_live.control.client import query_status  # noqa: E402
from soulx_live.daemon import Daemon  # noqa: E402
from soulx_live.live.speech_latency import SpeechOnsets  # noqa: E402
from soulx_live.status_table import format_status  # noqa: E402

pytestmark = pytest.mark.timeout(90)

# Every chunk of the tiny engine counts as drifting: any colour shift above 0.001 Lab units is "too much".
INJECTED_DRIFT = {"engine.kind": "flashtalk", "engine.flashtalk.preset": "tiny-random", "engine.drift.enabled": True,
                  "engine.drift.color_shift_max": 0.001, "supervisor.heartbeat_timeout_s": 10.0,
                  "supervisor.init_timeout_s": 60.0}


def _speech_with_pauses(path: Path, utterances: int = 3, talk_s: float = 0.8, pause_s: float = 0.8) -> Path:
    talk = tone(talk_s, SR, 300.0, amp=0.4).reshape(-1)
    pause = np.zeros(int(pause_s * SR), np.float32)
    mono = np.concatenate([pause] + [np.concatenate([talk, pause]) for _ in range(utterances)])
    return write_audio(path, mono[None], SR)


def test_onsets_are_found_after_pauses_only() -> None:
    onsets = SpeechOnsets(SR, 640, min_silence_s=0.3)
    talk, short_gap, long_gap = np.full(3200, 0.3, np.float32), np.zeros(1280, np.float32), np.zeros(6400, np.float32)
    audio = np.concatenate([long_gap, talk, short_gap, talk, long_gap, talk])
    onsets.feed(audio, 0, now=100.0, live=True)
    assert onsets.pending == 2  # the 80 ms gap is inside an utterance
    first = onsets.reached("a", 6400 + 1, now=100.0, sinks=2)
    assert len(first) == 1 and first[0] == pytest.approx((audio.size - 6400) / SR)
    assert onsets.reached("a", audio.size, now=100.0, sinks=2) == [pytest.approx((audio.size - 20480) / SR)]
    assert onsets.reached("a", audio.size, now=101.0, sinks=2) == []  # once per sink
    assert len(onsets.reached("b", audio.size, now=101.0, sinks=2)) == 2 and onsets.pending == 0


def test_speech_latency_and_av_offset_of_a_running_daemon() -> None:
    with short_tmp() as root:
        speech = _speech_with_pauses(root / "speech.wav")
        config = live_config(root, **{"audio.file": str(speech), "audio.realtime": True,
                                      "metrics.enabled": True, "metrics.port": 0})
        probe = ProbeSink(RecorderSink(root / "rec.mp4"))
        daemon = Daemon(config, sink_factory=lambda _: [probe])
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: daemon.metrics is not None and daemon.metrics.port is not None, 15, "metrics endpoint")
            wait_for(lambda: scrape_metrics(daemon.metrics.port).get("soulx_speech_latency_seconds_count[]", 0) >= 2,
                     20, "two speech onsets at the sink")
            scraped = scrape_metrics(daemon.metrics.port)
            reply = query_status(config.bus, timeout_s=2.0)
        finally:
            runner.stop()
    # the lite worker: the rest of a 200 ms chunk, 60 ms look-ahead, the hop; never seconds
    assert 0.0 < reply.metrics["speech_latency_s_p50"] < 1.5
    offset = scraped["soulx_av_offset_seconds[('sink', 'recorder')]"]
    assert abs(offset) <= 1 / 25, offset  # within one frame
    assert "silence->speech p50" in format_status(reply) and "A/V offset" in format_status(reply)


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_drift_corrections_reach_metrics_and_status(isolation: str) -> None:
    with short_tmp() as root:
        speech = write_audio(root / "speech.wav", tone(3.0, SR, 300.0, amp=0.4), SR)
        config = live_config(root, **{"audio.file": str(speech), "audio.realtime": isolation == "process",
                                      "supervisor.isolation": isolation, "metrics.enabled": True,
                                      "metrics.port": 0, **INJECTED_DRIFT})
        daemon = Daemon(config, sink_factory=lambda _: [ProbeSink()])
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: daemon.status().metrics.get("corrections", 0) >= 1, 75, "a drift correction")
            scraped = scrape_metrics(daemon.metrics.port)
            reply = query_status(config.bus, timeout_s=2.0)
        finally:
            runner.stop(timeout_s=30)
    kinds = {k: v for k, v in scraped.items() if k.startswith("soulx_drift_corrections_total")}
    assert sum(kinds.values()) >= 1, scraped
    assert set(kinds) <= {"soulx_drift_corrections_total[('kind', 'regenerated')]",
                          "soulx_drift_corrections_total[('kind', 're_anchored')]"}
    assert reply.metrics["corrections"] >= 1 and "drift corrections" in format_status(reply)
