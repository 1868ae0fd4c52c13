"""Decode any audio file PyAV (FFmpeg) can read into float32 mono at one sample rate.

Resampling and down-mixing go through PyAV's ``AudioResampler``, i.e. FFmpeg's libswresample:
it is already inside the PyAV wheel (no scipy/librosa/soxr dependency), applies a proper
windowed-sinc anti-aliasing filter when down-sampling (44.1/48 kHz -> 16 kHz would otherwise alias
sibilants into the speech band the engines listen to), handles every channel layout FFmpeg knows,
and runs in C one frame at a time so memory stays bounded by the decoded output.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["AudioFileError", "decode_audio_file"]


class AudioFileError(ValueError):
    """An audio file is missing, has no audio stream, or cannot be decoded; the message names it."""


def decode_audio_file(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Return the file's first audio stream as float32 mono samples at ``sample_rate``.

    Accepts wav/mp3/flac/ogg/m4a and anything else FFmpeg decodes, at any rate and channel count.
    Channels are averaged (libswresample's own down-mix would add them at -3 dB, i.e. make a
    correlated stereo signal 1.4x louder than either channel).
    """
    import av  # core dependency; imported here so importing the package stays light

    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file not found: {path}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise AudioFileError(f"cannot open {path} as audio: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise AudioFileError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        # planar float, channel layout kept: only the rate changes here
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        parts: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler count samples; some files carry broken timestamps
                parts.extend(_to_mono(f) for f in resampler.resample(frame))
            parts.extend(_to_mono(f) for f in resampler.resample(None))  # flush the filter's tail
        except av.FFmpegError as exc:
            raise AudioFileError(f"cannot decode {path}: {exc}") from exc
    if not parts:
        raise AudioFileError(f"{path} contains no audio samples")
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _to_mono(frame: object) -> np.ndarray:
    planes = frame.to_ndarray()  # type: ignore[attr-defined]  # planar float: (channels, n)
    return planes[0] if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32)
