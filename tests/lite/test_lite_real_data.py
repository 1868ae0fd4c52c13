"""The lite engine on real portraits and real speech from ../shared/data (skipped when absent).

Mouth motion is measured as the mean absolute difference of the mouth region against the neutral
(closed-mouth) frame, per video frame, with blinks and idle motion off so nothing else moves there.
It is compared with the speech RMS envelope over the same 40 ms frames.

Measured (2026-11-23, this commit; Pearson r of mouth motion vs RMS envelope):

    speech \\ portrait          portrait_girl.png  portrait_ditto.jpg
    speech_ditto.wav (15.8 s)        0.846              0.837
    speech_sichuan_16k.wav (66 s)    0.763              0.759

The asserted floors keep a margin of about 0.08 below these. In every pause (>= 8 frames below
-45 dBFS), once the mouth has closed (5 frames, 200 ms) and until the 2-frame look-ahead to the next
word, the mouth motion is exactly 0 (17 such frames in speech_ditto, 41 in speech_sichuan).
"""
from __future__ import annotations

import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.interface import SessionRequest
from engine.lite import LiteConfig, LiteEngine, locate_face

SR, SPF = 16000, 640
PORTRAITS = ["portrait_girl.png", "portrait_ditto.jpg"]
SPEECH_MIN_R = {"speech_ditto.wav": 0.76, "speech_sichuan_16k.wav": 0.68}


def _load_wav_16k(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path} is not 16-bit PCM")
        sr, ch = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
    if ch > 1:
        pcm = pcm.reshape(-1, ch).mean(axis=1)
    if sr != SR:
        resample_poly = pytest.importorskip("scipy.signal", reason="resampling the 24 kHz speech needs scipy (the engine extra)").resample_poly
        g = np.gcd(sr, SR)
        pcm = resample_poly(pcm, SR // g, sr // g).astype(np.float32)
    return pcm


def _load_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    assert bgr is not None, f"cannot read {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _pauses(db: np.ndarray, min_len: int = 8, release: int = 5, lead: int = 2) -> np.ndarray:
    """Frame indices inside pauses, past the mouth's release and before the look-ahead to the next word."""
    quiet = np.flatnonzero(db < -45.0)
    if quiet.size == 0:
        return quiet
    runs = np.split(quiet, np.flatnonzero(np.diff(quiet) > 1) + 1)
    inner = [r[release : r.size - lead] for r in runs if r.size >= min_len]
    return np.concatenate(inner) if inner else np.zeros(0, dtype=int)


@pytest.mark.parametrize("portrait", PORTRAITS)
def test_face_is_found_in_real_portraits(shared_data: Path, portrait: str) -> None:
    img = _load_rgb(shared_data / portrait)
    lay = locate_face(img)
    x, y, w, h = lay.face_box
    assert w >= 0.3 * min(img.shape[:2])
    (lx, ly), (rx, ry) = lay.left_eye, lay.right_eye
    for ex, ey in lay.left_eye, lay.right_eye:
        assert x < ex < x + w and y + 0.15 * h < ey < y + 0.6 * h
    assert lx < rx
    mx, my = lay.mouth
    assert my > max(ly, ry) + 0.7 * lay.interocular
    assert y + 0.55 * h < my < y + 1.05 * h and x + 0.3 * w < mx < x + 0.7 * w
    assert 0.5 * lay.interocular < lay.mouth_width < 1.1 * lay.interocular


@pytest.mark.parametrize("speech", sorted(SPEECH_MIN_R))
@pytest.mark.parametrize("portrait", PORTRAITS)
def test_mouth_motion_follows_speech_and_rests_in_pauses(shared_data: Path, portrait: str, speech: str) -> None:
    audio = _load_wav_16k(shared_data / speech)
    engine = LiteEngine(LiteConfig(blinks=False, idle_motion=False))
    session = engine.start_session(SessionRequest(session_id="real", avatar=_load_rgb(shared_data / portrait)))
    x, y, w, h = session.renderer.mouth_box()
    neutral = session.renderer.render()[y : y + h, x : x + w].astype(np.int16)
    session.push_audio(audio)
    motion = []
    while session.buffered_samples > 0:
        for f in session.next_chunk().frames:
            motion.append(np.abs(f[y : y + h, x : x + w].astype(np.int16) - neutral).mean())
    motion = np.array(motion)
    n = motion.size
    rms = np.sqrt(np.mean(np.pad(audio, (0, n * SPF - audio.size)).reshape(n, SPF) ** 2, axis=1))
    r = float(np.corrcoef(motion, rms)[0, 1])
    assert r >= SPEECH_MIN_R[speech], f"mouth motion vs speech envelope r={r:.3f}"
    loud = rms > np.percentile(rms, 75)
    assert motion[loud].mean() > 3.0  # clearly visible while speaking (mean abs diff in grey levels)
    pauses = _pauses(20 * np.log10(rms + 1e-9))
    assert pauses.size >= 10, "expected pauses in the speech"
    assert motion[pauses].max() == 0.0, "mouth moved during a pause"
