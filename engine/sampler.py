"""FlashTalk's few-step sampler as pure tensor functions (spec §6.1, §6.3, §6.4).

Schedule: raw timesteps ``[1000, 750, 500, 250]`` for 4 steps (``[1000, 500]`` for 2, else
``linspace(num_timesteps, 1, steps)``), then 0, each shifted ``t' = N·s·u / (1 + (s-1)·u)`` with
``u = t/N`` in float32. The model receives ``t'`` unrounded; ``σ = t'/N``.

Update (x0 prediction, re-noise to the next level; not an Euler ODE step), with M motion latents::

    latent = noise_init;  latent[:, :, :M] = motion
    for i in range(steps):
        v      = dit(latent, t'_i)
        x0     = latent - σ_i · v
        latent = (1 - σ_{i+1}) · x0 + σ_{i+1} · ε_i          # fresh ε_i, even when σ_{i+1} = 0
        latent[:, :, :M] = motion

Noise comes from a :class:`NoiseSource`: :class:`SeededNoise` reproduces the release's draws (one
generator, per chunk one draw in the latent dtype then one fp32 draw per step, continuing across chunks);
:class:`GivenNoise` replays recorded draws (golden parity). Latents here are batched ``[B, C, F, H, W]``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

__all__ = [
    "DitFn",
    "GivenNoise",
    "NoiseSource",
    "SeededNoise",
    "StepCallback",
    "denoise",
    "raw_timesteps",
    "shifted_timesteps",
]

#: ``dit_fn(latent [B,C,F,H,W], t [1] float32) -> velocity [B,C,F,H,W]`` (conditioning bound by the caller).
DitFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``on_step(i, dit_in, t, dit_out)``: optional per-step observer (debug capture, profiling).
StepCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def raw_timesteps(steps: int, num_timesteps: int = 1000) -> list[float]:
    """The release's unshifted schedule including the final 0 (``len == steps + 1``)."""
    if steps < 1:
        raise ValueError(f"sampling_steps must be >= 1, got {steps}")
    if steps == 4:
        raw = [1000.0, 750.0, 500.0, 250.0]
    elif steps == 2:
        raw = [1000.0, 500.0]
    else:
        # As released: numpy's float32 linspace (computed in float64, then rounded).
        raw = [float(v) for v in np.linspace(num_timesteps, 1, steps, dtype=np.float32)]
    return [*raw, 0.0]


def shifted_timesteps(steps: int, shift: float = 5.0, num_timesteps: int = 1000) -> torch.Tensor:
    """Float32 ``[steps + 1]``: the timesteps the model receives (``[1000, 937.5, 833.3333, 625, 0]``)."""
    u = torch.tensor(raw_timesteps(steps, num_timesteps), dtype=torch.float32) / num_timesteps
    return shift * u / (1 + (shift - 1) * u) * num_timesteps


class NoiseSource(Protocol):
    """Where the sampler's Gaussian draws come from, in the order ``initial`` then ``step(0..n-1)``."""

    def initial(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor: ...

    def step(self, i: int, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor: ...


class SeededNoise:
    """Draws from one ``torch.Generator`` in the release's order; the generator's state is the caller's.

    ``initial`` draws in the requested dtype (bf16 on the released GPU path) and ``step`` in the update's
    dtype (fp32). Draw ``i`` does not depend on ``i``: it is the next draw of the generator, so a generator
    that persists across chunks continues exactly as the release's does.
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def _draw(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.randn(tuple(shape), dtype=dtype, device=device, generator=self.generator)

    def initial(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return self._draw(shape, dtype, device)

    def step(self, i: int, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return self._draw(shape, dtype, device)


class GivenNoise:
    """Replays recorded draws: ``initial`` and ``steps[i]`` (each reshaped to the requested shape)."""

    def __init__(self, initial: torch.Tensor, steps: Sequence[torch.Tensor] | torch.Tensor) -> None:
        self._initial = initial
        self._steps = list(steps.unbind(0)) if isinstance(steps, torch.Tensor) else list(steps)

    def initial(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return self._initial.reshape(tuple(shape)).to(device=device, dtype=dtype)

    def step(self, i: int, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if i >= len(self._steps):
            raise IndexError(f"step noise {i} requested but only {len(self._steps)} step draws were given")
        return self._steps[i].reshape(tuple(shape)).to(device=device, dtype=dtype)


def denoise(
    dit_fn: DitFn,
    latent_init: torch.Tensor,
    motion_latent: torch.Tensor,
    timesteps: torch.Tensor,
    noise: NoiseSource,
    *,
    num_timesteps: int = 1000,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Run the sampler from ``latent_init [B,C,F,H,W]`` with clean ``motion_latent [B,C,M,H,W]`` imposed.

    ``timesteps`` is :func:`shifted_timesteps` (``steps + 1`` values ending in 0). ``noise.step(i, ...)``
    is asked for one draw per step, in the update's dtype (fp32 when the model returns fp32). Returns the
    final latent (the update's dtype). ``latent_init`` and ``motion_latent`` are not modified.
    """
    if latent_init.dim() != 5 or motion_latent.dim() != 5:
        raise ValueError(
            f"latents are batched [B,C,F,H,W]: got latent {list(latent_init.shape)}, motion {list(motion_latent.shape)}"
        )
    m = motion_latent.shape[2]
    if m > latent_init.shape[2] or motion_latent.shape[:2] != latent_init.shape[:2]:
        raise ValueError(
            f"motion latent {list(motion_latent.shape)} does not fit latent {list(latent_init.shape)}"
        )
    timesteps = timesteps.reshape(-1).to(device=latent_init.device, dtype=torch.float32)
    sigmas = timesteps / num_timesteps
    latent = latent_init.clone()
    latent[:, :, :m] = motion_latent
    for i in range(timesteps.shape[0] - 1):
        t = timesteps[i : i + 1]
        v = dit_fn(latent, t)
        if on_step is not None:
            on_step(i, latent, t, v)
        # The update runs in the velocity's dtype, sigmas rounded to it first, as both releases do: float32 for
        # FlashTalk (its DiT returns float32), bf16 on FlashHead's GPU path (its DiT returns the weights' dtype).
        sigma, sigma_next = sigmas[i].to(v.dtype), sigmas[i + 1].to(v.dtype)
        x0 = latent - v * sigma
        eps = noise.step(i, x0.shape, x0.dtype, x0.device)
        latent = (1 - sigma_next) * x0 + sigma_next * eps
        latent[:, :, :m] = motion_latent
    return latent
