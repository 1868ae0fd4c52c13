"""``ObsSink``: the avatar in OBS Studio, through a live feed and obs-websocket.

``open`` starts the :class:`~plugins.obs.feed.FeedServer` (listening on ``sinks.obs.feed_host:feed_port``)
and a binder thread that connects to OBS and creates/updates the scene and Media Source
(:func:`~plugins.obs.setup.ensure_source`). OBS need not be running: the binder retries with backoff,
logs the reason once (an :class:`~plugins.obs.client.ObsError` naming the fix), and binds as soon as
OBS appears; after OBS restarts it reconnects and re-checks the source. ``write``/``hold``/``interrupt``
only touch the feed's queue, and ``on_speech`` only records the wanted scene, so nothing here blocks
the sink thread on OBS or the network.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from engine.interface import ChunkSpec, FrameChunk
from plugins.base import SinkError
from plugins.matte import MatteKeeper, unmix_edges
from plugins.obs.client import Backoff, Connector, ObsConnection, ObsError
from plugins.obs.feed import FeedServer
from plugins.obs.setup import SetupReport, ensure_source, switch_scene

if TYPE_CHECKING:
    from plugins.settings import ObsConfig

__all__ = ["ObsSink"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0  # how often a bound sink checks that OBS is still there


class ObsSink:
    """``FrameSink`` feeding OBS; see the module docstring. ``connector`` replaces obsws-python (tests)."""

    queue_chunks = 2  # a live output: late chunks are better dropped than shown late

    def __init__(self, cfg: ObsConfig, *, connector: Connector | None = None, retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0),
                 name: str = "obs") -> None:
        self.cfg = cfg
        self.name = name
        self.obs = ObsConnection.from_config(cfg, connector=connector)
        self.feed: FeedServer | None = None
        self.report: SetupReport | None = None  # the last successful setup
        self.last_error: ObsError | None = None
        self.binds = 0  # successful setups (again after each OBS restart)
        self._retry_delays = retry_delays
        self._epoch = 0
        self._mattes = MatteKeeper()  # sinks.obs.alpha: hold frames keep the last matte
        self._want_scene: str | None = None
        self._shown_scene: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread: threading.Thread | None = None

    # -- FrameSink -------------------------------------------------------------------------------

    def open(self, spec: ChunkSpec) -> None:
        if self.feed is not None:
            raise SinkError(f"{self.name}: already open")
        feed = FeedServer(self.cfg.feed_host, self.cfg.feed_port, width=spec.width, height=spec.height, fps=spec.fps,
                          sample_rate=spec.sample_rate, max_queue_frames=spec.frames_per_chunk + 3,
                          trim_window=2 * spec.frames_per_chunk, name=f"{self.name}-feed")
        try:
            feed.start()
        except OSError as exc:
            raise SinkError(str(exc)) from None
        self.feed = feed
        self._stop.clear()
        self._thread = threading.Thread(target=self._bind_loop, name=f"{self.name}-bind", daemon=True)
        self._thread.start()

    def write(self, chunk: FrameChunk) -> None:
        feed = self._require_open()
        if chunk.epoch < self._epoch:
            return
        alpha = self._mattes.alpha_of(chunk) if self.cfg.alpha else None
        frames = chunk.frames if alpha is None else unmix_edges(chunk.frames, alpha)  # no pale fringe over OBS
        feed.push(frames, chunk.audio, alpha)

    def hold(self, reason: str) -> None:
        # The feed repeats the last frame with silence by itself while no frames arrive.
        log.info("%s: holding (%s)", self.name, reason)

    def interrupt(self, epoch: int) -> None:
        """Barge-in: drop queued frames of older epochs; the picture holds its last frame."""
        self._epoch = max(self._epoch, epoch)
        if self.feed is not None:
            dropped = self.feed.clear()
            log.debug("%s: interrupt to epoch %d dropped %d queued frames", self.name, epoch, dropped)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.cfg.timeout_s + 1)
            self._thread = None
        self.obs.close()
        if self.feed is not None:
            self.feed.close()
            self.feed = None

    # -- speech events ---------------------------------------------------------------------------

    def av_offset_s(self) -> float | None:
        """Video minus audio time in the feed OBS reads (None before the first muxed frame)."""
        return self.feed.stats.av_offset_s if self.feed is not None else None

    def on_speech(self, speaking: bool) -> None:
        """Switch to ``speaking_scene`` / ``idle_scene`` when configured (applied by the binder thread)."""
        scene = self.cfg.speaking_scene if speaking else self.cfg.idle_scene
        if scene:
            self._want_scene = scene
            self._wake.set()

    # -- state -----------------------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        """OBS is connected and the source is set up."""
        return self._bound.is_set()

    def wait_bound(self, timeout_s: float) -> bool:
        return self._bound.wait(timeout_s)

    def status(self) -> dict[str, Any]:
        feed = self.feed
        return {
            "bound": self.bound,
            "obs": self.obs.where,
            "feed_url": feed.url if feed else None,
            "reader_connected": bool(feed and feed.stats.connected),
            "frames_sent": feed.stats.frames_sent if feed else 0,
            "frames_repeated": feed.stats.frames_repeated if feed else 0,
            "frames_dropped": feed.stats.frames_dropped if feed else 0,
            "frames_trimmed": feed.stats.frames_trimmed if feed else 0,
            "alpha": self.cfg.alpha,
            "last_error": str(self.last_error) if self.last_error else None,
        }

    # -- binder thread ---------------------------------------------------------------------------

    def _require_open(self) -> FeedServer:
        if self.feed is None:
            raise SinkError(f"{self.name}: write() before open() or after close()")
        return self.feed

    def _bind_loop(self) -> None:
        backoff = Backoff(self._retry_delays)
        while not self._stop.is_set():
            try:
                if not self.bound:
                    self._bind()
                    backoff.reset()
                self._apply_scene()
                delay = HEARTBEAT_S
                if self._wake.wait(delay) or self._stop.is_set():
                    self._wake.clear()
                    continue
                self.obs.call("GetVersion")  # heartbeat: notices an OBS restart within HEARTBEAT_S
            except ObsError as exc:
                self._on_error(exc)
                self._wake.wait(backoff.next())
                self._wake.clear()

    def _bind(self) -> None:
        feed = self.feed
        assert feed is not None
        self.report = ensure_source(self.obs, self.cfg.scene, self.cfg.source_name, feed.url)
        self.binds += 1
        self.last_error = None
        self._shown_scene = None
        self._bound.set()
        log.info("%s: bound to OBS (%s)", self.name, self.report.summary())

    def _apply_scene(self) -> None:
        want = self._want_scene
        if want and want != self._shown_scene:
            try:
                switch_scene(self.obs, want)
                log.info("%s: program scene -> %r", self.name, want)
            except ObsError as exc:
                if exc.kind != "request":
                    raise
                log.warning("%s: %s", self.name, exc)  # a missing scene: say so once, keep feeding
            self._shown_scene = want

    def _on_error(self, exc: ObsError) -> None:
        was_bound = self.bound
        self._bound.clear()
        if exc.kind in ("disconnected", "timeout"):
            self.obs.close()
        if was_bound or self.last_error is None or str(exc) != str(self.last_error):
            log.warning("%s: %s", self.name, exc)  # once per distinct problem, not on every retry
        else:
            log.debug("%s: still failing: %s", self.name, exc)
        self.last_error = exc
