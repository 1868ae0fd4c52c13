"""What every speech synthesizer returns: 16 kHz mono speech plus, where the engine knows them, phoneme timings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["PhonemeSpan", "Synthesizer", "TtsError", "Utterance"]


class TtsError(RuntimeError):
    """Speech could not be synthesised; the message names the fix (install, voice, model file)."""


@dataclass(frozen=True)
class PhonemeSpan:
    """One phoneme (IPA text) from ``start_s`` to ``end_s`` seconds after the utterance starts."""

    start_s: float
    end_s: float
    phoneme: str


@dataclass(frozen=True)
class Utterance:
    text: str
    pcm: np.ndarray  # float32 mono at ``sample_rate``
    sample_rate: int
    phonemes: tuple[PhonemeSpan, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.pcm.shape[0] / self.sample_rate

    def spans_in_samples(self, start_sample: int) -> list[tuple[int, int, str]]:
        """The phoneme spans on a session timeline where this utterance starts at ``start_sample``."""
        sr = self.sample_rate
        return [(start_sample + round(p.start_s * sr), start_sample + round(p.end_s * sr), p.phoneme) for p in self.phonemes]


class Synthesizer(Protocol):
    name: str

    def synthesize(self, text: str, voice: str | None = None) -> Utterance:
        """Speech for ``text`` at 16 kHz (``voice`` overrides the configured one where the backend has voices)."""
