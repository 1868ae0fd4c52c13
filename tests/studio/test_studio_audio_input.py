"""The page's audio input pick against a real PulseAudio server (a private one with a null sink): picking
"what the computer plays" mixes the sink's monitor under the typed speech, picking "typed text only" stops it."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from studio_support import Page, ProbeSink, running_studio, wait_for  # noqa: E402
from test_audio_devices import SINK, PulseServer, _missing, pulse  # noqa: E402, F401 - the fixture

pytestmark = [pytest.mark.system("pulseaudio"), pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
              pytest.mark.timeout(120)]


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 48000)) / 48000
    mono = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([mono, mono], axis=1)


def test_loopback_input_picked_on_the_page_reaches_the_engine(pulse: PulseServer) -> None:
    probe = ProbeSink(name="probe")
    with running_studio(sink_factory=lambda config: [probe]) as (daemon, url):
        base, path = url.split("/login", 1)
        page = Page(base)
        assert page.request("/login" + path).status == 200
        state = page.request("/api/state").json()
        assert state["audio"]["switchable"] and state["audio"]["pick"] == "none"
        reply = page.request("/api/audio", {"source": "loopback", "device": SINK})
        assert reply.status == 200, reply.body
        assert page.request("/api/state").json()["audio"]["pick"] == "loopback"
        start = len(probe.snapshot())
        player = pulse.play(_tone(3.0))
        wait_for(lambda: any(w.rms > 0.1 for w in probe.snapshot()[start:]), 15, "the played tone in the chunks")
        player.wait(10)
        assert page.request("/api/audio", {"source": "none"}).status == 200
        time.sleep(0.5)
        quiet_from = len(probe.snapshot())
        player = pulse.play(_tone(1.5))
        time.sleep(2.0)
        player.wait(10)
        assert all(w.rms < 0.01 for w in probe.snapshot()[quiet_from + 2:]), "the input was not switched off"
        bad = page.request("/api/audio", {"source": "loopback", "device": "no-such-sink"})
        assert bad.status == 409 and "no-such-sink" in bad.json()["message"]
