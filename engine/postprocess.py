"""Decoded video -> colour-corrected video -> uint8 frames (spec §6.3 step 4-6, §6.5). Pure tensor code.

Colour correction is the release's ``match_and_blend_colors_torch``: per frame, match the mean and
population std of each CIE-Lab channel (over all H x W pixels) to those of the reference image, then
blend with ``strength``. It runs in the video's dtype (bf16 on the released GPU path) with the same
operation order, so it is not only post-processing: the corrected last frames become the next chunk's
motion context.
"""
from __future__ import annotations

import torch

__all__ = ["lab_to_rgb", "match_and_blend_colors", "rgb_to_lab", "to_float_frames", "to_uint8_frames"]

# sRGB (D65) <-> XYZ, the white point, and the CIE constants exactly as the release writes them.
_XYZ_FROM_RGB = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_RGB_FROM_XYZ = (
    (3.2404542, -1.5371385, -0.4985314),
    (-0.9692660, 1.8760108, 0.0415560),
    (0.0556434, -0.2040259, 1.0572252),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_EPSILON = 0.008856
_KAPPA = 903.3
_STD_FLOOR = 1e-8


def _apply_matrix(x: torch.Tensor, matrix: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    """``x [..., 3] @ matrix.T`` as one (N, 3) x (3, 3) product, in ``x``'s dtype."""
    m = torch.tensor(matrix, dtype=x.dtype, device=x.device)
    return (x.reshape(-1, 3) @ m.T).reshape(x.shape)


def _white(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(_WHITE_D65, dtype=x.dtype, device=x.device)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], channels last ``[..., 3]`` -> CIE Lab ``[..., 3]`` (D65), in ``rgb``'s dtype."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = _apply_matrix(linear, _XYZ_FROM_RGB) / _white(rgb)
    xyz = torch.clamp(xyz, 1e-8, 1.0)
    f = torch.where(xyz > _EPSILON, xyz ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return torch.stack([lightness, a, b], dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab ``[..., 3]`` -> sRGB clamped to [0, 1] ``[..., 3]``, in ``lab``'s dtype."""
    lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    f_y = (lightness + 16) / 116
    f_x = (a / 500) + f_y
    f_z = f_y - (b / 200)
    x = torch.where(f_x**3 > _EPSILON, f_x**3, (116 * f_x - 16) / _KAPPA)
    y = torch.where(lightness > _KAPPA * _EPSILON, ((lightness + 16) / 116) ** 3, lightness / _KAPPA)
    z = torch.where(f_z**3 > _EPSILON, f_z**3, (116 * f_z - 16) / _KAPPA)
    xyz = torch.stack([x, y, z], dim=-1) * _white(lab)
    linear = _apply_matrix(xyz, _RGB_FROM_XYZ)
    rgb = torch.where(linear > 0.0031308, 1.055 * (linear ** (1 / 2.4)) - 0.055, 12.92 * linear)
    return torch.clamp(rgb, 0.0, 1.0)


def match_and_blend_colors(video: torch.Tensor, reference: torch.Tensor, strength: float) -> torch.Tensor:
    """Colour-correct ``video [B,3,T,H,W]`` in [-1, 1] toward ``reference [B,3,1,H,W]`` in [-1, 1].

    Returns a new tensor of ``video``'s shape, dtype and device in [-1, 1]. ``strength`` 0 returns a copy,
    1 the fully corrected video. Statistics are per frame and channel over H, W (``unbiased=False``); a
    source std below 1e-8 is treated as 1.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"colour correction strength must be in [0, 1], got {strength}")
    if strength == 0.0:
        return video.clone()
    b, c, _, h, w = video.shape
    if c != 3 or tuple(reference.shape) != (b, c, 1, h, w):
        raise ValueError(
            f"need video [B,3,T,H,W] and reference [B,3,1,H,W] of the same B, H, W; got "
            f"{list(video.shape)} and {list(reference.shape)}"
        )
    dtype = video.dtype
    reference = reference.to(device=video.device, dtype=dtype)
    source = ((video + 1.0) / 2.0).permute(0, 2, 3, 4, 1)  # B T H W C
    ref = ((reference + 1.0) / 2.0).permute(0, 2, 3, 4, 1)
    source_lab = rgb_to_lab(source)
    ref_lab = rgb_to_lab(ref)
    ref_mean = ref_lab.mean(dim=[2, 3], keepdim=True)
    ref_std = ref_lab.std(dim=[2, 3], keepdim=True, unbiased=False)
    source_mean = source_lab.mean(dim=[2, 3], keepdim=True)
    source_std = source_lab.std(dim=[2, 3], keepdim=True, unbiased=False)
    source_std = torch.where(source_std < _STD_FLOOR, torch.ones_like(source_std), source_std)
    corrected = lab_to_rgb((source_lab - source_mean) * (ref_std / source_std) + ref_mean)
    blended = (1 - strength) * source + strength * corrected
    return (blended.permute(0, 4, 1, 2, 3) * 2.0 - 1.0).contiguous().to(dtype=dtype)


def to_float_frames(video: torch.Tensor) -> torch.Tensor:
    """``video [3,T,H,W]`` or ``[1,3,T,H,W]`` in [-1, 1] -> float32 ``[T,H,W,3]`` in [0, 255], not rounded.

    The release's ``run_pipeline`` output: float32, ``(x + 1) / 2`` clipped to [0, 1], times 255.
    """
    if video.dim() == 5:
        if video.shape[0] != 1:
            raise ValueError(f"expected one video, got batch {video.shape[0]}")
        video = video[0]
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"expected video [3,T,H,W], got {list(video.shape)}")
    return (((video.float() + 1) / 2).clamp(0, 1) * 255).permute(1, 2, 3, 0)


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """``video [3,T,H,W]`` or ``[1,3,T,H,W]`` in [-1, 1] -> uint8 ``[T,H,W,3]`` on the same device.

    As released: :func:`to_float_frames` **truncated** (not rounded) to uint8.
    Done on the video's device so only uint8 bytes (a quarter of float32) cross to the host.
    """
    return to_float_frames(video).to(torch.uint8).contiguous()
