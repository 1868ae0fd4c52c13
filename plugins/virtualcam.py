"""The virtual camera sink: the avatar as a webcam for meeting apps, through pyvirtualcam.

Backends (chosen by pyvirtualcam): v4l2loopback on Linux, OBS Virtual Camera on Windows and macOS,
Unity Capture on Windows. The camera runs in a meeting-friendly format (``sinks.virtualcam``:
1280x720 at 30 fps by default, RGB) with the avatar fitted by letterbox or crop.

Threads: ``write`` (the bus subscriber thread) only hands the chunk's frames to the pacer under a
lock and returns; a sender thread owns the camera. It wakes on the camera's own clock
(:class:`~plugins.pacer.TickClock`, one tick per camera frame period), asks the
:class:`~plugins.pacer.MediaClockPacer` which engine frame is due by pts, fits it and sends it. So:

- before the first chunk (engine warming up) the camera shows a "starting" slate, the built-in
  avatar fitted to the camera, never black;
- when the engine starves, stalls or restarts (``hold``) the last frame stays up;
- 25 fps engine frames become 30 fps camera frames by pts (one frame in six shown twice).

The chunk's audio is not used: a camera carries no sound; the audio goes to the audio output.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from engine.extras import require
from engine.interface import ChunkSpec, FrameChunk
from plugins.av_clock import AvClock
from plugins.base import SinkError
from plugins.frame_fit import FrameFitter
from plugins.matte import Backdrop, MatteKeeper, unmix_edges
from plugins.pacer import MediaClockPacer, PacerStats, TickClock

if TYPE_CHECKING:
    from plugins.settings import VirtualCamConfig

__all__ = ["VirtualCamSink", "backend_fix_hint", "make_slate", "nearest_frame"]

log = logging.getLogger(__name__)

SLATE_AVATAR_SIZE = 512  # the built-in avatar is drawn at this size, then fitted (drawing is ~1 s at 512)


def backend_fix_hint(platform: str) -> str:
    """What to do when no virtual camera backend opens on ``platform`` (a ``sys.platform`` value)."""
    if platform.startswith("linux"):
        return ("load the v4l2loopback kernel module, e.g. `sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
                "card_label=Avatar` (package v4l2loopback-dkms), and check that your user can write /dev/videoN")
    if platform in ("win32", "darwin"):
        return ("install OBS Studio (28 or newer) and start its Virtual Camera once (Tools/Controls > Start Virtual Camera)"
                + (", or install the Unity Capture driver" if platform == "win32" else ""))
    return f"pyvirtualcam has no virtual camera backend for {platform}"


def nearest_frame(sample: int | None, samples_per_frame: int) -> int | None:
    """The frame nearest to the sound playing at timeline ``sample`` (not the one that started before it): camera
    ticks (30 fps) and engine frames (25 fps) do not line up, and rounding halves the worst mismatch."""
    return None if sample is None else (sample + samples_per_frame // 2) // samples_per_frame


def make_slate(fitter: FrameFitter, caption: str = "starting...") -> np.ndarray:
    """The built-in avatar fitted to the camera with a small caption: what shows before any frame."""
    from engine.lite.default_avatar import draw_default_avatar

    slate = fitter.fit(draw_default_avatar(SLATE_AVATAR_SIZE))
    if caption:
        h = fitter.height
        scale = max(0.4, h / 900.0)
        org = (max(4, h // 40), h - max(6, h // 30))
        cv2.putText(slate, caption, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(2, int(4 * scale)), cv2.LINE_AA)
        cv2.putText(slate, caption, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
    return slate


class VirtualCamSink:
    """``FrameSink`` driving a pyvirtualcam ``Camera``; see the module docstring.

    ``backend`` picks a pyvirtualcam backend by name (None: the platform's own; tests register a fake
    one with ``pyvirtualcam.register_backend``). ``clock``/``sleep`` drive the camera clock (tests);
    ``start_thread=False`` leaves sending to explicit :meth:`step` calls (deterministic tests).
    ``latency_frames``: camera ticks of jitter buffer before the first frames show.
    """

    queue_chunks = 2  # a live output: a short bus queue, late chunks are better dropped than shown late

    def __init__(self, cfg: VirtualCamConfig, *, backend: str | None = None, name: str = "virtualcam",
                 pad_rgb: tuple[int, int, int] = (0, 0, 0), latency_frames: int = 2, max_drift_frames: int = 6,
                 clock: Callable[[], float] | None = None, sleep: Callable[[float], object] | None = None,
                 start_thread: bool = True, av_clock: AvClock | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.backend = backend
        # sinks.virtualcam.alpha: the person over an opaque background (letterbox bars in its colour)
        self.backdrop = Backdrop(cfg.background) if cfg.alpha else None
        self._mattes = MatteKeeper()
        self.fitter = FrameFitter(cfg.width, cfg.height, cfg.fit, self.backdrop.pad_rgb if self.backdrop else pad_rgb)
        self._latency, self._max_drift = latency_frames, max_drift_frames
        self._clock_fn, self._sleep_fn = clock, sleep
        self._start_thread = start_thread
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._camera: Any = None
        self._pacer: MediaClockPacer | None = None
        self._tick_clock: TickClock | None = None
        self._slate: np.ndarray | None = None
        self._shown: tuple[int, np.ndarray] | None = None  # (engine index, fitted frame) last sent
        self._error: SinkError | None = None
        self._final_stats = PacerStats()
        self.frames_sent = 0
        self.shown_indices: list[int] = []  # engine index per camera frame, -1 for the slate (bounded)
        self.av_clock = av_clock  # shared with the virtual microphone: frames due by the audio timeline
        self._samples_per_frame = 0
        self._spec_fps: Fraction | float = 25
        self._av_offset_s: float | None = None
        self._epoch = 0

    # -- FrameSink -----------------------------------------------------------------------------

    def open(self, spec: ChunkSpec) -> None:
        if self._camera is not None:
            raise SinkError(f"{self.name}: already open")
        pyvirtualcam = require("pyvirtualcam", "vcam", "the virtual camera sink")
        self._samples_per_frame = spec.samples_per_frame
        self._spec_fps = spec.fps
        self._slate = make_slate(self.fitter)
        self._camera = self._open_camera(pyvirtualcam)
        self._pacer = MediaClockPacer(spec.fps, Fraction(self.cfg.fps), latency_ticks=self._latency,
                                      max_drift_frames=self._max_drift, external_clock=self.av_clock is not None)
        kwargs: dict[str, Any] = {"max_late_ticks": self._max_drift}
        if self._clock_fn is not None:
            kwargs["clock"] = self._clock_fn
        elif self.av_clock is not None:
            kwargs["clock"] = self.av_clock.now  # ticks and the shared clock on one time base
        kwargs["sleep"] = self._sleep_fn if self._sleep_fn is not None else self._stop.wait
        self._tick_clock = TickClock(self.cfg.fps, **kwargs)
        log.info("%s: %s camera %s at %dx%d %d fps (%s), engine %s fps", self.name, self._camera.backend,
                 self._camera.device, self.cfg.width, self.cfg.height, self.cfg.fps, self.cfg.fit, spec.fps)
        if self._start_thread:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-sender", daemon=True)
            self._thread.start()

    def write(self, chunk: FrameChunk) -> None:
        if self._error is not None:
            raise self._error
        if self._pacer is None:
            raise SinkError(f"{self.name}: write() before open() or after close()")
        pixels = chunk.frames
        if self.backdrop is not None:
            alpha = self._mattes.alpha_of(chunk)
            if alpha is not None:  # RGBA through the pacer; the sender lays it over the backdrop when it fits it
                pixels = np.concatenate([unmix_edges(pixels, alpha), alpha[..., None]], axis=3)
        frames = [pixels[i] for i in range(chunk.num_frames)]
        with self._lock:
            if chunk.epoch < self._epoch:
                return  # stale: from before a barge-in
            if self.av_clock is not None:
                self.av_clock.observe(chunk.audio_t0, n_samples=int(chunk.audio.shape[0]), epoch=chunk.epoch,
                                  session=chunk.session_id)
            self._pacer.push(chunk.first_frame, frames, session=chunk.session_id)

    def interrupt(self, epoch: int) -> None:
        """Barge-in: frames not shown yet are dropped; the last frame stays up until the new epoch's arrive."""
        with self._lock:
            self._epoch = max(self._epoch, epoch)
            if self._pacer is not None:
                self._pacer.drop_buffered()

    def hold(self, reason: str) -> None:
        # The sender keeps showing the last frame; the next chunk starts fresh at the next tick.
        log.info("%s: holding the last frame (%s)", self.name, reason)
        if self._pacer is not None:
            with self._lock:
                self._pacer.resync()

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5.0)
            if thread.is_alive():
                log.warning("%s: sender thread did not stop within 5 s", self.name)
        camera, self._camera = self._camera, None
        if self._pacer is not None:
            self._final_stats = self._pacer.stats
        self._pacer = None
        if camera is not None:
            try:
                camera.close()
            except Exception as exc:  # noqa: BLE001 - closing must not mask the session's own result
                log.warning("%s: closing the camera failed: %s", self.name, exc)
            log.info("%s: closed after %d frames", self.name, self.frames_sent)

    # -- sending -------------------------------------------------------------------------------

    @property
    def stats(self) -> PacerStats:
        """Pacing counters (kept after ``close``)."""
        return self._pacer.stats if self._pacer is not None else self._final_stats

    @property
    def failure(self) -> SinkError | None:
        """Why the sender thread stopped (raised again by the next ``write``), or None."""
        return self._error

    @property
    def camera(self) -> Any:
        """The pyvirtualcam ``Camera`` while open (None otherwise)."""
        return self._camera

    def av_offset_s(self) -> float | None:
        """The frame shown at the latest tick minus the sound due then (by the shared A/V clock, or the camera's own
        media clock without a microphone), in seconds; None before the first frame."""
        return self._av_offset_s

    def step(self) -> int:
        """Wait for the next camera tick, send the frame due then, return the tick number."""
        clock, pacer, camera = self._tick_clock, self._pacer, self._camera
        if clock is None or pacer is None or camera is None:
            raise SinkError(f"{self.name}: step() before open() or after close()")
        tick = clock.wait_next()
        with self._lock:
            spf = self._samples_per_frame
            if self.av_clock is None:
                due = pacer.frame_for_tick(tick)
                ideal = pacer.source_index(tick)  # the frame this tick's instant stands for on the media clock
                sample = None if ideal is None else ideal * spf + spf // 2
            else:  # the shared clock decides which frame is due, so the microphone and the camera agree
                sample = self.av_clock.sample_at(clock.deadline(tick))
                due = pacer.frame_for_index(nearest_frame(sample, spf))
            if due is not None and sample is not None and spf:
                # the sound playing now is at `sample`; the picture shows frame due[0] (its centre): how late it is
                self._av_offset_s = (sample - (due[0] * spf + spf // 2)) / (spf * float(self._spec_fps))
        frame = self._fitted(due)
        try:
            camera.send(frame)
        except Exception as exc:
            raise SinkError(f"{self.name}: sending a frame to the virtual camera failed: {exc}") from exc
        self.frames_sent += 1
        if len(self.shown_indices) < 100_000:
            self.shown_indices.append(due[0] if due is not None else -1)
        return tick

    def _fitted(self, due: tuple[int, np.ndarray] | None) -> np.ndarray:
        if due is None:
            assert self._slate is not None
            return self._slate
        if self._shown is None or self._shown[0] != due[0]:
            frame = due[1]
            fitted = self.backdrop.over(frame, self.fitter) if self.backdrop is not None and frame.shape[2] == 4 \
                else self.fitter.fit(frame)
            self._shown = (due[0], fitted)
        return self._shown[1]

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.step()
        except SinkError as exc:
            log.error("%s: %s", self.name, exc)
            self._error = exc
        except Exception as exc:
            log.exception("%s: sender thread failed", self.name)
            self._error = SinkError(f"{self.name}: sender thread failed: {exc}")

    def _open_camera(self, pyvirtualcam: Any) -> Any:
        import sys

        known = sorted(pyvirtualcam.camera.BACKENDS)
        if self.backend is not None and self.backend not in known:
            raise SinkError(f"{self.name}: pyvirtualcam has no backend named {self.backend!r} (available: {known})")
        try:
            return pyvirtualcam.Camera(self.cfg.width, self.cfg.height, self.cfg.fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                       device=self.cfg.device or None, backend=self.backend)
        except Exception as exc:
            where = f"device {self.cfg.device!r}" if self.cfg.device else "any virtual camera device"
            raise SinkError(f"{self.name}: cannot open {where} at {self.cfg.width}x{self.cfg.height} "
                            f"{self.cfg.fps} fps: {exc}. Fix: {backend_fix_hint(sys.platform)}") from exc
