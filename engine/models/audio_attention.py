"""Audio conditioning of the DiT: window assembly, the audio projection and the frame-local cross-attention.

SPEC-flashtalk.md §2.6. The DiT's audio input is ``[B, A, window, 12, 768]``: for each of the A video frames
of the chunk, a window of wav2vec2 hidden states (12 layers x 768) around it. Latent frame 0 belongs to video
frame 0; every later latent frame to a group of ``vae_scale`` video frames.

* :func:`assemble_audio_windows` turns the per-frame windows into one vector block per latent frame.
* :class:`AudioProjection` (state-dict prefix ``audio_proj.``) maps them to ``context_tokens`` audio tokens of
  ``output_dim`` channels per latent frame.
* :class:`AudioCrossAttention` (``blocks.N.audio_cross_attn.``) lets the video tokens of latent frame f attend
  to the audio tokens of frame f only. It works on any contiguous token range (:class:`SeqShard`), so a
  sequence-parallel rank runs the same module on its own slice.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.ops.attention import attention

__all__ = [
    "AUDIO_CHANNELS",
    "AUDIO_LAYERS",
    "AudioCrossAttention",
    "AudioProjection",
    "FrameRun",
    "SeqShard",
    "assemble_audio_windows",
    "frame_local_attention",
]

#: wav2vec2 layers and channels the released audio projection takes (hard-coded in the release).
AUDIO_LAYERS = 12
AUDIO_CHANNELS = 768


def assemble_audio_windows(
    audio: torch.Tensor, *, vae_scale: int, audio_window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``audio [B, A, window, layers, C]`` into latent-frame vector blocks.

    Returns ``first [B, 1, window, layers, C]`` (video frame 0's whole window) and
    ``later [B, n, window + vae_scale - 1, layers, C]`` for the ``n = (A - 1) / vae_scale`` later latent frames.
    In each group of ``vae_scale`` video frames the first frame gives window positions ``[0, mid]``, the middle
    frames their centre ``mid`` and the last frame ``[mid, window)``: a contiguous span of audio frames.
    """
    if audio.dim() != 5 or audio.shape[2] != audio_window:
        raise ValueError(f"audio must be [B, frames, {audio_window}, layers, channels], got {list(audio.shape)}")
    frames = audio.shape[1]
    if frames < 1 or (frames - 1) % vae_scale:
        raise ValueError(
            f"audio has {frames} frames; the DiT needs 1 + {vae_scale}*n (one per video frame of the chunk)"
        )
    mid = audio_window // 2
    first = audio[:, :1]
    groups = audio[:, 1:].unflatten(1, ((frames - 1) // vae_scale, vae_scale))  # B n g w l c
    later = torch.cat(
        [groups[:, :, 0, : mid + 1], groups[:, :, 1:-1, mid], groups[:, :, -1, mid:]],
        dim=2,
    )
    return first, later


class AudioProjection(nn.Module):
    """The release's ``AudioProjModel``: per latent frame, audio windows -> ``context_tokens`` tokens.

    Keys: ``proj1`` (frame 0), ``proj1_vf`` (later frames), ``proj2``, ``proj3`` and, with
    ``norm_output_audio``, ``norm`` (LayerNorm eps 1e-5, computed in float32). Output is float32
    ``[B, F, context_tokens, output_dim]``.
    """

    def __init__(
        self,
        *,
        audio_window: int,
        vae_scale: int,
        intermediate_dim: int,
        output_dim: int,
        context_tokens: int,
        norm_output_audio: bool,
    ) -> None:
        super().__init__()
        self.audio_window = audio_window
        self.vae_scale = vae_scale
        self.context_tokens = context_tokens
        self.output_dim = output_dim
        width = AUDIO_LAYERS * AUDIO_CHANNELS
        self.proj1 = nn.Linear(audio_window * width, intermediate_dim)
        self.proj1_vf = nn.Linear((audio_window + vae_scale - 1) * width, intermediate_dim)
        self.proj2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = nn.Linear(intermediate_dim, context_tokens * output_dim)
        self.norm = nn.LayerNorm(output_dim) if norm_output_audio else None

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [B, A, window, 12, 768]`` (any float dtype; cast to the weights') -> ``[B, F, tokens, out]``."""
        first, later = assemble_audio_windows(
            audio.to(self.proj1.weight.dtype), vae_scale=self.vae_scale, audio_window=self.audio_window
        )
        batch = audio.shape[0]
        h = torch.cat(
            [torch.relu(self.proj1(first.flatten(2))), torch.relu(self.proj1_vf(later.flatten(2)))], dim=1
        )
        frames = h.shape[1]
        tokens = self.proj3(torch.relu(self.proj2(h))).reshape(batch * frames, self.context_tokens, self.output_dim)
        tokens = tokens.float()
        if self.norm is not None:
            tokens = F.layer_norm(
                tokens, self.norm.normalized_shape, self.norm.weight.float(), self.norm.bias.float(), self.norm.eps
            )
        return tokens.reshape(batch, frames, self.context_tokens, self.output_dim)


@dataclass(frozen=True)
class FrameRun:
    """Consecutive tokens of ``num_frames`` latent frames, ``tokens_per_frame`` tokens of each in the slice."""

    first_frame: int
    num_frames: int
    tokens_per_frame: int

    @property
    def num_tokens(self) -> int:
        return self.num_frames * self.tokens_per_frame


@dataclass(frozen=True)
class SeqShard:
    """The contiguous global token range ``[start, stop)`` one worker holds (the whole sequence by default).

    ``stop`` may pass the last real token (a padded sequence-parallel split); those positions belong to no frame.
    """

    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.stop:
            raise ValueError(f"SeqShard needs 0 <= start <= stop, got [{self.start}, {self.stop})")

    @classmethod
    def full(cls, num_tokens: int) -> "SeqShard":
        return cls(0, num_tokens)

    def frame_runs(self, tokens_per_frame: int, num_frames: int) -> list[FrameRun]:
        """Split the real tokens of the range into <= 3 runs: a partial frame, whole frames, a partial frame."""
        start, stop = self.start, min(self.stop, num_frames * tokens_per_frame)
        runs: list[FrameRun] = []
        while start < stop:
            frame, offset = divmod(start, tokens_per_frame)
            if offset or stop - start < tokens_per_frame:
                count = min(tokens_per_frame - offset, stop - start)
                runs.append(FrameRun(frame, 1, count))
            else:
                whole = (stop - start) // tokens_per_frame
                runs.append(FrameRun(frame, whole, tokens_per_frame))
                count = whole * tokens_per_frame
            start += count
        return runs


class AudioCrossAttention(nn.Module):
    """Single-speaker frame-local audio cross-attention (the release's ``SingleStreamMutiAttention``).

    Keys ``q_linear`` (dim -> dim), ``kv_linear`` (audio dim -> 2*dim: k = channels [0, dim), v = [dim, 2*dim)),
    ``proj`` (dim -> dim); all with bias, no q/k norm, no RoPE for one speaker.
    """

    def __init__(self, dim: int, audio_dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(audio_dim, 2 * dim)

    def _kv(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.kv_linear(frames).unflatten(-1, (2, self.num_heads, self.head_dim)).unbind(-3)

    def forward(
        self,
        x: torch.Tensor,
        audio_tokens: torch.Tensor,
        tokens_per_frame: int,
        shard: SeqShard | None = None,
    ) -> torch.Tensor:
        """``x [B, L_local, dim]`` (the tokens of ``shard``), ``audio_tokens [B, F, n, audio_dim]`` -> like x.

        Tokens of latent frame f attend only to ``audio_tokens[:, f]``; tokens past the last frame (padding) get
        ``proj(0)``. They never influence real tokens.
        """
        q = self.q_linear(x).unflatten(-1, (self.num_heads, self.head_dim))
        return self.proj(frame_local_attention(q, audio_tokens, self._kv, tokens_per_frame, shard))


KVProjection = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def frame_local_attention(
    q: torch.Tensor,
    audio_tokens: torch.Tensor,
    project_kv: KVProjection,
    tokens_per_frame: int,
    shard: SeqShard | None = None,
) -> torch.Tensor:
    """Frame-local attention of video queries to per-frame audio tokens, before the output projection.

    ``q [B, L_local, H, D]`` (the tokens of ``shard``), ``audio_tokens [B, F, n, C]``; ``project_kv(frames
    [N, n, C]) -> (k, v)`` each ``[N, n, H, D]``. The queries of latent frame f attend only to ``audio_tokens[:,
    f]``; queries past the last frame (sequence-parallel padding) get zeros. Returns ``[B, L_local, H*D]``.
    FlashTalk's :class:`AudioCrossAttention` and FlashHead's audio cross-attention both attend this way; only
    their projections differ.
    """
    batch, local, heads, head_dim = q.shape
    num_frames = audio_tokens.shape[1]
    shard = shard or SeqShard.full(local)
    if shard.stop - shard.start != local:
        raise ValueError(f"q holds {local} tokens but the shard is [{shard.start}, {shard.stop})")
    outputs = []
    offset = 0
    for run in shard.frame_runs(tokens_per_frame, num_frames):
        q_run = q[:, offset : offset + run.num_tokens].reshape(
            batch * run.num_frames, run.tokens_per_frame, heads, head_dim
        )
        k, v = project_kv(audio_tokens[:, run.first_frame : run.first_frame + run.num_frames].flatten(0, 1))
        outputs.append(attention(q_run, k, v).reshape(batch, run.num_tokens, heads * head_dim))
        offset += run.num_tokens
    if offset < local:
        outputs.append(q.new_zeros(batch, local - offset, heads * head_dim))
    return torch.cat(outputs, dim=1)
