"""Fit an avatar frame into a fixed output size (a virtual camera's 1280x720): letterbox or crop.

Pure numpy/cv2. ``letterbox`` scales the whole frame to fit inside the output and pads the rest
with a colour, centred; ``crop`` scales it to cover the output and cuts the overflow, centred.
Downscaling uses ``INTER_AREA`` (no aliasing), upscaling ``INTER_LINEAR``. The geometry is computed
once per input size and cached, so the per-frame cost is one resize and one copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

__all__ = ["FitGeometry", "FitMode", "FrameFitter", "fit_geometry"]

FitMode = Literal["letterbox", "crop"]


@dataclass(frozen=True)
class FitGeometry:
    """Where an input of ``src`` size goes in the output.

    ``crop`` = (y0, y1, x0, x1) of the source region used; ``size`` = (h, w) it is resized to;
    ``offset`` = (y, x) of its top-left corner in the output; ``interpolation`` = cv2 flag.
    """

    src: tuple[int, int]
    dst: tuple[int, int]
    crop: tuple[int, int, int, int]
    size: tuple[int, int]
    offset: tuple[int, int]
    interpolation: int

    @property
    def covers_output(self) -> bool:
        return self.size == self.dst


def fit_geometry(src_hw: tuple[int, int], dst_hw: tuple[int, int], mode: FitMode) -> FitGeometry:
    """The crop, resize and placement that fit ``src_hw`` into ``dst_hw`` by ``mode``."""
    (h, w), (H, W) = (int(src_hw[0]), int(src_hw[1])), (int(dst_hw[0]), int(dst_hw[1]))
    if min(h, w, H, W) <= 0:
        raise ValueError(f"frame sizes must be positive, got source {w}x{h} and output {W}x{H}")
    if mode == "letterbox":
        scale = min(W / w, H / h)
        sh, sw = min(H, max(1, round(h * scale))), min(W, max(1, round(w * scale)))
        crop = (0, h, 0, w)
        offset = ((H - sh) // 2, (W - sw) // 2)
    elif mode == "crop":
        scale = max(W / w, H / h)
        ch, cw = min(h, max(1, round(H / scale))), min(w, max(1, round(W / scale)))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        crop = (y0, y0 + ch, x0, x0 + cw)
        sh, sw = H, W
        offset = (0, 0)
    else:
        raise ValueError(f"fit mode must be 'letterbox' or 'crop', got {mode!r}")
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return FitGeometry((h, w), (H, W), crop, (sh, sw), offset, interpolation)


class FrameFitter:
    """Fits uint8 RGB ``(h, w, 3)`` frames into ``(height, width, 3)``; geometry cached per input size."""

    def __init__(self, width: int, height: int, mode: FitMode = "letterbox", pad_rgb: tuple[int, int, int] = (0, 0, 0)) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"output size must be positive, got {width}x{height}")
        if len(pad_rgb) != 3 or not all(0 <= int(c) <= 255 for c in pad_rgb):
            raise ValueError(f"pad colour must be three values in 0..255, got {pad_rgb}")
        fit_geometry((1, 1), (height, width), mode)  # validates the mode early
        self.width, self.height, self.mode = int(width), int(height), mode
        self.pad_rgb = tuple(int(c) for c in pad_rgb)
        self._geometry: dict[tuple[int, int], FitGeometry] = {}
        self._canvas = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self._canvas[:] = self.pad_rgb
        self._canvas.setflags(write=False)

    def geometry(self, src_hw: tuple[int, int]) -> FitGeometry:
        key = (int(src_hw[0]), int(src_hw[1]))
        geo = self._geometry.get(key)
        if geo is None:
            geo = self._geometry[key] = fit_geometry(key, (self.height, self.width), self.mode)
        return geo

    def fit(self, frame: np.ndarray) -> np.ndarray:
        """A new C-contiguous uint8 ``(height, width, 3)`` frame."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected a uint8 RGB frame of shape (h, w, 3), got {frame.dtype} {frame.shape}")
        geo = self.geometry(frame.shape[:2])
        y0, y1, x0, x1 = geo.crop
        src = frame[y0:y1, x0:x1]
        sh, sw = geo.size
        if geo.covers_output:
            if src.shape[:2] == (sh, sw):
                return np.array(src, dtype=np.uint8, order="C", copy=True)
            return np.ascontiguousarray(cv2.resize(src, (sw, sh), interpolation=geo.interpolation))
        out = self._canvas.copy()  # a memcpy of the pre-filled pad colour
        oy, ox = geo.offset
        out[oy : oy + sh, ox : ox + sw] = src if src.shape[:2] == (sh, sw) else cv2.resize(src, (sw, sh), interpolation=geo.interpolation)
        return out
