"""The virtual microphone against a real PulseAudio server (started by the test), on one clock with the camera.

The camera is pyvirtualcam's real ``Camera`` over a recording backend registered through its public
``register_backend`` (v4l2loopback cannot be loaded on this kernel); each frame's send time is recorded. The
microphone is captured back from the remapped virtual source with ``parec`` (``--latency-msec=5``); the capture's
time base comes from the least-delayed read (a lower bound of its latency). A white frame and a tone burst start
at the same frame index; where they come out must be within one frame period.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "daemon"))

from test_audio_devices import (  # the real-server fixture of the audio-input tests
    PulseServer,
    _missing,
)

from engine.interface import ChunkSpec, FrameChunk
from plugins.av_clock import AvClock
from plugins.settings import VirtualCamConfig, VirtualMicConfig
from plugins.virtualmic import VirtualMicSink

pytestmark = [pytest.mark.system("pulseaudio"), pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
              pytest.mark.timeout(60)]

SR, FPS, N = 16000, 25, 5
SPF = SR // FPS
SPEC = ChunkSpec(fps=Fraction(FPS), sample_rate=SR, frames_per_chunk=N, height=32, width=32)
MIC = VirtualMicConfig(enabled=True, sink_name="soulx_test_mic_sink", source_name="soulx_test_mic",
                       description="soulx-live test microphone")


@pytest.fixture
def pulse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    server = PulseServer(tmp_path)
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class Capture:
    """``parec`` of a source into memory, with arrival times per read."""

    def __init__(self, source: str) -> None:
        self.proc = subprocess.Popen(["parec", f"--device={source}", "--format=float32le", f"--rate={SR}",
                                      "--channels=1", "--latency-msec=5"], stdout=subprocess.PIPE)
        self.parts: list[np.ndarray] = []
        self.times: list[tuple[float, int]] = []  # (arrival, samples so far)
        self._n = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.proc.stdout is not None
        while True:
            data = os.read(self.proc.stdout.fileno(), 4 * 160)
            if not data:
                return
            now = time.perf_counter()
            a = np.frombuffer(data[: len(data) // 4 * 4], "<f4")
            self.parts.append(a)
            self._n += a.shape[0]
            self.times.append((now, self._n))

    def wait_flowing(self, timeout_s: float = 10.0) -> None:
        """parec takes up to ~2 s to deliver its first samples here: start measuring only after that."""
        end = time.monotonic() + timeout_s
        while not self.times and time.monotonic() < end:
            time.sleep(0.01)
        assert self.times, "parec delivered nothing"
        time.sleep(0.2)

    def stop(self) -> tuple[np.ndarray, float]:
        """(samples, wall time of sample 0), the time base from the least-delayed read."""
        self.proc.terminate()
        self.proc.wait(5)
        self._thread.join(2)
        base = min(t - n / SR for t, n in self.times)
        return np.concatenate(self.parts), base


def _chunk(k: int, marker_frame: int) -> FrameChunk:
    first = k * N
    frames = np.zeros((N, 32, 32, 3), np.uint8)
    audio = np.zeros(N * SPF, np.float32)
    for i in range(N):
        if first + i >= marker_frame:
            frames[i] = 255
            t = np.arange(SPF) / SR
            audio[i * SPF:(i + 1) * SPF] = 0.5 * np.sin(2 * np.pi * 1000 * (t + (first + i) * SPF / SR))
    return FrameChunk("s", k, first, frames, audio, first * SPF)


def test_microphone_is_created_and_removed(pulse: PulseServer) -> None:
    sink = VirtualMicSink(MIC)
    sink.open(SPEC)
    try:
        assert sink.devices is not None and sink.devices.exists() == (True, True)
        sources = pulse.pactl("list", "sources").stdout
        assert "soulx-live test microphone" in sources
    finally:
        sink.close()
    assert sink.devices.exists() == (False, False)


def test_leftovers_of_a_crashed_run_are_replaced(pulse: PulseServer) -> None:
    pulse.pactl("load-module", "module-null-sink", f"sink_name={MIC.sink_name}")
    sink = VirtualMicSink(MIC)
    sink.open(SPEC)
    try:
        sinks = [line for line in pulse.pactl("list", "short", "sinks").stdout.splitlines() if MIC.sink_name in line]
        assert len(sinks) == 1
    finally:
        sink.close()


def test_voice_and_lips_leave_within_one_frame(pulse: PulseServer, fake_backend) -> None:  # type: ignore[no-untyped-def]
    from plugins.virtualcam import VirtualCamSink

    clock = AvClock(SR)
    cam = VirtualCamSink(VirtualCamConfig(enabled=True, width=32, height=32, fps=FPS), backend=FAKE, av_clock=clock)
    mic = VirtualMicSink(MIC, av_clock=clock)
    sent: list[tuple[float, float]] = []  # (wall, mean pixel) per camera frame
    cam.open(SPEC)
    mic.open(SPEC)
    backend = fake_backend.instances[-1]
    original = backend.send
    backend.send = lambda frame: (sent.append((time.perf_counter(), float(frame.mean()))), original(frame))
    capture = Capture(MIC.source_name)
    capture.wait_flowing()
    marker = 30  # frame index where the picture turns white and the tone starts
    t0 = time.perf_counter()
    for k in range(12):
        chunk = _chunk(k, marker)
        while time.perf_counter() < t0 + k * N / FPS:  # chunks arrive at the real-time pace
            time.sleep(0.002)
        cam.write(chunk)
        mic.write(chunk)
    time.sleep(0.6)
    cam.close()
    mic.close()
    pcm, base = capture.stop()
    white = next(t for t, level in sent if level > 200)
    env = np.convolve(np.abs(pcm), np.ones(32) / 32, mode="same")
    onset = int(np.argmax(env > 0.15))
    assert env.max() > 0.2, "the tone never reached the virtual microphone"
    heard = base + onset / SR
    offset = heard - white
    print(f"virtual mic vs camera: voice {offset * 1000:+.1f} ms relative to the picture (one frame = 40 ms)")
    assert abs(offset) <= 1 / FPS, f"voice {offset * 1000:+.1f} ms from the picture (limit one frame, 40 ms)"


FAKE = "soulx-test-fake-mic"


@pytest.fixture
def fake_backend():  # type: ignore[no-untyped-def]
    import pyvirtualcam
    from test_virtualcam import RecordingBackend

    RecordingBackend.instances, RecordingBackend.fail_open, RecordingBackend.fail_send_after = [], None, None
    pyvirtualcam.register_backend(FAKE, RecordingBackend)
    yield RecordingBackend
    pyvirtualcam.camera.BACKENDS.pop(FAKE, None)


def test_daemon_builds_camera_and_microphone_on_one_clock() -> None:
    from soulx_live.config import SoulxConfig
    from soulx_live.factory.sinks import build_sinks

    config = SoulxConfig.model_validate({"sinks": {"virtualcam": {"enabled": True}, "virtualmic": {"enabled": True}}})
    cam, mic = build_sinks(config)
    assert cam.av_clock is not None and cam.av_clock is mic.av_clock
