"""Per-chunk drift monitor against the session's reference (issue §4), and its policy knobs.

Long autoregressive sessions degrade in a few recognisable ways: the colours walk away from the avatar's,
the picture blurs, the face stops looking like the reference, or the motion latents that carry one chunk
into the next blow up. :class:`DriftMonitor` measures each of these cheaply per chunk, on a few frames
downscaled to at most ``max_side`` pixels:

* ``color_shift``: CIE-Lab distance (ΔE76) between a frame's mean colour and the reference's, averaged over
  the sampled frames;
* ``sharpness_ratio``: variance of the Laplacian of the grey image relative to the reference's (too low:
  blur; too high: grain / noise artefacts);
* ``similarity``: SSIM (uniform 7x7 windows) of the grey image against the reference's, the lower of two
  scales: the monitor's (<= ``max_side`` px: texture, noise) and a coarse one (<= ``coarse_side`` px, where
  a window spans a facial feature: a face that moved away or changed shape);
* ``motion_norm_ratio``: RMS of the chunk's motion latents relative to the RMS of the reference latent:
  the larger of the context the chunk was generated from and the context it hands to the next chunk.

A chunk is *drifted* when any metric crosses its threshold (the ``engine.drift`` config section;
any object with those attribute names works, e.g. ``soulx_live.config.DriftConfig``). The session
(``engine.flashtalk.FlashTalkSession``) does the correction; :class:`RegenDeadline` says when there is
time to regenerate a chunk.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from engine.postprocess import rgb_to_lab

__all__ = [
    "DriftMonitor",
    "DriftReport",
    "DriftSettings",
    "DriftThresholds",
    "RegenDeadline",
    "SessionStats",
]

_LUMA = (0.299, 0.587, 0.114)
_SSIM_WINDOW = 7
_SSIM_C1 = 0.01**2  # (K1 * L)^2 with L = 1 (pixels in [0, 1])
_SSIM_C2 = 0.03**2
_FLOOR = 1e-8


class DriftThresholds(Protocol):
    """The ``engine.drift`` settings the monitor and the session read."""

    enabled: bool
    color_shift_max: float
    sharpness_ratio_min: float
    similarity_min: float
    motion_norm_ratio_max: float
    regenerate: bool
    reanchor_blend: float


@dataclass(frozen=True)
class DriftSettings:
    """Engine-side defaults of ``engine.drift`` (mirrors ``soulx_live.config.DriftConfig``)."""

    enabled: bool = True
    color_shift_max: float = 12.0
    sharpness_ratio_min: float = 0.35
    sharpness_ratio_max: float = 4.0
    similarity_min: float = 0.35
    motion_norm_ratio_max: float = 2.0
    regenerate: bool = True
    reanchor_blend: float = 1.0
    regenerate_deadline: str = "realtime"  # "realtime": only when it fits the chunk's duration; "always"
    regenerate_budget: float = 1.0  # realtime: fraction of the chunk's duration the two attempts may take


@dataclass(frozen=True)
class DriftReport:
    """One chunk measured against the reference. ``badness`` sums how far each metric is past its
    threshold, relative to the threshold (0 when within all); it ranks two attempts at one chunk."""

    color_shift: float
    sharpness_ratio: float
    similarity: float
    motion_norm_ratio: float
    drifted: bool
    reasons: tuple[str, ...]
    badness: float = 0.0
    check_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "color_shift": self.color_shift,
            "sharpness_ratio": self.sharpness_ratio,
            "similarity": self.similarity,
            "motion_norm_ratio": self.motion_norm_ratio,
        }

    def describe(self) -> str:
        return (
            f"color_shift={self.color_shift:.2f} sharpness_ratio={self.sharpness_ratio:.3f} "
            f"similarity={self.similarity:.3f} motion_norm_ratio={self.motion_norm_ratio:.3f}"
        )


@dataclass
class SessionStats:
    """Counters of a FlashTalk session (C6): ``corrections`` (drifted chunks acted on), ``regenerated``
    (chunks generated a second time from the corrected context), ``drift`` (the last emitted chunk's
    report, None before the first chunk or with the monitor off)."""

    chunks: int = 0
    corrections: int = 0
    regenerated: int = 0
    regenerate_skipped: int = 0  # drifted chunks emitted as they were: no time left (realtime deadline)
    drift: DriftReport | None = None
    last_compute_s: float = 0.0
    correction_log: list[dict[str, object]] = field(default_factory=list)  # the last few corrections

    def record(self, entry: dict[str, object], keep: int = 16) -> None:
        self.correction_log.append(entry)
        del self.correction_log[:-keep]


@dataclass(frozen=True)
class RegenDeadline:
    """When a drifted chunk may be generated a second time.

    ``realtime=True``: only if the first attempt (``elapsed_s``, which also estimates the second) leaves
    room for another within ``budget`` x the chunk's play-out duration. ``realtime=False`` (offline, or a
    source that waits for the engine): always. In a multi-GPU group only rank 0's answer counts (its clock; the
    session broadcasts it, see ``engine.parallel.decide``): the ranks must regenerate together or not at all.
    """

    realtime: bool = True
    budget: float = 1.0

    @classmethod
    def from_settings(cls, cfg: object) -> RegenDeadline:
        mode = str(getattr(cfg, "regenerate_deadline", "realtime"))
        if mode not in ("realtime", "always"):
            raise ValueError(f"engine.drift.regenerate_deadline must be 'realtime' or 'always', got {mode!r}")
        return cls(realtime=mode == "realtime", budget=float(getattr(cfg, "regenerate_budget", 1.0)))

    def allows(self, elapsed_s: float, chunk_s: float) -> bool:
        return (not self.realtime) or 2.0 * elapsed_s <= self.budget * chunk_s


# -- image measures (pure tensor functions, [N, 3, H, W] in [0, 1]) -----------------------------------------
def _downscale(images: torch.Tensor, max_side: int) -> torch.Tensor:
    factor = max(1, math.ceil(max(images.shape[-2:]) / max_side))
    return F.avg_pool2d(images, factor) if factor > 1 else images


def _gray(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _mean_lab(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3]`` mean Lab colour per image."""
    return rgb_to_lab(images.permute(0, 2, 3, 1)).mean(dim=(1, 2))


def _laplacian_var(gray: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=gray.dtype, device=gray.device)
    return F.conv2d(gray, kernel.view(1, 1, 3, 3)).flatten(1).var(dim=1, unbiased=False)


def _ssim(gray: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean SSIM ``[N]`` of ``gray [N,1,h,w]`` against ``ref [1,1,h,w]`` (uniform windows, valid region)."""
    k = min(_SSIM_WINDOW, gray.shape[-1], gray.shape[-2])
    ref = ref.expand_as(gray)
    mu_x, mu_y = F.avg_pool2d(gray, k, 1), F.avg_pool2d(ref, k, 1)
    var_x = F.avg_pool2d(gray * gray, k, 1) - mu_x**2
    var_y = F.avg_pool2d(ref * ref, k, 1) - mu_y**2
    cov = F.avg_pool2d(gray * ref, k, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _SSIM_C1) * (2 * cov + _SSIM_C2)
    den = (mu_x**2 + mu_y**2 + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    return (num / den).flatten(1).mean(dim=1)


def _rms(x: torch.Tensor) -> float:
    return float(x.float().pow(2).mean().sqrt())


def _one_video(video: torch.Tensor) -> torch.Tensor:
    """``[1,3,T,H,W]`` or ``[3,T,H,W]`` -> ``[3,T,H,W]``; ValueError for a batch or another shape."""
    if video.dim() == 5:
        if video.shape[0] != 1:
            raise ValueError(f"one video at a time, got batch {video.shape[0]}")
        video = video[0]
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video [1,3,T,H,W] or [3,T,H,W] in [-1, 1], got {list(video.shape)}")
    return video


def _as_images(video: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Frames as float32 ``[N, 3, H, W]`` in [0, 1] from a video ``[1,3,T,H,W]`` / ``[3,T,H,W]`` in [-1, 1]
    or uint8 frames ``(T, H, W, 3)`` / an image ``(H, W, 3)``."""
    if isinstance(video, np.ndarray):
        if video.dtype != np.uint8 or video.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be (T, H, W, 3) or (H, W, 3), got {video.dtype} {video.shape}")
        frames = torch.from_numpy(np.ascontiguousarray(video.reshape(-1, *video.shape[-3:])))
        return frames.permute(0, 3, 1, 2).float() / 255.0
    video = _one_video(video)
    return ((video.transpose(0, 1).float() + 1.0) / 2.0).clamp_(0.0, 1.0)


def _small_images(video: torch.Tensor | np.ndarray, max_frames: int, max_side: int) -> torch.Tensor:
    """Up to ``max_frames`` frames of a chunk, area-downscaled to ``max_side`` first (pooling is linear, so
    the [-1, 1] -> [0, 1] mapping commutes with it): float32 ``[N, 3, h, w]`` in [0, 1]."""
    if isinstance(video, np.ndarray):
        frames = video if video.ndim == 4 else video[None]
        return _downscale(_as_images(frames[_pick(frames.shape[0], max_frames)]), max_side)
    video = _one_video(video)
    small = [_downscale(video[:, i].float()[None], max_side) for i in _pick(video.shape[1], max_frames)]
    return ((torch.cat(small) + 1.0) / 2.0).clamp_(0.0, 1.0)


def _pick(n: int, max_frames: int) -> list[int]:
    """Up to ``max_frames`` evenly spaced indices of ``n``, always including the last."""
    if n <= max_frames:
        return list(range(n))
    return sorted({round(i * (n - 1) / (max_frames - 1)) for i in range(max_frames)})


class DriftMonitor:
    """Measures chunks against a reference image and reference motion latent.

    ``reference_rgb``: the picture a perfect chunk would show, as a video/image accepted by :meth:`check`
    (the session passes the VAE decode of the reference latent, so the VAE's own loss is not drift).
    ``reference_motion_latent``: the first motion latent of the session (the reference's VAE latent).
    """

    def __init__(
        self,
        reference_rgb: torch.Tensor | np.ndarray,
        reference_motion_latent: torch.Tensor,
        cfg: DriftThresholds | None = None,
        *,
        max_side: int = 128,
        coarse_side: int = 32,
        max_frames: int = 4,
    ) -> None:
        self.cfg: DriftThresholds = cfg if cfg is not None else DriftSettings()  # type: ignore[assignment]
        self.max_side = max_side
        self.coarse_side = coarse_side
        self.max_frames = max_frames
        with torch.inference_mode():
            ref = _small_images(reference_rgb, 1, max_side)[-1:]
            self._ref_lab = _mean_lab(ref)[0]
            self._ref_gray = _gray(ref)
            self._ref_coarse = _downscale(self._ref_gray, coarse_side)
            self._ref_sharpness = max(float(_laplacian_var(self._ref_gray)[0]), _FLOOR)
            self._ref_rms = max(_rms(reference_motion_latent), _FLOOR)
        ref_shape = reference_rgb.shape
        self._hw = tuple(ref_shape[-3:-1]) if isinstance(reference_rgb, np.ndarray) else tuple(ref_shape[-2:])

    def measure(
        self,
        video: torch.Tensor | np.ndarray,
        motion_latent: torch.Tensor | None,
        context_latent: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """The four metrics of a chunk (see the module docstring)."""
        with torch.inference_mode():
            hw = tuple(video.shape[-3:-1]) if isinstance(video, np.ndarray) else tuple(video.shape[-2:])
            if hw != self._hw:
                raise ValueError(f"chunk frames are {hw}, the reference is {self._hw}")
            small = _small_images(video, self.max_frames, self.max_side).to(self._ref_gray.device)
            gray = _gray(small)
            color = (_mean_lab(small) - self._ref_lab).norm(dim=1).mean()
            sharp = _laplacian_var(gray).mean() / self._ref_sharpness
            sim = torch.minimum(
                _ssim(gray, self._ref_gray), _ssim(_downscale(gray, self.coarse_side), self._ref_coarse)
            ).mean()
            latents = [x for x in (motion_latent, context_latent) if x is not None]
            motion = max((_rms(x) for x in latents), default=self._ref_rms) / self._ref_rms
        return {
            "color_shift": float(color),
            "sharpness_ratio": float(sharp),
            "similarity": float(sim),
            "motion_norm_ratio": float(motion),
        }

    def check(
        self,
        video: torch.Tensor | np.ndarray,
        motion_latent: torch.Tensor | None = None,
        context_latent: torch.Tensor | None = None,
    ) -> DriftReport:
        """Measure a chunk (``video`` ``[1,3,T,H,W]`` in [-1, 1] or uint8 ``(T,H,W,3)``) and judge it.

        ``motion_latent``: the context the chunk hands on; ``context_latent``: the one it was generated from.
        """
        start = time.perf_counter()
        m = self.measure(video, motion_latent, context_latent)
        cfg = self.cfg
        reasons: list[str] = []
        badness = 0.0
        if m["color_shift"] > cfg.color_shift_max:
            reasons.append(f"color_shift {m['color_shift']:.2f} > {cfg.color_shift_max:g}")
            badness += m["color_shift"] / cfg.color_shift_max - 1.0
        if m["sharpness_ratio"] < cfg.sharpness_ratio_min:
            reasons.append(f"sharpness_ratio {m['sharpness_ratio']:.3f} < {cfg.sharpness_ratio_min:g}")
            badness += 1.0 - m["sharpness_ratio"] / cfg.sharpness_ratio_min
        sharp_max = float(getattr(cfg, "sharpness_ratio_max", 0.0) or 0.0)  # 0 / absent: no upper bound
        if sharp_max > 0 and m["sharpness_ratio"] > sharp_max:
            reasons.append(f"sharpness_ratio {m['sharpness_ratio']:.3f} > {sharp_max:g}")
            badness += m["sharpness_ratio"] / sharp_max - 1.0
        if m["similarity"] < cfg.similarity_min:
            reasons.append(f"similarity {m['similarity']:.3f} < {cfg.similarity_min:g}")
            badness += (cfg.similarity_min - m["similarity"]) / max(abs(cfg.similarity_min), 0.1)
        if m["motion_norm_ratio"] > cfg.motion_norm_ratio_max:
            reasons.append(f"motion_norm_ratio {m['motion_norm_ratio']:.3f} > {cfg.motion_norm_ratio_max:g}")
            badness += m["motion_norm_ratio"] / cfg.motion_norm_ratio_max - 1.0
        return DriftReport(
            **m, drifted=bool(reasons), reasons=tuple(reasons), badness=badness, check_s=time.perf_counter() - start
        )
