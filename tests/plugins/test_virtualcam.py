"""The virtual camera sink through the REAL ``pyvirtualcam.Camera``, with only its backend faked.

v4l2loopback cannot be loaded on CI machines (no kernel modules, no /dev/video*), so these tests
register a recording fake with ``pyvirtualcam.register_backend`` - pyvirtualcam's own public backend
boundary, the seam its v4l2loopback/OBS/Unity Capture drivers plug into - and pass ``backend=`` by
name. Everything above that boundary is the real package: ``Camera`` negotiates the fourcc, checks
every frame's dtype and shape against the configured size and format, counts frames and flattens
them to the 1-D uint8 buffer a driver receives. The fake records those buffers, so the assertions
are about what a meeting app would actually receive.

Engine frames are solid colours that encode their frame index, so the index shown in each camera
frame can be read back from its centre pixel after fitting. Deterministic tests drive the sender
with a fake clock (``start_thread=False`` + ``step()``); one test runs the real sender thread for
half a second and checks counts through frame indices, not tight wall-clock thresholds.
"""
from __future__ import annotations

import dataclasses
import glob
import math
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import ClassVar

import numpy as np
import pytest

pyvirtualcam = pytest.importorskip("pyvirtualcam", reason="the [vcam] extra (pyvirtualcam) is needed for the virtual camera tests")
from pyvirtualcam.util import encode_fourcc

from engine.interface import ChunkSpec, FrameChunk
from plugins.base import FrameSink, SinkError
from plugins.frame_fit import FrameFitter
from plugins.settings import VirtualCamConfig
from plugins.virtualcam import VirtualCamSink, make_slate

FAKE = "soulx-test-fake"
SPEC = ChunkSpec(fps=Fraction(25), sample_rate=16000, frames_per_chunk=10, height=64, width=48)


class RecordingBackend:
    """Duck-typed ``pyvirtualcam.Backend`` that keeps what ``Camera`` hands a driver."""

    instances: ClassVar[list[RecordingBackend]] = []
    fail_open: ClassVar[str | None] = None
    fail_send_after: ClassVar[int | None] = None

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: object) -> None:
        if RecordingBackend.fail_open:
            raise RuntimeError(RecordingBackend.fail_open)
        if fourcc not in (encode_fourcc("raw "), encode_fourcc("24BG")):
            raise RuntimeError("unsupported pixel format")
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self._device = device or "/dev/video-fake"
        self.frames: list[np.ndarray] = []
        self.closed = 0
        self._lock = threading.Lock()
        RecordingBackend.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        assert frame.ndim == 1 and frame.dtype == np.uint8 and frame.flags.c_contiguous
        if RecordingBackend.fail_send_after is not None and len(self.frames) >= RecordingBackend.fail_send_after:
            raise RuntimeError("device went away")
        with self._lock:
            self.frames.append(frame.copy())

    def close(self) -> None:
        self.closed += 1

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int:
        return self.fourcc

    def images(self) -> list[np.ndarray]:
        with self._lock:
            return [f.reshape(self.height, self.width, 3) for f in self.frames]


@pytest.fixture
def fake_backend() -> Iterator[type[RecordingBackend]]:
    RecordingBackend.instances, RecordingBackend.fail_open, RecordingBackend.fail_send_after = [], None, None
    pyvirtualcam.register_backend(FAKE, RecordingBackend)
    yield RecordingBackend
    pyvirtualcam.camera.BACKENDS.pop(FAKE, None)  # do not leak into backend=None lookups elsewhere


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        self.now += dt


def _code(index: int) -> tuple[int, int, int]:
    return (index % 256, 77, (index // 256) % 256)


def _chunk(first: int, n: int, seq: int = 0, session: str = "s1") -> FrameChunk:
    frames = np.empty((n, SPEC.height, SPEC.width, 3), np.uint8)
    for i in range(n):
        frames[i] = _code(first + i)
    audio = np.zeros(n * SPEC.samples_per_frame, np.float32)
    return FrameChunk(session, seq, first, frames, audio, first * SPEC.samples_per_frame)


def _index_shown(image: np.ndarray) -> int:
    r, g, b = (int(v) for v in image[image.shape[0] // 2, image.shape[1] // 2])
    return -1 if g != 77 else r + 256 * b


def _sink(width: int = 1280, height: int = 720, fit: str = "letterbox", **kw: object) -> tuple[VirtualCamSink, FakeClock]:
    clock = FakeClock()
    cfg = VirtualCamConfig(enabled=True, width=width, height=height, fps=30, fit=fit)
    kw.setdefault("start_thread", False)
    sink = VirtualCamSink(cfg, backend=FAKE, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]
    return sink, clock


def test_camera_is_opened_in_the_meeting_format_and_starts_with_the_slate(fake_backend: type[RecordingBackend]) -> None:
    sink, _ = _sink()
    assert isinstance(sink, FrameSink)
    sink.open(SPEC)
    try:
        backend = fake_backend.instances[-1]
        assert (backend.width, backend.height, backend.fps) == (1280, 720, 30)
        assert backend.fourcc == encode_fourcc("raw ")  # PixelFormat.RGB as the driver sees it
        assert sink.camera.fmt == pyvirtualcam.PixelFormat.RGB and sink.camera.backend == FAKE
        for _ in range(3):
            sink.step()
        first = backend.images()[0]
        assert first.shape == (720, 1280, 3)
        assert first.mean() > 40 and (first.reshape(-1, 3).max(axis=0) > 150).all()  # a picture, not black
        assert np.array_equal(first, make_slate(FrameFitter(1280, 720, "letterbox")))
        assert sink.shown_indices == [-1, -1, -1] and sink.camera.frames_sent == 3
    finally:
        sink.close()
    assert backend.closed == 1
    sink.close()  # twice is fine
    assert backend.closed == 1


@pytest.mark.parametrize("fit", ["letterbox", "crop"])
def test_chunks_show_in_order_with_25_to_30_fps_mapped_by_pts(fake_backend: type[RecordingBackend], fit: str) -> None:
    sink, clock = _sink(320, 180, fit, latency_frames=2)
    sink.open(SPEC)
    try:
        sink.step()  # tick 0: slate
        sink.write(_chunk(0, 10, 0))
        sink.write(_chunk(10, 10, 1))
        sink.write(_chunk(20, 10, 2))
        for _ in range(38):  # ticks 1..38
            sink.step()
        images = fake_backend.instances[-1].images()
        assert all(img.shape == (180, 320, 3) for img in images)
        shown = [_index_shown(img) for img in images]
        # Anchored at tick 1 + 2 latency ticks = 3: tick k shows engine frame floor((k - 3) * 25 / 30).
        expected = [-1] * 3 + [math.floor((k - 3) * 25 / 30) for k in range(3, 39)]
        assert shown[:3] == [-1, -1, -1]  # slate (not an engine frame, not black)
        assert shown == expected == sink.shown_indices
        assert sorted(set(shown[3:])) == list(range(30))  # every engine frame, in order
        if fit == "letterbox":  # 48x64 portrait into 320x180: pillarboxed with the pad colour
            assert (images[-1][:, :5] == 0).all() and _index_shown(images[-1]) == 29
        else:
            assert (images[-1] == _code(29)).all()
        assert clock.now == pytest.approx(50.0 + 38 / 30)
    finally:
        sink.close()


def test_starving_and_hold_keep_the_last_frame_never_black(fake_backend: type[RecordingBackend]) -> None:
    sink, _ = _sink(320, 180, latency_frames=0)
    sink.open(SPEC)
    try:
        sink.write(_chunk(0, 5))
        for _ in range(20):  # 5 frames last 6 ticks; then 14 ticks of starving
            sink.step()
        sink.hold("engine restarting")
        for _ in range(10):
            sink.step()
        shown = sink.shown_indices
        assert shown[:6] == [0, 0, 1, 2, 3, 4] and shown[6:] == [4] * 24
        assert sink.stats.starved_ticks >= 24
        images = fake_backend.instances[-1].images()
        assert all(np.array_equal(img, images[5]) for img in images[5:])  # identical held frame
        assert images[-1].max() > 0
        sink.write(_chunk(0, 5, session="s2"))  # restarted engine: a new timeline shows at once
        sink.step()
        assert sink.shown_indices[-1] == 0
    finally:
        sink.close()


def test_write_does_not_block_and_does_not_fit(fake_backend: type[RecordingBackend]) -> None:
    sink, _ = _sink()
    sink.open(SPEC)
    try:
        big = _chunk(0, 10)
        t = time.perf_counter()
        for i in range(20):
            sink.write(FrameChunk("s1", i, 10 * i, big.frames, big.audio, 0))
        assert time.perf_counter() - t < 0.5  # hands over references only; fitting happens per sent frame
        assert fake_backend.instances[-1].frames == []
    finally:
        sink.close()


def test_sender_thread_sends_at_the_camera_rate(fake_backend: type[RecordingBackend]) -> None:
    cfg = VirtualCamConfig(enabled=True, width=160, height=90, fps=30, fit="letterbox")
    sink = VirtualCamSink(cfg, backend=FAKE, latency_frames=1)
    sink.open(SPEC)
    t0 = time.perf_counter()
    for c in range(3):  # 30 engine frames = 1.2 s of content, written as the engine would
        sink.write(_chunk(10 * c, 10, c))
        time.sleep(0.2)
    elapsed = time.perf_counter() - t0
    sink.close()
    backend = fake_backend.instances[-1]
    sent = len(backend.frames)
    assert backend.closed == 1 and sent == sink.frames_sent == len(sink.shown_indices)
    # Loose rate check (shared CI cores): about 30 per second, never a free-running burst.
    assert 0.4 * elapsed * 30 <= sent <= elapsed * 30 + 3
    shown = sink.shown_indices
    engine = [i for i in shown if i >= 0]
    assert shown[0] == -1 and engine and engine == sorted(engine)  # slate first, then frames in order
    # Each engine frame stays up for one or two camera ticks (25 -> 30), never more unless starving.
    runs = [engine.count(i) for i in sorted(set(engine))[:-1]]
    assert all(1 <= r <= 2 for r in runs), runs
    assert [_index_shown(img) for img in backend.images()] == shown
    assert sink.stats.ticks == len(engine) and sink.stats.resets == 0  # counters survive close()


def test_backend_failure_names_the_fix(fake_backend: type[RecordingBackend]) -> None:
    fake_backend.fail_open = "No v4l2 loopback device found"
    sink, _ = _sink()
    with pytest.raises(SinkError) as info:
        sink.open(SPEC)
    msg = str(info.value)
    assert "No v4l2 loopback device found" in msg and "Fix:" in msg
    if sys.platform.startswith("linux"):
        assert "modprobe v4l2loopback" in msg
    sink.close()  # after a failed open: harmless


def test_send_failure_in_the_sender_surfaces_on_write(fake_backend: type[RecordingBackend]) -> None:
    fake_backend.fail_send_after = 2
    cfg = VirtualCamConfig(enabled=True, width=160, height=90, fps=30)
    sink = VirtualCamSink(cfg, backend=FAKE)
    sink.open(SPEC)
    try:
        deadline = time.perf_counter() + 5
        while sink.failure is None and time.perf_counter() < deadline:
            time.sleep(0.02)
        with pytest.raises(SinkError, match="device went away"):
            sink.write(_chunk(0, 10))
    finally:
        sink.close()


def test_unknown_backend_name_is_a_clear_error(fake_backend: type[RecordingBackend]) -> None:
    cfg = VirtualCamConfig(enabled=True, width=160, height=90, fps=30)
    with pytest.raises(SinkError, match="no backend named"):
        VirtualCamSink(cfg, backend="no-such-backend").open(SPEC)


@pytest.mark.skipif(not sys.platform.startswith("linux") or bool(glob.glob("/dev/video*")),
                    reason="checks the message when no v4l2loopback device exists")
def test_real_v4l2loopback_backend_without_a_device_explains_the_fix() -> None:
    cfg = VirtualCamConfig(enabled=True, width=160, height=90, fps=30)
    with pytest.raises(SinkError, match="modprobe v4l2loopback"):
        VirtualCamSink(cfg, backend="v4l2loopback").open(SPEC)


def test_daemon_builds_the_sink_when_enabled(tmp_path) -> None:
    from soulx_live.config import load_config
    from soulx_live.factory.sinks import build_sinks

    config = load_config(None, env={}, overrides={
        "sinks.virtualcam.enabled": True, "sinks.virtualcam.device": "/dev/video7",
        "sinks.recorder.enabled": True, "sinks.recorder.path": str(tmp_path / "r.mp4"),
    })
    sinks = build_sinks(config)
    assert [type(s).__name__ for s in sinks] == ["RecorderSink", "VirtualCamSink"]


def test_alpha_puts_the_person_over_the_background_colour(fake_backend: type[RecordingBackend]) -> None:
    """sinks.virtualcam.alpha: the cut-out avatar over an opaque colour (meeting apps ignore alpha); the letterbox
    bars take the same colour, and hold frames (no matte of their own) keep the last matte."""
    clock = FakeClock()
    cfg = VirtualCamConfig(enabled=True, width=320, height=180, fps=30, alpha=True, background="#102030")
    sink = VirtualCamSink(cfg, backend=FAKE, clock=clock, sleep=clock.sleep, start_thread=False, latency_frames=0)
    sink.open(SPEC)
    try:
        chunk = _chunk(0, 5)
        alpha = np.zeros((5, SPEC.height, SPEC.width), np.uint8)
        alpha[:, :, SPEC.width // 2:] = 255  # the right half is the person
        sink.write(dataclasses.replace(chunk, alpha=alpha))
        sink.write(_chunk(5, 5))  # a hold chunk without a matte
        for _ in range(12):
            sink.step()
        images = fake_backend.instances[-1].images()
        for img in (images[0], images[-1]):
            assert img[90, 2].tolist() == [16, 32, 48]  # a bar: the background colour, not black
            row = img[90]
            person = row[row[:, 1] == 77]  # the coded frame pixels that survived (right half)
            backdrop = (row == (16, 32, 48)).all(axis=1)
            assert len(person) > 10 and backdrop.sum() > 320 // 2
    finally:
        sink.close()
