"""The one interface every avatar engine implements: audio in, timestamped frame chunks out.

Both the CPU lite renderer (``engine.lite``) and the FlashTalk diffusion engine
(``engine.flashtalk``) satisfy it, so the daemon, ``render`` and the tests drive either the same way.
Only numpy crosses this boundary; torch stays inside the engines.

Timeline: audio samples at ``spec.sample_rate`` are the master clock. Frame ``k`` of a session is
shown at sample ``k * spec.samples_per_frame``; a chunk's ``audio`` is exactly the audio that plays
while its frames are shown, so sinks mux or play them together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol, runtime_checkable

import numpy as np


def mono_pcm(pcm: np.ndarray) -> np.ndarray:
    """Validate pushed audio: float samples of shape ``(n,)`` (or ``(n, 1)``) -> float32 ``(n,)``.

    Raises ValueError/TypeError naming the problem, so a caller can drop one bad packet and go on.
    """
    data = np.asarray(pcm)
    if data.ndim == 2 and 1 in data.shape:
        data = data.reshape(-1)
    if data.ndim != 1:
        raise ValueError(f"push_audio expects mono samples of shape (n,), got {data.shape}")
    if not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"push_audio expects float samples in [-1, 1], got {data.dtype}")
    data = data.astype(np.float32, copy=False)
    if not np.all(np.isfinite(data)):
        raise ValueError("push_audio got NaN or infinite samples")
    return data


@dataclass(frozen=True)
class ChunkSpec:
    """Geometry and timing of the chunks an engine emits."""

    fps: Fraction
    sample_rate: int
    frames_per_chunk: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if Fraction(self.sample_rate) / self.fps != int(Fraction(self.sample_rate) / self.fps):
            raise ValueError(f"sample_rate {self.sample_rate} is not a whole number of samples per frame at {self.fps} fps")

    @property
    def samples_per_frame(self) -> int:
        return int(Fraction(self.sample_rate) / self.fps)

    @property
    def samples_per_chunk(self) -> int:
        return self.samples_per_frame * self.frames_per_chunk

    @property
    def chunk_duration_s(self) -> float:
        return self.frames_per_chunk / float(self.fps)


@dataclass(frozen=True)
class FrameChunk:
    """Frames and the audio that plays with them.

    ``frames`` is uint8 ``(n, H, W, 3)`` RGB, C-contiguous. ``audio`` is float32 mono at the spec's
    sample rate, ``n * samples_per_frame`` long, starting at session sample ``audio_t0`` which equals
    ``first_frame * samples_per_frame``.

    ``epoch`` is the barge-in generation the chunk belongs to: every interrupt bumps it, and receivers
    drop chunks older than the newest epoch they know (the frame timeline itself keeps counting).

    ``alpha`` (optional) is uint8 ``(n, H, W)``, the person matte of each frame (255 = person, 0 = background),
    present when a sink asked for alpha output (``engine.matting``); sinks without alpha ignore it.
    """

    session_id: str
    seq: int
    first_frame: int
    frames: np.ndarray
    audio: np.ndarray
    audio_t0: int
    epoch: int = 0
    alpha: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class SessionRequest:
    """What a session starts from. ``avatar`` None means the engine's built-in avatar."""

    session_id: str
    avatar: np.ndarray | None = None  # uint8 (H, W, 3) RGB
    prompt: str = ""
    seed: int = 0
    extra: dict[str, object] = field(default_factory=dict)  # "alpha": True asks for FrameChunk.alpha when the engine can


@runtime_checkable
class AvatarSession(Protocol):
    """One avatar speaking along one audio timeline."""

    session_id: str

    def push_audio(self, pcm: np.ndarray) -> None:
        """Append float32 mono samples at the spec's sample rate."""

    def chunks_ready(self) -> int:
        """How many whole chunks the buffered audio allows ``next_chunk`` to make now."""

    def next_chunk(self) -> FrameChunk:
        """Consume one chunk of audio and return its frames (pads with silence if audio is short)."""

    def reset(self) -> None:
        """Drop buffered audio and return to the reference pose; the frame timeline continues.

        Called on barge-in (``protocol.Interrupt``). Sessions may also implement the optional
        ``push_phonemes(spans: list[tuple[int, int, str]]) -> None`` (start/end sample on the session
        timeline, phoneme text); the worker calls it when present and ignores phonemes otherwise.
        """


@runtime_checkable
class AvatarEngine(Protocol):
    """A loaded engine that can host sessions."""

    name: str
    spec: ChunkSpec

    def start_session(self, request: SessionRequest) -> AvatarSession: ...
