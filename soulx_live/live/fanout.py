"""Sink fan-out: one thread per sink, each with its own bus subscriber, writing the current epoch's chunks.

With process isolation every sink sits behind a :class:`~plugins.hold.HoldingSink`, and its thread ticks it
every few milliseconds, so the sink gets a frame each frame period while the worker is late or restarting
(last frame, then the idle loop) on one continuous frame timeline. On barge-in a sink drops chunks of older
epochs and its ``interrupt(epoch)`` is called. A broken sink stops alone; the others go on.
"""
from __future__ import annotations

import logging
import threading
import time

from engine.interface import FrameChunk
from plugins.base import FrameSink, SinkError, av_offset
from soulx_live.bus import EndOfStream, FrameSubscriber
from soulx_live.live.lifecycle import Lifecycle
from soulx_live.live.metrics_hub import MetricsHub
from soulx_live.live.session import LiveSession
from soulx_live.live.threads import ThreadGroup

__all__ = ["SinkFanout"]

log = logging.getLogger(__name__)

POLL_S = 0.05
SUBSCRIBER_WAIT_S = 5.0
SINK_STALL_S = 10.0  # non-live input: the longest the engine waits for a sink to catch up
END_QUIET_S = 3.0  # after the engine finished, a sink that heard nothing this long stops (a starved CPU delays the last chunk)
TICK_S = 0.005  # process isolation: how often a sink thread lets its HoldingSink emit due hold frames
DRAINED_QUIET_S = 0.1  # after the worker drained, a sink whose queue stayed empty this long has everything
HOLD_AFTER_PERIODS = 0.25  # a hold frame is due this many frame periods after a sink's content ran out
AV_OFFSET_EVERY_S = 0.5  # how often each sink's A/V offset is read into the metrics
SINK_PREFIX = "sink-"


class SinkFanout:
    """The run's sinks and their threads."""

    def __init__(self, *, hwm_chunks: int, session: LiveSession, lifecycle: Lifecycle, metrics: MetricsHub,
                 threads: ThreadGroup) -> None:
        self.sinks: list[FrameSink] = []
        self.engine_note = ("", "")  # process isolation: last (state, detail) of the worker; the hold's reason
        self._hwm_chunks = hwm_chunks
        self._session = session
        self._lifecycle = lifecycle
        self._metrics = metrics
        self._threads = threads
        self._started: tuple[str, bool] | None = None  # (bus address, hold) once start() ran

    def start(self, address: str, *, hold: bool) -> None:
        """One thread per sink in :attr:`sinks`. ``hold`` (process isolation): each sink behind a HoldingSink,
        and its thread subscribes before the spec is known (the worker waits for its subscribers)."""
        if not self.sinks:
            log.warning("no sinks enabled: frames go only to the bus at %s", address)
        self._started = (address, hold)
        for sink in self.sinks:
            self._start_one(sink, address, hold)

    def add(self, sink: FrameSink) -> None:
        """A sink added while the session runs (the Studio's switch for a sink the config left off): its thread
        subscribes now and writes from the next chunk on."""
        if self._started is None or self._lifecycle.stopping:
            raise RuntimeError("sinks can only be added while the session runs")
        if any(s.name == sink.name for s in self.sinks):
            raise ValueError(f"there is a sink named {sink.name!r} already")
        self.sinks.append(sink)
        self._start_one(sink, *self._started)

    def _start_one(self, sink: FrameSink, address: str, hold: bool) -> None:
        self._session.counters.sinks[sink.name] = "opening"
        ready = threading.Event()
        self._threads.start(SINK_PREFIX + sink.name, self._sink_loop, sink, address, ready, hold)
        ready.wait(SUBSCRIBER_WAIT_S)

    def running(self) -> bool:
        return self._threads.alive(lambda name: name.startswith(SINK_PREFIX))

    def await_done(self) -> None:
        """Until every sink thread has finished (EndOfStream, or quiet after the end) or the run is closing. A run
        whose engine never gave a spec (it failed to start, or no remote engine answered) has nothing to drain: its
        sink threads wait for that spec until the run closes, so waiting for them here would never end."""
        while not self._lifecycle.closing and self.running() and self._session.spec is not None:
            time.sleep(POLL_S)

    def wait_for_progress(self, frame: int) -> None:
        """Non-live input only: hold the engine until every sink has written up to ``frame``.

        The bus drops chunks for a subscriber that falls behind, which is right for live audio (late video is
        useless) but wrong when a file is processed as fast as possible: there the slowest sink sets the pace.
        Sinks report progress in-process; no extra wire traffic."""
        stall_end = time.monotonic() + SINK_STALL_S
        while not self._lifecycle.closing:
            progress = list(self._session.sink_progress.values())
            if not progress or min(progress) >= frame:
                return
            if time.monotonic() > stall_end:
                log.warning("a sink made no progress for %.0f s; continuing without waiting for it", SINK_STALL_S)
                return
            time.sleep(0.002)

    # -- one sink's thread -----------------------------------------------------------------------

    def _sink_loop(self, sink: FrameSink, address: str, ready: threading.Event, hold: bool) -> None:
        # A sink may ask for a deeper queue than the live default (the recorder prefers late to lost).
        subscriber = FrameSubscriber(address, hwm_chunks=max(self._hwm_chunks, int(getattr(sink, "queue_chunks", 0))))
        session, counters = self._session, self._session.counters
        out: FrameSink = sink
        try:
            if hold:
                ready.set()  # subscribed (ZeroMQ connects in the background); the worker waits for us
            spec = session.await_spec(lambda: self._lifecycle.closing)
            if spec is None:
                return
            if hold:
                from plugins.hold import HoldingSink

                out = HoldingSink(sink, hold_after_s=HOLD_AFTER_PERIODS / float(spec.fps))
            out.open(spec)
            session.sink_progress[sink.name] = -1
            session.sink_frames[sink.name] = 0
            counters.sinks[sink.name] = "open"
            ready.set()
            self._feed(sink.name, out, subscriber, hold)
        except SinkError:
            counters.sinks[sink.name] = "failed"
            raise
        finally:
            session.sink_progress.pop(sink.name, None)  # a finished or failed sink no longer sets the pace
            session.sink_frames.pop(sink.name, None)
            ready.set()
            subscriber.close()
            try:
                out.close()
            finally:
                if counters.sinks.get(sink.name) != "failed":
                    counters.sinks[sink.name] = "closed"

    def _feed(self, name: str, out: FrameSink, subscriber: FrameSubscriber, hold: bool) -> None:
        """Write chunks (of the current epoch) to ``out`` until the session is over; with ``hold`` tick the
        HoldingSink between chunks so held frames go out on time."""
        session = self._session
        timeout_ms = max(1, int(TICK_S * 1000)) if hold else int(POLL_S * 1000)
        written, last_frame, quiet_since = 0, -1, time.monotonic()
        epoch, note = 0, self.engine_note
        held_seen = gaps_seen = 0
        offset_due = time.monotonic()
        while not self._lifecycle.closing:
            if session.epoch > epoch:  # barge-in: the sink drops what it buffered
                epoch = self._interrupt(out, session.epoch)
            if hold and self.engine_note != note:  # the reason the next hold names
                note = self.engine_note
                out.hold("engine late" if note[0] == "running" else f"engine {note[0]}: {note[1]}")  # type: ignore[attr-defined]
            item = subscriber.recv(timeout_ms=timeout_ms)
            if isinstance(item, FrameChunk):
                if item.epoch < session.epoch:
                    session.counters.stale_chunks += 1
                else:
                    if item.epoch > epoch:  # the new epoch's first chunk came before this loop saw the barge-in:
                        epoch = self._interrupt(out, item.epoch)  # drop the old buffer first, never this chunk
                    out.write(item)
                    self._delivered(epoch)
                    self._speech_reached(name, item.first_frame + item.num_frames)
                    written, last_frame, quiet_since = written + 1, item.first_frame + item.num_frames - 1, time.monotonic()
                    session.sink_progress[name] = last_frame
                    session.counters.sinks[name] = f"{written} chunks"
                    if not hold:
                        session.sink_frames[name] = session.sink_frames.get(name, 0) + item.num_frames
            elif isinstance(item, EndOfStream) and (not hold or session.ended.is_set()):
                break  # (a worker stopped for a restart also says EndOfStream: only the real end counts)
            elif item is None and self._session_over(last_frame, quiet_since, hold):
                break
            if hold:
                held_seen = self._tick(name, out, epoch, held_seen)
            gaps_seen = self._count_gaps(name, subscriber, gaps_seen)
            if time.monotonic() >= offset_due:
                offset_due = time.monotonic() + AV_OFFSET_EVERY_S
                self._read_av_offset(name, out)

    @staticmethod
    def _interrupt(out: FrameSink, epoch: int) -> int:
        interrupt = getattr(out, "interrupt", None)
        if interrupt is not None:
            interrupt(epoch)
        return epoch

    def _tick(self, name: str, out: FrameSink, epoch: int, held_seen: int) -> int:
        """Let the HoldingSink emit due hold frames; count them. Returns the held frames seen so far."""
        if out.tick():  # type: ignore[attr-defined]
            self._delivered(epoch)
        filler = getattr(out, "filler", None)
        if filler is None:
            return held_seen
        # the timeline played so far: engine frames only (held frames stand for no fed audio, so counting them
        # would let an utterance report "finished" while its replayed audio is still to come)
        self._session.sink_frames[name] = int(filler.out_frames) - int(filler.filled_frames)
        held = int(filler.filled_frames)
        if held > held_seen:
            self._metrics.observe("add_duplicated_frames", name, held - held_seen)
        return max(held, held_seen)

    def _count_gaps(self, name: str, subscriber: FrameSubscriber, gaps_seen: int) -> int:
        gaps = subscriber.stats.dropped_gaps
        spec = self._session.spec
        if gaps > gaps_seen and spec is not None:
            self._metrics.observe("add_dropped_frames", name, (gaps - gaps_seen) * spec.frames_per_chunk)
            return gaps
        return gaps_seen

    def _speech_reached(self, name: str, engine_frames_end: int) -> None:
        """Silence -> speech latency of the onsets this sink has now written."""
        session = self._session
        onsets = session.onsets
        if onsets is None or session.spec is None:
            return
        fed = session.fed_position(engine_frames_end)
        for latency in onsets.reached(name, fed, time.monotonic(), max(1, len(self.sinks))):
            self._metrics.observe("observe_speech_latency", latency)

    def _read_av_offset(self, name: str, out: FrameSink) -> None:
        try:
            offset = av_offset(out)
        except Exception:  # a sink's report is advisory: it never stops its feed
            log.debug("%s: reading the A/V offset failed", name, exc_info=True)
            return
        if offset is not None:
            self._metrics.observe("set_av_offset", name, offset)

    def _delivered(self, epoch: int) -> None:
        counters = self._session.counters
        self._metrics.observe_delivery(epoch, counters.started_mono, self._session.interrupt_mono)

    def _session_over(self, last_frame: int, quiet_since: float, hold: bool) -> bool:
        """EndOfStream may be dropped for a full subscriber: also stop once the engine is done and this sink
        has the final frame, or nothing has arrived for a while since the engine finished."""
        session = self._session
        if not session.ended.is_set():
            return False
        final = session.final_frame
        if not hold and final is not None and last_frame >= final:
            return True
        now = time.monotonic()
        drained = session.drained_mono
        if drained is not None and now - max(quiet_since, drained) > DRAINED_QUIET_S:
            return True  # the worker published its last chunk and this sink's queue is empty
        return now - max(quiet_since, session.final_mono) > END_QUIET_S

