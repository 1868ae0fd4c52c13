"""Phoneme timings (from the TTS) -> mouth shapes for the lite renderer.

The audio envelope says *how much* the mouth opens; phonemes say *which* shape it makes, which the envelope cannot:
lips close on m/b/p while the voice may still be loud, round on o/u, spread on i/e, and the jaw drops on open
vowels. Each class scales the envelope's opening and pulls the shape; silence stays exactly closed because a
viseme only ever multiplies the opening the audio gives.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

__all__ = ["Viseme", "VisemeTrack", "viseme_for"]


@dataclass(frozen=True)
class Viseme:
    name: str
    open_scale: float  # multiplies the audio opening
    shape: float | None  # target lip shape in [-1 (round), 1 (spread)]; None: keep the audio's
    weight: float = 0.8  # how strongly the shape is pulled toward ``shape``


CLOSED = Viseme("closed", 0.05, None)  # m b p: lips pressed together
LABIODENTAL = Viseme("labiodental", 0.3, 0.4)  # f v: lower lip to the teeth
ROUND = Viseme("round", 0.8, -0.9)  # o u w: rounded
SPREAD = Viseme("spread", 0.75, 0.9)  # i e: spread
OPEN = Viseme("open", 1.25, 0.0, 0.5)  # a: jaw drops
NEUTRAL = Viseme("neutral", 1.0, None)

_CLASSES: tuple[tuple[str, Viseme], ...] = (
    ("mbp", CLOSED),
    ("fv", LABIODENTAL),
    ("ouwʊɔɒɵ", ROUND),
    ("aɑæʌɐɶ", OPEN),
    ("ieɪɛjɨ", SPREAD),
)


def viseme_for(phoneme: str) -> Viseme:
    """The viseme of an IPA phoneme (its first letter decides; stress and length marks are skipped)."""
    for ch in phoneme.lower():
        if ch in "ˈˌːˑ'.,_-":
            continue
        for letters, viseme in _CLASSES:
            if ch in letters:
                return viseme
        return NEUTRAL
    return NEUTRAL


class VisemeTrack:
    """Phoneme spans on a session timeline (samples), looked up per frame; spans behind the timeline are pruned."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._spans: list[tuple[int, int, Viseme]] = []

    def add(self, spans: list[tuple[int, int, str]]) -> None:
        for start, end, phoneme in spans:
            if end <= start:
                continue
            i = bisect.bisect_right(self._starts, start)
            self._starts.insert(i, start)
            self._spans.insert(i, (start, end, viseme_for(phoneme)))

    def at(self, sample: int) -> Viseme | None:
        i = bisect.bisect_right(self._starts, sample) - 1
        if i >= 0:
            start, end, viseme = self._spans[i]
            if start <= sample < end:
                return viseme
        return None

    def prune(self, before_sample: int) -> None:
        keep = next((i for i, (_, end, _) in enumerate(self._spans) if end > before_sample), len(self._spans))
        del self._starts[:keep], self._spans[:keep]

    def clear(self) -> None:
        self._starts.clear()
        self._spans.clear()

    def __len__(self) -> int:
        return len(self._spans)


def apply(viseme: Viseme | None, opening: float, shape: float) -> tuple[float, float]:
    """The opening and shape of one frame after its viseme."""
    if viseme is None:
        return opening, shape
    opened = min(1.0, opening * viseme.open_scale)
    if viseme.shape is None:
        return opened, shape
    return opened, shape + viseme.weight * (viseme.shape - shape)
