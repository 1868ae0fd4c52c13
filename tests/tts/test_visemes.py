"""Phoneme timings drive the lite renderer's lips: closed on m/b/p, open on open vowels, closed in silence.

Real espeak-ng speech and its real phoneme events go through a real LiteSession; the openings the session hands
to its renderer are recorded per frame (the renderer itself is tested in tests/lite).
"""
from __future__ import annotations

import numpy as np
import pytest

from engine.interface import SessionRequest
from engine.lite.engine import LiteConfig, LiteEngine
from engine.lite.visemes import viseme_for
from soulx_live.config import TtsConfig
from soulx_live.tts import build_tts

TEXT = "Papa, bring a map. Mama bought a bomb, Bob. Ha, a calm palm."


def _openings(with_phonemes: bool) -> tuple[list[float], list, int]:
    utt = build_tts(TtsConfig()).synthesize(TEXT)
    engine = LiteEngine(LiteConfig(width=96, height=96, frames_per_chunk=5, idle_motion=False, blinks=False))
    session = engine.start_session(SessionRequest(session_id="v"))
    recorded: list[float] = []
    render = session._render

    def spy(frame: int, opening: float, shape: float, out: np.ndarray, alpha_out: np.ndarray | None = None) -> None:
        recorded.append(opening)
        render(frame, opening, shape, out, alpha_out)

    session._render = spy  # type: ignore[method-assign]
    silence = np.zeros(16000, np.float32)
    session.push_audio(np.concatenate([utt.pcm, silence]))
    if with_phonemes:
        session.push_phonemes(utt.spans_in_samples(0))
    while session.chunks_ready():
        session.next_chunk()
    return recorded, list(utt.phonemes), utt.pcm.shape[0]


def _frames_in(phonemes: list, names: str, spf: int = 640) -> list[int]:
    frames = []
    for p in phonemes:
        if viseme_for(p.phoneme).name == names:
            first, last = int(p.start_s * 16000 // spf), int(p.end_s * 16000 // spf)
            frames += [f for f in range(first, last + 1) if p.start_s * 16000 <= f * spf + spf // 2 < p.end_s * 16000]
    return frames


def test_bilabials_close_the_lips_and_open_vowels_open_them() -> None:
    opening, phonemes, n_samples = _openings(with_phonemes=True)
    plain, _, _ = _openings(with_phonemes=False)
    closed = _frames_in(phonemes, "closed")
    open_ = _frames_in(phonemes, "open")
    assert len(closed) >= 5 and len(open_) >= 5
    assert max(opening[f] for f in closed) <= 0.06
    assert np.mean([opening[f] for f in open_]) > 0.3
    assert np.mean([plain[f] for f in closed]) > 5 * np.mean([opening[f] for f in closed]) + 0.02, \
        "the audio alone already closes the lips on m/b/p: the phonemes would not matter"
    tail = opening[n_samples // 640 + 3:]
    assert tail and max(tail) == 0.0  # silence after the speech: exactly closed


def test_lips_still_follow_the_audio_envelope() -> None:
    opening, _, n_samples = _openings(with_phonemes=True)
    plain, _, _ = _openings(with_phonemes=False)
    n = n_samples // 640
    r = np.corrcoef(opening[:n], plain[:n])[0, 1]
    assert r > 0.6, f"viseme-shaped openings correlate only {r:.2f} with the envelope-driven ones"


@pytest.mark.parametrize("ipa, name", [("m", "closed"), ("b", "closed"), ("ˈɑː", "open"), ("oʊ", "round"),
                                       ("iː", "spread"), ("f", "labiodental"), ("s", "neutral")])
def test_viseme_classes(ipa: str, name: str) -> None:
    assert viseme_for(ipa).name == name
