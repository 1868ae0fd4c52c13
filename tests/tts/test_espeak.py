"""espeak-ng through its C library (the real one, installed by .ci/run): speech, phoneme timings, errors."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from soulx_live.config import TtsConfig
from soulx_live.tts import TtsError, build_tts


@pytest.fixture(scope="module")
def tts():
    return build_tts(TtsConfig())


def test_speech_is_16k_mono_and_phonemes_cover_it(tts) -> None:
    utt = tts.synthesize("Hello, this is the avatar speaking.")
    assert utt.sample_rate == 16000 and utt.pcm.dtype == np.float32 and utt.pcm.ndim == 1
    assert 1.0 < utt.duration_s < 5.0
    assert np.sqrt(np.mean(utt.pcm**2)) > 0.02
    spans = utt.phonemes
    assert len(spans) >= 20
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in itertools.pairwise(spans)), "spans overlap or are out of order"
    assert spans[0].start_s < 0.1 and spans[-1].end_s <= utt.duration_s + 1e-6
    assert spans[0].phoneme == "h"  # IPA names, not espeak's ASCII mnemonics


def test_phoneme_times_match_the_audio(tts) -> None:
    """Energy inside the phoneme spans is far above the pauses between sentences (the times are real)."""
    utt = tts.synthesize("One. Two. Three.")
    sr = utt.sample_rate
    inside = np.zeros(utt.pcm.shape[0], bool)
    for p in utt.phonemes:
        inside[int(p.start_s * sr):int(p.end_s * sr)] = True
    rms_in = np.sqrt(np.mean(utt.pcm[inside] ** 2))
    rms_out = np.sqrt(np.mean(utt.pcm[~inside] ** 2)) if (~inside).any() else 0.0
    assert rms_in > 5 * rms_out, (rms_in, rms_out)


def test_voice_and_rate_are_honoured(tts) -> None:
    slow = build_tts(TtsConfig(rate_wpm=100)).synthesize("The quick brown fox jumps over the lazy dog.")
    fast = build_tts(TtsConfig(rate_wpm=250)).synthesize("The quick brown fox jumps over the lazy dog.")
    assert slow.duration_s > 1.6 * fast.duration_s
    with pytest.raises(TtsError, match="espeak-ng --voices"):
        tts.synthesize("hello", voice="no-such-voice-xx")


def test_empty_text_and_unknown_backend_name_the_fix(tts) -> None:
    with pytest.raises(TtsError, match="empty"):
        tts.synthesize("   ")
    with pytest.raises(TtsError, match="piper_model"):
        build_tts(TtsConfig(backend="piper"))
