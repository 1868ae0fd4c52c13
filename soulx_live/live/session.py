"""What the threads of one live session share: the chunk spec, the barge-in epoch, the fed audio timeline,
how far each sink got, the end markers and the status counters.

One writer per field (noted beside it); readers on other threads tolerate a value one step old.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.interface import ChunkSpec
from soulx_live.live.speech_latency import SpeechOnsets

__all__ = ["Counters", "LiveSession"]

POLL_S = 0.05


@dataclass
class Counters:
    """Numbers for ``status``; written by one thread each, read by the control thread."""

    started_mono: float = field(default_factory=time.monotonic)
    detail: str = ""
    session_id: str | None = None
    chunks: int = 0
    frames: int = 0
    audio_dropped: int = 0
    bus_not_sent: int = 0
    bad_audio_packets: int = 0
    stale_chunks: int = 0  # chunks of an older barge-in epoch dropped before a sink
    interrupts: int = 0
    sinks: dict[str, str] = field(default_factory=dict)


class LiveSession:
    """Shared state of one session (see the module docstring)."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.spec: ChunkSpec | None = None  # engine thread, once
        self._spec_ready = threading.Event()
        # barge-in: the newest epoch (interrupt, under epoch_lock) and when it was asked for
        self.epoch = 0
        self.epoch_lock = threading.Lock()
        self.feed_lock = threading.Lock()  # audio moving to the engine vs. a barge-in's flush (taken first)
        self.interrupt_mono = 0.0
        # the fed audio timeline (engine thread): samples moved to the engine, and samples of it that never
        # became frames (in-process resets after a barge-in)
        self.fed_samples = 0
        self.timeline_skip = 0
        self.engine_dropped = 0  # worker: samples its client dropped while it restarted (supervised driver)
        self.onsets: SpeechOnsets | None = None  # speech onsets on the fed timeline, once the spec is known
        # per sink (its thread): last frame written (sets the pace of non-live input) and frames written,
        # held ones included (how far the sink has played the timeline)
        self.sink_progress: dict[str, int] = {}
        self.sink_frames: dict[str, int] = {}
        # the end (engine thread): no more audio goes to the engine; its last chunks are on the way
        self.ended = threading.Event()
        self.final_frame: int | None = None  # in-process: the last frame published
        self.final_mono = 0.0
        self.drained_mono: float | None = None  # worker: it has published its last chunk

    def set_spec(self, spec: ChunkSpec) -> None:
        self.onsets = SpeechOnsets(spec.sample_rate, spec.samples_per_frame)
        self.spec = spec
        self._spec_ready.set()

    def record_fed(self, pcm: np.ndarray, *, live: bool) -> None:
        """``pcm`` went to the engine (engine thread): the fed timeline advances, speech onsets are noted."""
        if self.onsets is not None:
            self.onsets.feed(pcm, self.fed_samples, time.monotonic(), live=live)
        self.fed_samples += int(pcm.shape[0])

    def fed_position(self, engine_frames_end: int) -> int:
        """The fed-timeline sample where engine frame ``engine_frames_end`` starts."""
        spec = self.spec
        assert spec is not None
        return engine_frames_end * spec.samples_per_frame + self.timeline_skip + self.engine_dropped

    def await_spec(self, cancelled: Callable[[], bool]) -> ChunkSpec | None:
        """The spec once the engine is up; None when ``cancelled()`` turns true first."""
        while not self._spec_ready.wait(POLL_S):
            if cancelled():
                return None
        return self.spec

    def mark_ended(self, final_frame: int | None = None) -> None:
        """No more audio goes to the engine (idempotent: the first call sets the time)."""
        if not self.ended.is_set():
            self.final_mono = time.monotonic()
            self.final_frame = final_frame
            self.ended.set()

    def shift_to_engine(self, spans: list[tuple[int, int, str]], dropped: int = 0) -> list[tuple[int, int, str]]:
        """Phoneme spans on the fed timeline moved onto the engine's (minus what never became frames and
        ``dropped`` samples the engine never got); spans that end before it are left out."""
        shift = self.timeline_skip + dropped
        return [(int(a) - shift, int(b) - shift, str(ph)) for a, b, ph in spans if int(b) - shift > 0]

    def played_samples(self) -> int:
        """How far the sinks have played the fed audio timeline (the slowest sink; no sinks: all fed)."""
        spec = self.spec
        frames = list(self.sink_frames.values())
        if spec is None or not frames:
            return self.fed_samples
        return min(self.fed_samples, min(frames) * spec.samples_per_frame + self.timeline_skip)
