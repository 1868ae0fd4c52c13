"""The explicit, immutable state of one FlashTalk stream (ARCHITECTURE anti-pattern 8).

The release keeps a session's state in ``FlashTalkPipeline.self.*`` (``arg_c``, ``generator``,
``latent_motion_frames``), set by ``prepare_params`` and silently required by ``generate``. Here it is a
frozen dataclass that ``engine.flashtalk.stream_step`` takes and returns, so a caller can keep a snapshot,
restore it, reset the stream or re-anchor it to the reference pose without knowing the loop's internals.

* :class:`StreamConditioning`: per avatar and prompt, fixed for the session (``y``, text context, CLIP
  tokens, the colour reference and the reference latent the stream can be re-anchored to).
* :class:`SessionState`: the conditioning plus what changes per chunk: the motion latent, counters and
  the noise generator's state (a CPU byte tensor from ``torch.Generator.get_state``).

Tensors inside are never modified in place by the engine; a new state holds new tensors. A state can
therefore be kept as a snapshot as is; :meth:`SessionState.snapshot` additionally detaches it from any
later in-place change a caller might make.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

__all__ = ["SessionState", "StreamConditioning", "make_generator"]


@dataclass(frozen=True)
class StreamConditioning:
    """Everything the DiT, the sampler and the colour correction need that is fixed for a session.

    Shapes (batch 1): ``cond_image [1,3,1,H,W]`` in [-1, 1] (colour reference), ``y [1,20,F_lat,h,w]``,
    ``context [1,L,4096]``, ``clip_fea [1,257,1280]``, ``reference_latent [1,16,1,h,w]`` (the first motion
    latent: the VAE latent of the reference frame alone), ``seq_len`` the DiT's token count.
    """

    cond_image: torch.Tensor
    y: torch.Tensor
    context: torch.Tensor | None  # None for FlashHead (no text input)
    clip_fea: torch.Tensor | None  # None for FlashHead (no CLIP input)
    reference_latent: torch.Tensor
    seq_len: int
    cross: Any = None  # the DiT's precomputed text/image K/V for context/clip_fea (engine.models.transformer)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``[1, C, F_lat, h, w]`` of a chunk's latent."""
        return (1, self.reference_latent.shape[1], *self.y.shape[2:])

    @property
    def device(self) -> torch.device:
        return self.y.device


def make_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """The release's noise generator: one ``torch.Generator`` on the compute device, seeded once."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


@dataclass(frozen=True)
class SessionState:
    """One stream's state between chunks.

    ``motion_latent`` ``[1,16,M,h,w]`` is the clean context imposed on the first latent frames (M = 1 on
    chunk 0: the reference latent; 2 afterwards: the re-encoded tail of the previous chunk).
    ``chunk_index`` counts chunks since the last reset; ``frame_index`` is the session frame index of the
    next emitted frame and never goes back. ``rng_state`` is the generator state to draw the next noise
    from; ``seed`` the seed it started from (used by :meth:`reset`).
    """

    conditioning: StreamConditioning
    motion_latent: torch.Tensor
    rng_state: torch.Tensor
    seed: int
    chunk_index: int = 0
    frame_index: int = 0

    @classmethod
    def initial(cls, conditioning: StreamConditioning, seed: int, *, frame_index: int = 0) -> SessionState:
        """Chunk 0 of a stream: motion = reference latent, generator freshly seeded."""
        generator = make_generator(conditioning.device, seed)
        return cls(
            conditioning=conditioning,
            motion_latent=conditioning.reference_latent,
            rng_state=generator.get_state(),
            seed=int(seed),
            chunk_index=0,
            frame_index=frame_index,
        )

    def generator(self) -> torch.Generator:
        """A generator on the conditioning's device positioned at this state's ``rng_state``."""
        generator = torch.Generator(device=self.conditioning.device)
        generator.set_state(self.rng_state)
        return generator

    def advanced(self, motion_latent: torch.Tensor, generator: torch.Generator, frames: int) -> SessionState:
        """The state after a chunk that emitted ``frames`` frames and left ``generator`` where it is."""
        return replace(
            self,
            motion_latent=motion_latent,
            rng_state=generator.get_state(),
            chunk_index=self.chunk_index + 1,
            frame_index=self.frame_index + frames,
        )

    def re_anchor(self, blend: float = 1.0) -> SessionState:
        """Motion context toward the reference latent; noise and counters continue.

        ``blend`` 1 (default): the reference latent alone, as on chunk 0 (the reference pose, re-encoded from
        the reference). ``0 < blend < 1``: ``(1 - blend) * motion + blend * reference`` on every motion latent
        frame (a partial pull back, the pose continues). 0: unchanged.
        """
        if not 0.0 <= blend <= 1.0:
            raise ValueError(f"re-anchor blend must be in [0, 1], got {blend}")
        reference = self.conditioning.reference_latent
        if blend >= 1.0:
            return replace(self, motion_latent=reference)
        if blend <= 0.0:
            return self
        ref = reference.to(self.motion_latent.dtype).expand_as(self.motion_latent)
        return replace(self, motion_latent=torch.lerp(self.motion_latent, ref, blend))

    def reset(self) -> SessionState:
        """As a fresh stream (reference motion, generator reseeded, chunk 0) at the same ``frame_index``.

        Given the same audio, the next chunk equals the first chunk of a new session.
        """
        return SessionState.initial(self.conditioning, self.seed, frame_index=self.frame_index)

    def snapshot(self) -> SessionState:
        """An independent copy of the per-chunk tensors (the fixed conditioning is shared)."""
        return replace(self, motion_latent=self.motion_latent.clone(), rng_state=self.rng_state.clone())
