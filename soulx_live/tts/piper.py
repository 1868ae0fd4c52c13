"""Piper neural TTS (optional extra ``tts``) from a local voice file; nothing is downloaded.

Piper voices exported without the alignment output give no phoneme timings; the lite renderer then follows the
audio envelope alone, which it does anyway.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from soulx_live.tts.base import TtsError, Utterance

__all__ = ["PiperSynthesizer"]


class PiperSynthesizer:
    name = "piper"

    def __init__(self, model: Path | None, sample_rate: int = 16000) -> None:
        if model is None:
            raise TtsError("tts.backend=piper needs tts.piper_model: the path of a Piper voice (.onnx, with its "
                           ".onnx.json beside it)")
        if not Path(model).is_file():
            raise TtsError(f"Piper voice not found: {model} (set tts.piper_model to a downloaded voice .onnx)")
        from engine.extras import require

        piper = require("piper", "tts", "the Piper voice")
        config = Path(str(model) + ".json")
        self._voice = piper.PiperVoice.load(str(model), config_path=str(config) if config.is_file() else None)
        self.sample_rate = sample_rate

    def synthesize(self, text: str, voice: str | None = None) -> Utterance:
        if not text.strip():
            raise TtsError("nothing to say: the text is empty")
        parts = [np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1) for chunk in self._voice.synthesize(text)]
        pcm = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        native = int(self._voice.config.sample_rate)
        from soulx_live.audio.resample import resample

        speech = np.clip(resample(pcm, native, self.sample_rate), -1.0, 1.0)  # the resampler may overshoot full scale
        return Utterance(text=text, pcm=speech, sample_rate=self.sample_rate)
