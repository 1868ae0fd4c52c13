"""The tiny-random FlashHead engine (``engine.kind: flashhead``) through the real daemon: a torch worker process,
the ZeroMQ frame bus, the mp4 recorder; the recording is whole and its sound and picture agree within one frame.

Nothing is faked: the engine is FlashHead's real streaming loop (the FlashHead variant of the DiT at tiny width
with random weights, the FlashTalk sampler / colour match / motion re-encode, the wav2vec2 front end without
loudness normalisation) on the CPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon_fakes import decoded_lengths  # noqa: E402
from live_support import ProbeSink, assert_contiguous, live_config, short_tmp, write_tone  # noqa: E402

from plugins.recorder import RecorderSink  # noqa: E402
from soulx_live.daemon import Daemon  # noqa: E402

pytestmark = pytest.mark.timeout(150)

FLASHHEAD_TINY = {"engine.kind": "flashhead", "engine.flashhead.preset": "tiny-random", "engine.drift.enabled": False,
                  "supervisor.heartbeat_timeout_s": 10.0, "supervisor.init_timeout_s": 60.0,
                  "supervisor.shutdown_grace_s": 30.0}


def test_tiny_flashhead_streams_through_the_daemon_to_the_recorder() -> None:
    pytest.importorskip("torch")
    with short_tmp() as root:
        speech = write_tone(root / "speech.wav", 3.0)
        out = root / "rec.mp4"
        config = live_config(root, **{"audio.file": str(speech), "audio.realtime": True, **FLASHHEAD_TINY})
        probe = ProbeSink(RecorderSink(out))
        daemon = Daemon(config, sink_factory=lambda _: [probe])
        assert daemon.isolation == "process"
        assert daemon.run() == 0  # a file session ends by itself once its audio is rendered
        assert probe.closed and daemon.spec is not None and (daemon.spec.width, daemon.spec.height) == (48, 64)
        offset = probe.av_offset_s()
        writes = probe.snapshot()
        assert_contiguous(writes)
        frames, fps, _pts, samples, rate = decoded_lengths(out)
    assert offset is not None and abs(offset) <= 1 / 25, offset  # sound and picture within one frame
    assert frames == sum(w.n for w in writes) >= 72 and fps == 25  # 3 s at 25 fps, 4 frames a chunk
    assert abs(samples / rate - frames / fps) <= 1 / fps, (samples / rate, frames / fps)
    # the speech reached the recorder; how much of it depends on the CPU's load (an engine behind real time drops
    # the oldest audio beyond engine.max_backlog_s, never the timeline): 36 of 75 frames idle, 28 on a loaded runner
    assert sum(w.n for w in writes if w.rms > 0.05) >= 8
