"""The whole path with alpha on: ``soulx-live run`` with the engine in its worker process (lite and tiny-random
FlashTalk), the matte made there once, over the real frame bus and the hold filler, to a sink."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.interface import ChunkSpec, FrameChunk

sys.path.insert(0, str(Path(__file__).parents[1] / "daemon"))
from live_support import DaemonThread, live_config, short_tmp, wait_for, write_tone  # noqa: E402

from soulx_live.daemon import Daemon  # noqa: E402

pytestmark = pytest.mark.timeout(240)

TINY = {"engine.kind": "flashtalk", "engine.flashtalk.preset": "tiny-random", "engine.drift.enabled": False,
        "supervisor.heartbeat_timeout_s": 5.0, "supervisor.init_timeout_s": 60.0, "supervisor.shutdown_grace_s": 20.0}


class MatteProbe:
    """Records whether each chunk reaching the sink carried a matte of the frames' shape."""

    name = "probe"
    queue_chunks = 16

    def __init__(self) -> None:
        self.with_alpha = 0
        self.without_alpha = 0
        self.last: np.ndarray | None = None
        self._lock = threading.Lock()

    def open(self, spec: ChunkSpec) -> None:
        pass

    def write(self, chunk: FrameChunk) -> None:
        with self._lock:
            if chunk.alpha is not None:
                assert chunk.alpha.shape == chunk.frames.shape[:3] and chunk.alpha.dtype == np.uint8
                self.with_alpha += 1
                self.last = np.array(chunk.alpha[-1])
            else:
                self.without_alpha += 1  # hold frames (engine late): the sinks keep the last matte

    def hold(self, reason: str) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("engine", ["lite", "tiny-random"])
def test_mattes_reach_the_sinks_from_the_worker(engine: str) -> None:
    with short_tmp() as root:
        speech = write_tone(root / "speech.wav", 8.0)  # margin for a loaded CPU: the tiny engine runs near real time
        overrides: dict[str, object] = {"audio.file": str(speech), "audio.realtime": True,
                                        "sinks.obs": {"enabled": True, "alpha": True}}
        if engine == "tiny-random":
            overrides.update(TINY)
        config = live_config(root, **overrides)
        probe = MatteProbe()
        daemon = Daemon(config, sink_factory=lambda _: [probe])
        assert daemon.isolation == "process"
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: probe.with_alpha >= 5, 120, "five chunks with their matte")
        finally:
            runner.stop()
    assert probe.with_alpha >= 5 and probe.last is not None
    if engine == "lite":  # the built-in avatar: person in the middle, background in the corners
        h, w = probe.last.shape
        assert probe.last[h // 2, w // 2] > 200 and probe.last[2, 2] < 50
