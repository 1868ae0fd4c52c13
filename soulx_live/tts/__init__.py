"""Offline text-to-speech: espeak-ng out of the box (with phoneme timings), Piper from a local voice file, and
timed scripts spoken as an audio source (:mod:`.script_source`). May import :mod:`soulx_live.audio` and
``soulx_live.config``; never the daemon or the push API."""
from __future__ import annotations

from typing import TYPE_CHECKING

from soulx_live.tts.base import PhonemeSpan, Synthesizer, TtsError, Utterance

if TYPE_CHECKING:
    from soulx_live.config import TtsConfig

__all__ = ["PhonemeSpan", "Synthesizer", "TtsError", "Utterance", "build_tts"]


def build_tts(config: TtsConfig, sample_rate: int = 16000) -> Synthesizer:
    """The synthesizer ``tts.backend`` names."""
    if config.backend == "espeak":
        from soulx_live.tts.espeak import EspeakSynthesizer

        return EspeakSynthesizer(config.voice, config.rate_wpm, sample_rate)
    if config.backend == "piper":
        from soulx_live.tts.piper import PiperSynthesizer

        return PiperSynthesizer(config.piper_model, sample_rate)
    raise TtsError(f"unknown tts.backend {config.backend!r}; use espeak or piper")
