"""The alpha stage: every chunk an engine makes gets its person matte once, before the frame bus.

:class:`AlphaEngine` wraps any :class:`~engine.interface.AvatarEngine`. It asks the engine for alpha
(``SessionRequest.extra["alpha"] = True``): the lite renderer answers with the portrait's matte moved by its own
face warp (segmented once per avatar). For chunks that come back without alpha (the diffusion engines) the stage
segments every frame (:class:`~engine.matting.segmenter.PersonSegmenter`), smooths over time
(:class:`~engine.matting.temporal.TemporalMatte`) and fits the result to the frame's edges. It runs where the
engine runs (the worker process, rank 0), so the matte crosses the bus with its frames and every sink shares it.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from engine.interface import AvatarEngine, AvatarSession, ChunkSpec, FrameChunk, SessionRequest
from engine.matting.segmenter import PersonSegmenter, grey, to_alpha
from engine.matting.temporal import TemporalMatte

__all__ = ["AlphaEngine", "AlphaSession"]

log = logging.getLogger(__name__)


class AlphaSession:
    """A session whose chunks always carry ``alpha`` (uint8 ``(n, H, W)``, 255 = person)."""

    def __init__(self, inner: AvatarSession, segmenter: Callable[[], PersonSegmenter], threads: int = 1) -> None:
        self.inner = inner
        self.session_id = inner.session_id
        self._segmenter_factory = segmenter
        self._segmenter: PersonSegmenter | None = None
        self._temporal = TemporalMatte()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="matte") if threads > 1 else None
        self.segmented_frames = 0
        self.segment_s = 0.0  # time spent segmenting (the latency this stage adds)

    def __getattr__(self, name: str) -> Any:  # optional session methods (push_phonemes, drift stats) pass through
        return getattr(self.inner, name)

    def push_audio(self, pcm: np.ndarray) -> None:
        self.inner.push_audio(pcm)

    def chunks_ready(self) -> int:
        return self.inner.chunks_ready()

    def reset(self) -> None:
        self.inner.reset()

    def next_chunk(self) -> FrameChunk:
        chunk = self.inner.next_chunk()
        if chunk.alpha is not None:
            return chunk
        return dataclasses.replace(chunk, alpha=self.segment(chunk.frames))

    def segment(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame mattes of RGB uint8 ``(n, H, W, 3)`` frames, smoothed over time: uint8 ``(n, H, W)``.

        The network and the edge fit run on the frames in parallel (``threads``); only the temporal blend between
        them, which needs the frames in order, runs one frame after another (about 1 ms a frame at 512x512)."""
        if self._segmenter is None:
            self._segmenter = self._segmenter_factory()
            log.info("matte: session %s has no matte of its own; segmenting every frame (%s)", self.session_id,
                     self._segmenter.model_path.name)
        seg = self._segmenter
        t0 = time.perf_counter()
        each = self._pool.map if self._pool is not None else map
        raws = list(each(seg.raw, frames))
        probs, guides = [], []
        for frame, raw in zip(frames, raws, strict=True):
            probs.append(self._temporal.update(raw, grey(frame)).copy())
            assert self._temporal.steady is not None
            guides.append(self._temporal.steady.copy())
        out = np.stack(list(each(lambda p, g: to_alpha(seg.fit_edges(p, g)), probs, guides)))
        self.segment_s += time.perf_counter() - t0
        self.segmented_frames += len(frames)
        return out

    def close(self) -> None:
        """Stop the segmentation threads (also when the session is dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)


class AlphaEngine:
    """An engine whose sessions' chunks carry a person matte; see the module docstring.

    ``threads`` > 1 segments a chunk's frames in parallel (each thread its own network). The default is one: OpenCV
    already spreads one network over the cores (``benchmarks/matte_bench.py`` measures one thread and all cores)."""

    def __init__(self, inner: AvatarEngine, model: Path | None = None, threads: int | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.spec: ChunkSpec = inner.spec
        self.threads = 1 if threads is None else max(1, threads)
        self._model = model
        self._shared: PersonSegmenter | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def segmenter(self) -> PersonSegmenter:
        """One network per engine, loaded on first use (a lite session never needs it)."""
        if self._shared is None:
            self._shared = PersonSegmenter(self._model)
        return self._shared

    def start_session(self, request: SessionRequest) -> AlphaSession:
        asked = dataclasses.replace(request, extra={**request.extra, "alpha": True})
        return AlphaSession(self.inner.start_session(asked), self.segmenter, self.threads)
