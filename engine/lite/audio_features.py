"""Per-video-frame mouth features from mono PCM: how far the mouth opens and its shape.

Pure functions over explicit state, so a streaming session and an offline clip give identical
results (``mouth_features_for_clip`` is the streaming step run once over the whole clip).

Per frame ``k`` (samples ``[k*spf, (k+1)*spf)``) the analysis window is two frames long, centred on
the frame (Hann weighted), so it reaches half a frame into the future. From it:

* **level**: RMS in dBFS. A speech-peak tracker (fast rise, slow fall) gives the loudness of this
  voice, and the opening target maps ``[peak - range_db, peak - headroom_db]`` to ``[0, 1]``; below
  the noise gate the target is exactly 0.
* **lead**: the target of frame ``k`` is the larger of its own and the next frame's, so lips start
  to move one frame before the sound (people shape the mouth before voicing) and the mouth never
  lags the audio. Attack/release smoothing follows; a small final value snaps to exactly 0, so
  silence gives a fully closed mouth.
* **shape**: the spectral centroid (150 Hz - 5 kHz, speech median ~700 Hz) mapped to [-1, 1]: high (front vowels like
  "ee", fricatives) spreads the lips, low (rounded vowels like "oo", "oh") rounds them.

Total look-ahead: ``lookahead_samples`` = 1.5 frames (60 ms at 25 fps).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

_EPS = 1e-10


@dataclass(frozen=True)
class MouthFeatureConfig:
    """Mapping from audio to mouth motion. Levels in dBFS (0 dB = full-scale sine peak ~ -3 dB RMS)."""

    sample_rate: int = 16000
    samples_per_frame: int = 640
    gate_dbfs: float = -50.0  # below this the mouth is shut whatever the voice level
    range_db: float = 22.0  # the opening rises from 0 at this many dB below the speech peak ...
    headroom_db: float = 1.0  # ... to full at this many dB below it (syllable peaks)
    peak_init_dbfs: float = -20.0
    peak_floor_dbfs: float = -34.0  # a quiet voice still opens the mouth fully; noise below stays shut
    peak_decay_db_per_s: float = 2.0
    attack: float = 0.65  # fraction of the gap to the target closed per frame when opening
    release: float = 0.55  # ... when closing
    closed_below: float = 0.03  # smoothed openings below this are exactly 0
    gamma: float = 1.8  # >1 keeps quieter syllable parts less open, so syllables read as separate
    shape_centre_hz: float = 700.0  # speech centroids (150 Hz - 5 kHz band) spread around this
    shape_span_hz: float = 600.0
    shape_smoothing: float = 0.5

    def __post_init__(self) -> None:
        if self.samples_per_frame % 2:
            raise ValueError(f"samples_per_frame must be even, got {self.samples_per_frame}")
        if not 0.0 < self.attack <= 1.0 or not 0.0 < self.release <= 1.0:
            raise ValueError("attack and release must be in (0, 1]")

    @property
    def pre_samples(self) -> int:
        """History before a frame's first sample that its analysis window reads."""
        return self.samples_per_frame // 2

    @property
    def lookahead_samples(self) -> int:
        """Samples after a frame's last sample that its features read (one lead frame + half a window)."""
        return self.samples_per_frame + self.samples_per_frame // 2


@dataclass(frozen=True)
class MouthFeatureState:
    """What carries from one frame to the next."""

    peak_dbfs: float
    opening: float = 0.0
    shape: float = 0.0

    @staticmethod
    def initial(cfg: MouthFeatureConfig) -> MouthFeatureState:
        return MouthFeatureState(peak_dbfs=cfg.peak_init_dbfs)


def _frame_windows(window_pcm: np.ndarray, n: int, cfg: MouthFeatureConfig) -> np.ndarray:
    """(n, 2*spf) analysis windows; frame j's window starts at sample j*spf of ``window_pcm``."""
    spf = cfg.samples_per_frame
    idx = np.arange(n)[:, None] * spf + np.arange(2 * spf)[None, :]
    return window_pcm[idx]


def frame_levels_and_centroids(window_pcm: np.ndarray, n: int, cfg: MouthFeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Level (dBFS) and spectral centroid (Hz) of ``n`` consecutive frames.

    ``window_pcm`` starts ``pre_samples`` before the first frame and must hold
    ``pre_samples + n*spf + spf//2`` samples.
    """
    spf = cfg.samples_per_frame
    need = cfg.pre_samples + n * spf + spf // 2
    if window_pcm.shape[0] < need:
        raise ValueError(f"need {need} samples for {n} frames, got {window_pcm.shape[0]}")
    frames = _frame_windows(window_pcm.astype(np.float32, copy=False), n, cfg)
    hann = np.hanning(2 * spf).astype(np.float32)
    weighted = frames * hann
    # Hann has mean power 3/8; dividing restores the RMS of a steady signal.
    power = np.mean(weighted * weighted, axis=1) / 0.375
    level_db = 10.0 * np.log10(power + _EPS)
    spec = np.abs(np.fft.rfft(weighted, axis=1)) ** 2
    freqs = np.fft.rfftfreq(2 * spf, d=1.0 / cfg.sample_rate)
    band = (freqs >= 150.0) & (freqs <= 5000.0)
    sb = spec[:, band]
    centroid = (sb @ freqs[band]) / (sb.sum(axis=1) + _EPS)
    return level_db, centroid


def _target(level_db: np.ndarray, peak_dbfs: float, cfg: MouthFeatureConfig) -> np.ndarray:
    lo = max(cfg.gate_dbfs, peak_dbfs - cfg.range_db)
    hi = max(lo + 1.0, peak_dbfs - cfg.headroom_db)
    t = np.clip((level_db - lo) / (hi - lo), 0.0, 1.0) ** cfg.gamma
    return np.where(level_db < cfg.gate_dbfs, 0.0, t)


def mouth_features(
    window_pcm: np.ndarray, n: int, state: MouthFeatureState, cfg: MouthFeatureConfig
) -> tuple[np.ndarray, np.ndarray, MouthFeatureState]:
    """Opening in [0, 1] and shape in [-1, 1] for ``n`` frames, and the state after them.

    ``window_pcm`` starts ``cfg.pre_samples`` before the first frame and holds
    ``pre_samples + n*spf + lookahead_samples`` samples (pad with zeros where audio is absent).
    """
    level_db, centroid = frame_levels_and_centroids(window_pcm, n + 1, cfg)
    decay = cfg.peak_decay_db_per_s * cfg.samples_per_frame / cfg.sample_rate
    opening = np.zeros(n, dtype=np.float32)
    shape = np.zeros(n, dtype=np.float32)
    peak, o, s = state.peak_dbfs, state.opening, state.shape
    shape_raw = np.clip((centroid - cfg.shape_centre_hz) / cfg.shape_span_hz, -1.0, 1.0)
    for k in range(n):
        if level_db[k] > cfg.gate_dbfs:
            peak = max(float(level_db[k]), peak - decay, cfg.peak_floor_dbfs)
        t_now, t_next = _target(level_db[k : k + 2], peak, cfg)
        target = max(float(t_now), float(t_next))
        o += (cfg.attack if target > o else cfg.release) * (target - o)
        if o < cfg.closed_below and target < cfg.closed_below:
            o = 0.0
        s_target = float(shape_raw[k]) if t_now > 0 else 0.0
        s += cfg.shape_smoothing * (s_target - s)
        if o == 0.0 and abs(s) < 0.02:
            s = 0.0
        opening[k], shape[k] = o, s
    return opening, shape, replace(state, peak_dbfs=peak, opening=o, shape=s)


def mouth_features_for_clip(pcm: np.ndarray, cfg: MouthFeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Features for every frame of a whole clip (its last partial frame padded with silence)."""
    spf = cfg.samples_per_frame
    n = -(-pcm.shape[0] // spf)
    window = np.zeros(cfg.pre_samples + n * spf + cfg.lookahead_samples, dtype=np.float32)
    window[cfg.pre_samples : cfg.pre_samples + pcm.shape[0]] = pcm
    opening, shape, _ = mouth_features(window, n, MouthFeatureState.initial(cfg), cfg)
    return opening, shape
