"""Per-avatar preparation of the streaming loop (the release's ``prepare_params``, spec §6.2).

From a reference image and the VAE:

* ``fit_reference``: resize by the larger scale (PIL bilinear, sizes rounded up) so the image covers
  the target, then centre-crop it (torchvision's rounding). An image already at the target size is
  returned unchanged.
* ``reference_pixels``: ``[1, 3, 1, H, W]`` in [-1, 1], cast to the compute dtype **before** ``/255``
  (so the reference carries that dtype's rounding, as released).
* ``condition_mask`` and ``prepare_reference``: ``y = [mask (4) ‖ VAE(reference + frame_num-1 black
  frames) (16)]`` and the first motion latent ``VAE(reference)``.

* ``prepare_flashhead_reference``: FlashHead's conditioning, ``y = VAE(reference repeated frame_num times)``
  (16 channels, no mask) and the first motion latent ``y[:, :, :1]``.

T5 and CLIP are not run here; their outputs enter as tensors (``engine.conditioning``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

__all__ = [
    "PreparedReference",
    "VideoVAE",
    "center_crop_box",
    "condition_mask",
    "fit_reference",
    "prepare_flashhead_reference",
    "prepare_reference",
    "reference_pixels",
    "token_count",
]


class VideoVAE(Protocol):
    """What the streaming loop needs of the VAE (``engine.models.vae.WanVAE`` satisfies it)."""

    def encode(self, video: torch.Tensor) -> torch.Tensor: ...  # [B,3,T,H,W] -> [B,16,T',h,w]

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...  # [B,16,T',h,w] -> [B,3,T,H,W] in [-1, 1]


@dataclass(frozen=True)
class PreparedReference:
    """The VAE-side conditioning of one avatar (batched, batch 1)."""

    cond_image: torch.Tensor  # [1, 3, 1, H, W] in [-1, 1]: also the colour-correction reference
    y: torch.Tensor  # [1, 4 + 16, F_lat, h, w]
    motion_latent: torch.Tensor  # [1, 16, 1, h, w]: VAE latent of the reference frame alone


def center_crop_box(size_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int]:
    """``(top, left)`` of torchvision's ``center_crop`` (``int(round((n - t) / 2))``, Python rounding)."""
    (h, w), (th, tw) = size_hw, target_hw
    return round((h - th) / 2.0), round((w - tw) / 2.0)


def fit_reference(image_u8: np.ndarray, target_hw: tuple[int, int]) -> np.ndarray:
    """Resize (cover, PIL bilinear, ``ceil`` sizes) and centre-crop an RGB uint8 ``(H, W, 3)`` image."""
    image = np.asarray(image_u8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"reference must be an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    th, tw = target_hw
    h, w = image.shape[:2]
    if (h, w) == (th, tw):
        return image.copy()
    scale = max(th / h, tw / w)
    final_h, final_w = math.ceil(scale * h), math.ceil(scale * w)
    if (final_h, final_w) != (h, w):
        from PIL import Image

        image = np.asarray(Image.fromarray(image).resize((final_w, final_h), resample=Image.BILINEAR))
    top, left = center_crop_box((final_h, final_w), (th, tw))
    return np.array(image[top : top + th, left : left + tw])  # a writable, contiguous copy


def reference_pixels(image_u8: np.ndarray, *, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``[1, 3, 1, H, W]``: cast to ``dtype`` first, then ``(x / 255 - 0.5) * 2``."""
    x = torch.from_numpy(np.array(image_u8, dtype=np.uint8)).permute(2, 0, 1)[None, :, None]
    x = x.to(device=device, dtype=dtype)
    return (x / 255 - 0.5) * 2


def condition_mask(
    frame_num: int, lat_h: int, lat_w: int, *, temporal_stride: int = 4, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """``[1, stride, F_lat, h, w]``: every channel 1 on latent frame 0, 0 elsewhere (built as released).

    Pixel frame 0 is marked and repeated ``stride`` times so the ``1 + stride*(F_lat-1)`` frames fold
    into ``F_lat`` groups of ``stride``; the group position becomes the channel.
    """
    msk = torch.ones(1, frame_num, lat_h, lat_w, device=device)
    msk[:, 1:] = 0
    msk = torch.cat([torch.repeat_interleave(msk[:, 0:1], repeats=temporal_stride, dim=1), msk[:, 1:]], dim=1)
    msk = msk.view(1, msk.shape[1] // temporal_stride, temporal_stride, lat_h, lat_w)
    return msk.transpose(1, 2).to(dtype)


def token_count(
    frame_num: int,
    lat_hw: tuple[int, int],
    *,
    vae_stride_t: int = 4,
    patch_hw: tuple[int, int] = (2, 2),
    sp_size: int = 1,
) -> int:
    """The release's ``max_seq_len``: DiT tokens per chunk, rounded up to a multiple of ``sp_size``."""
    tokens = ((frame_num - 1) // vae_stride_t + 1) * lat_hw[0] * lat_hw[1] // (patch_hw[0] * patch_hw[1])
    return math.ceil(tokens / sp_size) * sp_size


def prepare_reference(
    cond_image: torch.Tensor, vae: VideoVAE, frame_num: int, *, temporal_stride: int = 4
) -> PreparedReference:
    """``y`` and the first motion latent for ``cond_image [1,3,1,H,W]`` (from :func:`reference_pixels`).

    ``y`` concatenates the mask with the VAE latent of the reference followed by ``frame_num - 1``
    black (zero) frames, in ``cond_image``'s dtype.
    """
    if cond_image.dim() != 5 or cond_image.shape[:3] != (1, 3, 1):
        raise ValueError(f"cond_image must be [1, 3, 1, H, W], got {list(cond_image.shape)}")
    if frame_num < 1 or (frame_num - 1) % temporal_stride:
        raise ValueError(f"frame_num must be {temporal_stride}k+1, got {frame_num}")
    dtype, device = cond_image.dtype, cond_image.device
    black = torch.zeros(1, 3, frame_num - 1, *cond_image.shape[3:], dtype=dtype, device=device)
    ref_latent = vae.encode(torch.cat([cond_image, black], dim=2)).to(dtype)
    lat_h, lat_w = ref_latent.shape[3:]
    mask = condition_mask(frame_num, lat_h, lat_w, temporal_stride=temporal_stride, dtype=dtype, device=device)
    y = torch.cat([mask, ref_latent], dim=1)
    motion_latent = vae.encode(cond_image)
    return PreparedReference(cond_image=cond_image, y=y, motion_latent=motion_latent)


def prepare_flashhead_reference(cond_image: torch.Tensor, vae: VideoVAE, frame_num: int) -> PreparedReference:
    """FlashHead's ``prepare_params``: ``y`` = the VAE latent of ``cond_image [1,3,1,H,W]`` repeated ``frame_num``
    times (its reference latent, ``[1,16,F_lat,h,w]``, no mask), the first motion latent its first frame."""
    if cond_image.dim() != 5 or cond_image.shape[:3] != (1, 3, 1):
        raise ValueError(f"cond_image must be [1, 3, 1, H, W], got {list(cond_image.shape)}")
    ref_latent = vae.encode(cond_image.repeat(1, 1, frame_num, 1, 1)).to(cond_image.dtype)
    return PreparedReference(cond_image=cond_image, y=ref_latent, motion_latent=ref_latent[:, :, :1].clone())
