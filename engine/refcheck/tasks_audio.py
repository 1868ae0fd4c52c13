"""Reference-check tasks of the audio front end (golden README §7 "wav2vec2_forward" and "audio_embed")."""
from __future__ import annotations

import numpy as np
import torch

from engine.audio_encoder import FPS, SAMPLE_RATE, AudioEncoder, loudness_normalize
from engine.loading.wav2vec2 import load_wav2vec2
from engine.refcheck.request import RefRequest


def audio_embed(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """``wave [T]`` (16 kHz) -> ``emb [1, end-start, 5, layers, C]``, ``hidden [seq_len, layers, C]``.

    Params: ``start_idx``/``end_idx`` (-1 = whole clip), ``sample_rate``, ``fps``. Optional outputs
    ``debug.loudnorm`` (float64) and ``debug.input_values`` (float32).
    """
    params = request.params
    sample_rate = int(params.get("sample_rate", SAMPLE_RATE))
    encoder = AudioEncoder(
        load_wav2vec2(request.model("wav2vec2")), sample_rate=sample_rate, fps=params.get("fps", FPS)
    )
    # As given (float32 here): the release measures loudness on the array it is handed.
    wave = inputs["wave"].numpy()
    emb, hidden = encoder.embed(wave, int(params.get("start_idx", -1)), int(params.get("end_idx", -1)))
    out = {"emb": emb, "hidden": hidden}
    if request.wants("debug.loudnorm"):
        out["debug.loudnorm"] = torch.from_numpy(np.ascontiguousarray(loudness_normalize(wave, sample_rate)))
    if request.wants("debug.input_values"):
        out["debug.input_values"] = torch.from_numpy(encoder.input_values(wave))
    return out


def wav2vec2_forward(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """``input_values [T]`` + ``seq_len [1]`` -> ``hidden [seq_len, layers, C]``."""
    model = load_wav2vec2(request.model("wav2vec2"))
    seq_len = int(inputs["seq_len"].reshape(-1)[0].item())
    with torch.inference_mode():
        hidden = model(inputs["input_values"].float().reshape(1, -1), seq_len)
    return {"hidden": hidden[0]}
