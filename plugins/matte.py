"""What the sinks do with a chunk's person matte (``FrameChunk.alpha``): keep it across hold frames, or lay the
avatar over an opaque background.

The matte is computed once, before the frame bus (``engine.matting``); here it is only used:

- :class:`MatteKeeper` gives every chunk a matte: its own, or for frames that came without one (hold frames: the
  last frame or the idle loop repeated while the engine is late) the last matte seen, so the cut-out never
  flashes opaque. Before any matte has arrived the answer is None (show the frame as it is).
- :func:`unmix_edges` gives the soft edge band (hair, the outline) its foreground colour back: there a pixel is a mix
  of the person and the photo's old background, which shows as a pale fringe over a new background.
- :class:`Backdrop` lays a cut-out frame, fitted into an output frame (the virtual camera's 1280x720), over a colour
  (``#rrggbb``) or an image that fills the whole output (cover-fitted), for outputs that cannot carry alpha
  (meeting apps ignore it). Only the avatar's rectangle is blended; the rest is the backdrop as it is.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.interface import FrameChunk
from plugins.frame_fit import FrameFitter

__all__ = ["Backdrop", "MatteKeeper", "parse_colour", "unmix_edges"]

EDGE_LO, EDGE_HI = 3, 252  # alpha strictly between these is the soft edge band (the rest is person or background)


def parse_colour(text: str) -> tuple[int, int, int] | None:
    """``#rrggbb`` -> (r, g, b); None when ``text`` is not a colour (then it names an image)."""
    t = text.strip()
    if len(t) == 7 and t.startswith("#"):
        try:
            value = int(t[1:], 16)
        except ValueError:
            return None
        return (value >> 16) & 255, (value >> 8) & 255, value & 255
    return None


def unmix_edges(frames: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGB uint8 ``(n, H, W, 3)`` frames whose edge-band pixels carry an estimate of the person's own colour
    (a new array; every other pixel is unchanged: solid person pixels are the person, clear ones are not shown).

    The estimate is one coarse pass of blur-fusion foreground estimation (Forte and Pitie, "Approximate Fast
    Foreground Colour Estimation", ICIP 2021): the local mean colour of the person and of the background around each
    edge pixel, from alpha-weighted box blurs, then the pixel's own deviation from their mix given back to the
    person. The blurs run at a quarter of the size (a wide blur loses nothing there); the rest only on the band.
    """
    out = np.array(frames, dtype=np.uint8, copy=True)
    for frame, matte in zip(out, alpha, strict=True):
        band = (matte > EDGE_LO) & (matte < EDGE_HI)
        if not band.any():
            continue
        h, w = matte.shape
        small = (max(8, w // 4), max(8, h // 4))
        img = cv2.resize(frame, small, interpolation=cv2.INTER_AREA).astype(np.float32)
        a = cv2.resize(matte, small, interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] * (1.0 / 255.0)
        r = max(2, min(small) // 24)
        k = (2 * r + 1, 2 * r + 1)
        mean_a = cv2.blur(a, k)[..., None]
        person = cv2.blur(img * a, k) / (mean_a + 1e-5)
        behind = cv2.blur(img * (1.0 - a), k) / (1.0 - mean_a + 1e-5)
        person = cv2.resize(person, (w, h), interpolation=cv2.INTER_LINEAR)[band]
        behind = cv2.resize(behind, (w, h), interpolation=cv2.INTER_LINEAR)[band]
        pa = matte[band].astype(np.float32)[:, None] * (1.0 / 255.0)
        seen = frame[band].astype(np.float32)
        frame[band] = np.clip(person + pa * (seen - pa * person - (1.0 - pa) * behind) + 0.5, 0, 255).astype(np.uint8)
    return out


class MatteKeeper:
    """The matte of each chunk, or the last one seen for frames that have none (see the module docstring)."""

    def __init__(self) -> None:
        self.last: np.ndarray | None = None  # uint8 (H, W)
        self.reused_frames = 0

    def alpha_of(self, chunk: FrameChunk) -> np.ndarray | None:
        """uint8 ``(n, H, W)`` for ``chunk``'s frames, or None before any matte arrived."""
        if chunk.alpha is not None:
            self.last = chunk.alpha[-1]
            return chunk.alpha
        if self.last is None or self.last.shape != chunk.frames.shape[1:3]:
            return None
        self.reused_frames += chunk.num_frames
        return np.broadcast_to(self.last, chunk.frames.shape[:3])


class Backdrop:
    """An opaque background for cut-out frames: a colour or an image file (read once, fitted per frame size)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.colour = parse_colour(spec)
        self._image: np.ndarray | None = None
        if self.colour is None:
            bgr = cv2.imread(str(Path(spec).expanduser()), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"background {spec!r} is neither a #rrggbb colour nor a readable image file")
            self._image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self._fitted: np.ndarray | None = None

    @property
    def pad_rgb(self) -> tuple[int, int, int]:
        """The colour of letterbox bars around a cut-out frame: the colour, or the image's mean colour."""
        if self.colour is not None:
            return self.colour
        assert self._image is not None
        r, g, b = (round(float(c)) for c in self._image.reshape(-1, 3).mean(axis=0))
        return r, g, b

    def plate(self, height: int, width: int) -> np.ndarray:
        """The background at ``width`` x ``height``, uint8 RGB (cached for the last size)."""
        if self._fitted is None or self._fitted.shape[:2] != (height, width):
            if self.colour is not None:
                plate = np.empty((height, width, 3), np.uint8)
                plate[:] = self.colour
            else:
                assert self._image is not None
                ih, iw = self._image.shape[:2]
                scale = max(width / iw, height / ih)  # cover: fill the frame, crop the overflow
                resized = cv2.resize(self._image, (max(width, round(iw * scale)), max(height, round(ih * scale))),
                                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
                y0, x0 = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
                plate = np.ascontiguousarray(resized[y0:y0 + height, x0:x0 + width])
            plate.setflags(write=False)
            self._fitted = plate
        return self._fitted

    def over(self, rgba: np.ndarray, fitter: FrameFitter) -> np.ndarray:
        """An RGBA uint8 ``(h, w, 4)`` frame (straight alpha) fitted by ``fitter`` over the backdrop: a new uint8
        ``(fitter.height, fitter.width, 3)`` frame."""
        geo = fitter.geometry(rgba.shape[:2])
        y0, y1, x0, x1 = geo.crop
        (sh, sw), (oy, ox) = geo.size, geo.offset
        src = rgba[y0:y1, x0:x1]
        if src.shape[:2] != (sh, sw):
            src = cv2.resize(src, (sw, sh), interpolation=geo.interpolation)
        out = self.plate(fitter.height, fitter.width).copy()
        under = out[oy:oy + sh, ox:ox + sw].astype(np.float32)
        a = src[..., 3:].astype(np.float32) * (1.0 / 255.0)
        out[oy:oy + sh, ox:ox + sw] = np.clip(under + a * (src[..., :3].astype(np.float32) - under) + 0.5, 0, 255)
        return out
