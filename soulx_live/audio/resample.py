"""Sample-rate conversion of mono float32 audio with libswresample (through PyAV), for every input path:
sound devices (a stream, stateful), pushed packets and TTS output (one whole buffer, flushed)."""
from __future__ import annotations

import numpy as np

__all__ = ["Resampler", "resample"]


class Resampler:
    """Stateful any-rate mono float32 -> ``out_rate`` mono float32; keeps the filter state between calls."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        import av

        self._av = av
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._r = av.AudioResampler(format="flt", layout="mono", rate=out_rate) if in_rate != out_rate else None

    def __call__(self, mono: np.ndarray) -> np.ndarray:
        if self._r is None or mono.size == 0:
            return mono
        frame = self._av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.in_rate
        parts = [f.to_ndarray().reshape(-1) for f in self._r.resample(frame)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        """What the filter's delay line still holds (the end of the stream)."""
        if self._r is None:
            return np.zeros(0, np.float32)
        parts = [f.to_ndarray().reshape(-1) for f in self._r.resample(None)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def resample(mono: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """One whole buffer through libswresample, flushed, so no tail is held back for a next one."""
    if in_rate == out_rate:
        return mono
    r = Resampler(in_rate, out_rate)
    return np.concatenate([r(mono), r.flush()]).astype(np.float32, copy=False)
