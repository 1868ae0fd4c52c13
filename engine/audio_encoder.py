"""FlashTalk's audio front end (spec §5): wave -> per-frame 5-window wav2vec2 embeddings.

The released ``get_audio_embedding`` (``flash_talk/inference.py``) does, for a 16 kHz wave:

1. ``loudness_norm``: pyloudnorm BS.1770 integrated loudness; unchanged when |L| > 100 LUFS (e.g. -inf
   for silence), else scaled to -23 LUFS. Float64 in streaming mode (the deque becomes a float64 array).
2. ``Wav2Vec2FeatureExtractor(do_normalize=True)``: cast to float32, then zero mean / unit variance
   over the whole array, ``(x - mean) / sqrt(var + 1e-7)``. This standardisation cancels the loudness
   gain up to the 1e-7 epsilon, so step 1 is numerically (almost) a no-op; it is kept by default.
3. ``seq_len = int(len(wave) * fps / sample_rate)`` video frames; the modified wav2vec2
   (``engine.models.wav2vec2``) gives ``hidden [seq_len, layers, C]``.
4. For frames ``i`` in ``[start, end)`` (``-1, -1`` = the whole clip), the window of frames
   ``clamp(i + d, 0, end - 1)`` for ``d = -2..2`` -> ``emb [1, end - start, 5, layers, C]``. Note the
   clamp is to ``end - 1``, not ``seq_len - 1``: there is no look-ahead past ``end``.

Streaming (``generate_video.py``, ``audio_encode_mode='stream'``; spec §5.4). An 8 s buffer
(``8 * 16000 = 128,000`` samples) starts as silence (zeros), newest samples last. Each chunk consumes
``slice_len * sample_rate // fps`` **new samples**, where ``slice_len = frame_num - motion_frames_num``:
for the released 33 frames with 5 motion frames that is ``28 * 16000 // 25 = 17,920`` samples (1.12 s).
The input is cut into whole slices; a trailing remainder shorter than one slice is dropped. After each
push the whole 8 s buffer is embedded with ``seq_len = 8 * 25 = 200`` and the chunk takes frames
``[200 - frame_num, 200)`` = ``[167, 200)`` for 33 frames. The 28 newest audio frames (172..199) line
up with the 28 emitted video frames (chunk frames 5..32).

``StreamingAudioWindow`` is that buffer as a preallocated ring (no Python deque, no reallocation per
chunk); ``AudioEncoder`` runs steps 1-4.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.models.wav2vec2 import FlashTalkWav2Vec2

__all__ = [
    "AudioEncoder",
    "StreamingAudioWindow",
    "frames_for_samples",
    "loudness_normalize",
    "normalize_features",
    "samples_per_chunk",
    "window_embeddings",
]

SAMPLE_RATE = 16000
FPS = 25
TARGET_LUFS = -23.0
FEATURE_EPS = 1e-7
WINDOW_RADIUS = 2  # 5-frame window: d = -2..2
BUFFER_SECONDS = 8


@functools.lru_cache(maxsize=8)
def _meter(sample_rate: int):
    import pyloudnorm

    return pyloudnorm.Meter(sample_rate)


def loudness_normalize(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, lufs: float = TARGET_LUFS) -> np.ndarray:
    """The release's ``loudness_norm`` in float64: BS.1770 gain to ``lufs``; unchanged when |L| > 100.

    The loudness is measured on the array as given (float32 from a file, float64 from the streaming
    buffer, as in the release); the result is float64 (a float64 gain times the samples).
    Two cases in which the release would fail or emit NaN are returned unchanged instead (the feature
    standardisation that follows makes any gain irrelevant anyway): a wave shorter than one 400 ms
    gating block (pyloudnorm raises) and a NaN loudness.
    """
    import pyloudnorm

    data = np.asarray(wave).reshape(-1)
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float64)
    meter = _meter(int(sample_rate))
    if data.shape[0] < meter.block_size * sample_rate:
        return data.astype(np.float64)
    loudness = meter.integrated_loudness(data)
    if abs(loudness) > 100 or np.isnan(loudness):
        return data.astype(np.float64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Possible clipped samples in output")
        return np.asarray(pyloudnorm.normalize.loudness(data, loudness, lufs), dtype=np.float64)


def normalize_features(wave: np.ndarray) -> np.ndarray:
    """``Wav2Vec2FeatureExtractor(do_normalize=True)`` on one unpadded array: float32, zero mean, unit variance."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    return (x - x.mean()) / np.sqrt(x.var() + np.float32(FEATURE_EPS))


def frames_for_samples(n_samples: int, sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> int:
    """Video frames covered by ``n_samples`` as the release counts them: ``int(n * fps / sr)``."""
    return int(n_samples * fps / sample_rate)


def samples_per_chunk(
    frame_num: int, motion_frames_num: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS
) -> int:
    """New samples each streaming chunk consumes: ``(frame_num - motion) * sr // fps`` (17,920 released)."""
    slice_len = frame_num - motion_frames_num
    if slice_len <= 0:
        raise ValueError(f"frame_num ({frame_num}) must exceed motion_frames_num ({motion_frames_num})")
    return slice_len * sample_rate // fps


def window_indices(start: int, end: int, radius: int = WINDOW_RADIUS) -> torch.Tensor:
    """``[end - start, 2 * radius + 1]`` frame indices ``clamp(i + d, 0, end - 1)``."""
    centers = torch.arange(start, end).unsqueeze(1)
    offsets = torch.arange(-radius, radius + 1).unsqueeze(0)
    return (centers + offsets).clamp(0, end - 1)


def window_embeddings(hidden: torch.Tensor, start: int, end: int, radius: int = WINDOW_RADIUS) -> torch.Tensor:
    """``hidden [seq_len, L, C]`` -> ``[1, end - start, 2 * radius + 1, L, C]`` (contiguous).

    ``start = end = -1`` (either one -1) selects the whole clip, as the release does.
    """
    seq_len = hidden.shape[0]
    if start == -1 or end == -1:
        start, end = 0, seq_len
    if not 0 <= start < end <= seq_len:
        raise ValueError(f"need 0 <= start < end <= seq_len, got start={start}, end={end}, seq_len={seq_len}")
    idx = window_indices(start, end, radius).to(hidden.device)
    return hidden[idx].unsqueeze(0).contiguous()


class AudioEncoder:
    """Holds the wav2vec2 model and turns 16 kHz waves into FlashTalk audio embeddings.

    ``embed(wave)`` reproduces the release's ``get_audio_embedding``. Outputs live on the model's device,
    in the model's dtype (fp32 as released).
    """

    def __init__(
        self,
        model: FlashTalkWav2Vec2,
        *,
        sample_rate: int = SAMPLE_RATE,
        fps: int = FPS,
        loudness_norm: bool = True,
    ) -> None:
        self.model = model.eval()
        self.sample_rate = int(sample_rate)
        self.fps = fps
        self.loudness_norm = loudness_norm

    @classmethod
    def from_folder(
        cls,
        folder: Path | str,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        **kwargs: Any,
    ) -> "AudioEncoder":
        """Load the wav2vec2 folder (``config.json`` + weights) and wrap it."""
        from engine.loading.wav2vec2 import load_wav2vec2

        return cls(load_wav2vec2(Path(folder), dtype=dtype, device=device), **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def input_values(self, wave_16k: np.ndarray) -> np.ndarray:
        """Steps 1-2: loudness normalisation (optional) and feature standardisation -> float32 ``[T]``."""
        wave = np.asarray(wave_16k).reshape(-1)
        if self.loudness_norm:
            wave = loudness_normalize(wave, self.sample_rate)
        return normalize_features(wave)

    def hidden_states(self, input_values: np.ndarray | torch.Tensor, seq_len: int) -> torch.Tensor:
        """Step 3: ``input_values [T]`` -> ``hidden [seq_len, layers, C]`` on the model's device."""
        if isinstance(input_values, np.ndarray):
            input_values = torch.from_numpy(np.ascontiguousarray(input_values, dtype=np.float32))
        x = input_values.to(device=self.device, dtype=self.dtype).reshape(1, -1)
        with torch.inference_mode():
            return self.model(x, seq_len)[0]

    def embed(
        self, wave_16k: np.ndarray, start_idx: int = -1, end_idx: int = -1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wave [T]`` -> ``(emb [1, end-start, 5, layers, C], hidden [seq_len, layers, C])``."""
        wave = np.asarray(wave_16k).reshape(-1)
        seq_len = frames_for_samples(wave.shape[0], self.sample_rate, self.fps)
        hidden = self.hidden_states(self.input_values(wave), seq_len)
        return window_embeddings(hidden, start_idx, end_idx), hidden

    def embed_window(self, window: "StreamingAudioWindow", frame_num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the streaming buffer and select the chunk's ``frame_num`` frames (released: 167..199)."""
        if window.sample_rate != self.sample_rate or window.fps != self.fps:
            raise ValueError(
                f"window is {window.sample_rate} Hz / {window.fps} fps, encoder {self.sample_rate} Hz / {self.fps} fps"
            )
        start, end = window.chunk_indices(frame_num)
        return self.embed(window.window(), start, end)


class StreamingAudioWindow:
    """The release's 8 s streaming audio buffer as a preallocated ring (zero-initialised, newest last).

    ``push(pcm)`` appends samples (oldest drop out); ``window()`` returns the ordered buffer as float64,
    as ``np.array(deque)`` does in the release. The ring array is allocated once and never replaced.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, fps: int = FPS, seconds: int = BUFFER_SECONDS) -> None:
        self.sample_rate = int(sample_rate)
        self.fps = fps
        self.seconds = seconds
        self.capacity = int(sample_rate * seconds)
        if self.capacity <= 0:
            raise ValueError(f"buffer of {seconds} s at {sample_rate} Hz holds no samples")
        self._ring = np.zeros(self.capacity, dtype=np.float64)
        self._head = 0  # position of the oldest sample = where the next sample is written
        self.samples_pushed = 0

    @property
    def seq_len(self) -> int:
        """Video frames the whole buffer spans (``int(capacity * fps / sr)`` = 200 released)."""
        return frames_for_samples(self.capacity, self.sample_rate, self.fps)

    def reset(self) -> None:
        """Back to 8 s of silence (a new session)."""
        self._ring.fill(0.0)
        self._head = 0
        self.samples_pushed = 0

    def push(self, pcm: np.ndarray) -> None:
        """Append mono samples (float in [-1, 1], or int16 PCM scaled by 1/32768)."""
        data = np.asarray(pcm)
        if data.dtype == np.int16:
            data = data.astype(np.float64) / 32768.0
        elif not np.issubdtype(data.dtype, np.floating):
            raise TypeError(f"push() takes float samples in [-1, 1] or int16 PCM, got dtype {data.dtype}")
        data = data.reshape(-1)
        n = data.shape[0]
        self.samples_pushed += n
        if n >= self.capacity:
            self._ring[:] = data[n - self.capacity:]
            self._head = 0
            return
        first = min(n, self.capacity - self._head)
        self._ring[self._head:self._head + first] = data[:first]
        self._ring[:n - first] = data[first:]
        self._head = (self._head + n) % self.capacity

    def window(self, out: np.ndarray | None = None) -> np.ndarray:
        """The buffer in time order (oldest first), float64 ``[capacity]``; written into ``out`` if given."""
        if out is None:
            out = np.empty(self.capacity, dtype=np.float64)
        tail = self.capacity - self._head
        out[:tail] = self._ring[self._head:]
        out[tail:] = self._ring[:self._head]
        return out

    def chunk_indices(self, frame_num: int) -> tuple[int, int]:
        """``(start, end)`` buffer frames of a ``frame_num``-frame chunk: the newest frames (167, 200 released)."""
        end = self.seq_len
        if not 0 < frame_num <= end:
            raise ValueError(f"frame_num must be in 1..{end} for a {self.seconds} s buffer, got {frame_num}")
        return end - frame_num, end

    def samples_per_chunk(self, frame_num: int, motion_frames_num: int) -> int:
        """New samples to push before each chunk (17,920 for 33 frames with 5 motion frames)."""
        return samples_per_chunk(frame_num, motion_frames_num, self.sample_rate, self.fps)
