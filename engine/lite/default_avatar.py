"""The built-in avatar: a stylised head-and-shoulders portrait the project draws itself.

Drawn with cv2/numpy primitives on a 2x canvas (anti-aliased polygons and ellipses, soft masks,
multiplicative shading) and downsampled, so it needs no image file and no face detection: its
:class:`FaceLayout` is known from the drawing. All coordinates below are in a 512-pixel frame.
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from engine.lite.face_locator import FaceLayout

_SS = 2  # supersampling factor of the drawing canvas

# Geometry of the drawn face (512-pixel frame).
_EYE_Y, _EYE_DX = 230.0, 50.0
_MOUTH_Y, _MOUTH_HALF_W = 331.0, 37.0
_FACE_C, _FACE_AX, _FACE_AY = (256.0, 240.0), 108.0, 148.0

_SKIN = (238, 197, 170)
_SKIN_SHADOW = (196, 142, 118)
_HAIR = (74, 46, 36)
_HAIR_LIGHT = (122, 80, 58)
_SHIRT = (64, 104, 140)
_IRIS = (96, 128, 86)
_LIP = (196, 96, 100)
_LIP_DARK = (162, 70, 80)


class _Canvas:
    """Float RGB canvas with soft-mask painting at ``_SS`` times the output resolution."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.k = _SS * size / 512.0  # 512-frame units -> canvas pixels
        n = _SS * size
        self.rgb = np.zeros((n, n, 3), dtype=np.float32)
        ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
        self.x, self.y = xs / self.k, ys / self.k  # canvas pixel -> 512-frame coordinates

    def pts(self, points: list[tuple[float, float]]) -> np.ndarray:
        return np.round(np.array(points, dtype=np.float64) * self.k * 16).astype(np.int32)  # 4-bit subpixel

    def mask(self, draw, blur: float = 0.0) -> np.ndarray:
        """A [0, 1] float mask from a drawing callback on a uint8 canvas, optionally feathered."""
        m = np.zeros(self.rgb.shape[:2], dtype=np.uint8)
        draw(m)
        out = m.astype(np.float32) / 255.0
        if blur > 0:
            out = cv2.GaussianBlur(out, (0, 0), blur * self.k)
        return out

    def poly(self, points: list[tuple[float, float]], blur: float = 0.0) -> np.ndarray:
        return self.mask(lambda m: cv2.fillPoly(m, [self.pts(points)], 255, cv2.LINE_AA, shift=4), blur)

    def ellipse(self, c: tuple[float, float], axes: tuple[float, float], angle: float = 0.0, blur: float = 0.0) -> np.ndarray:
        ax = (int(axes[0] * self.k * 16), int(axes[1] * self.k * 16))
        cc = (int(c[0] * self.k * 16), int(c[1] * self.k * 16))
        return self.mask(lambda m: cv2.ellipse(m, cc, ax, angle, 0, 360, 255, -1, cv2.LINE_AA, shift=4), blur)

    def stroke(self, points: list[tuple[float, float]], width: float, blur: float = 0.0) -> np.ndarray:
        t = max(1, int(round(width * self.k)))
        return self.mask(lambda m: cv2.polylines(m, [self.pts(points)], False, 255, t, cv2.LINE_AA, shift=4), blur)

    def paint(self, mask: np.ndarray, colour, opacity: float = 1.0) -> None:
        a = (mask * opacity)[..., None]
        self.rgb += a * (np.asarray(colour, dtype=np.float32) - self.rgb)

    def shade(self, mask: np.ndarray, factor: float) -> None:
        """Multiply the colour under ``mask`` by ``factor`` (< 1 darkens, > 1 lightens)."""
        self.rgb *= (1.0 + (factor - 1.0) * mask)[..., None]

    def result(self) -> np.ndarray:
        small = cv2.resize(self.rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return np.clip(small + 0.5, 0, 255).astype(np.uint8)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(math.radians(a0), math.radians(a1), n)]


def _background(c: _Canvas) -> None:
    t = np.clip(c.y / 512.0, 0.0, 1.0)[..., None]
    top, bottom = np.array([176, 204, 214], np.float32), np.array([118, 146, 170], np.float32)
    c.rgb[:] = top * (1 - t) + bottom * t
    glow = np.exp(-(((c.x - 256) / 210) ** 2 + ((c.y - 200) / 190) ** 2))
    c.rgb += (glow * 26.0)[..., None]


def _body(c: _Canvas) -> None:
    back = c.ellipse((256, 232), (150, 160), blur=1.2)  # bob, behind the head
    c.paint(back, _HAIR)
    c.shade(back * np.clip((c.y - 250) / 140, 0, 1), 0.75)
    c.paint(c.poly([(222, 340), (290, 340), (298, 430), (330, 470), (256, 500), (182, 470), (214, 430)], blur=0.8), _SKIN)  # neck, chest
    c.shade(c.ellipse((256, 396), (44, 16), blur=7), 0.8)  # the chin's shadow on the neck
    shirt = np.clip(c.ellipse((256, 596), (240, 160), blur=0.8) - c.poly([(206, 420), (256, 476), (306, 420)], blur=0.8), 0, 1)
    c.paint(shirt, _SHIRT)
    c.paint(c.stroke([(204, 438), (256, 480), (308, 438)], 5.0, blur=0.8), (52, 86, 118))  # collar
    c.shade(shirt * np.clip(np.abs(c.x - 256) / 240, 0, 1) ** 1.5, 0.78)


def _face(c: _Canvas) -> np.ndarray:
    # An egg-shaped outline: an ellipse whose lower half narrows towards a rounded chin.
    t = np.linspace(0.0, 2.0 * math.pi, 120, endpoint=False)
    low = np.clip(np.sin(t), 0.0, 1.0) ** 1.6
    outline = list(zip(_FACE_C[0] + _FACE_AX * np.cos(t) * (1.0 - 0.2 * low), _FACE_C[1] + _FACE_AY * np.sin(t)))
    face = c.poly(outline, blur=0.8)
    c.paint(face, _SKIN)
    # Soft modelling: darker towards the sides and the jaw, warm cheeks, light forehead.
    side = np.clip(np.abs(c.x - 256) / 110, 0, 1) ** 2.2
    c.shade(face * side, 0.8)
    c.shade(face * np.clip((c.y - 340) / 60, 0, 1) ** 2, 0.92)
    for s in (-1, 1):
        c.paint(c.ellipse((256 + s * 62, 296), (28, 17), blur=9) * face, (236, 150, 140), 0.35)
    c.shade(c.ellipse((256, 170), (64, 34), blur=18) * face, 1.05)
    return face


def _eye(c: _Canvas, cx: float, side: int) -> None:
    cy = _EYE_Y
    almond = [(cx - 27, cy + 1)] + _arc(cx, cy + 2, 27, 15, 180, 360)[1:-1] + [(cx + 27, cy + 1)] + _arc(cx, cy - 1, 27, 11, 0, 180)[1:-1]
    sclera = c.poly(almond, blur=0.4)
    c.shade(c.ellipse((cx, cy - 6), (34, 14), blur=5), 0.9)  # socket shadow above the eye
    c.paint(sclera, (246, 242, 238))
    c.shade(sclera * np.clip((cy - c.y + 6) / 14, 0, 1), 0.86)  # lid shadow on the white
    iris = c.ellipse((cx, cy + 2), (12, 12)) * sclera  # the upper lid covers its top a little
    r = np.sqrt((c.x - cx) ** 2 + (c.y - cy - 2) ** 2)
    c.paint(iris, _IRIS)
    c.shade(iris * np.clip((r - 6) / 6, 0, 1), 0.62)  # darker limbal ring
    c.paint(c.ellipse((cx, cy + 2), (5.2, 5.2)) * sclera, (22, 18, 20))
    c.paint(c.ellipse((cx - 4, cy - 2), (2.6, 2.6), blur=0.3) * sclera, (255, 255, 255), 0.9)
    lid = _arc(cx, cy + 2, 27.5, 15.5, 185, 355)
    wing = (cx + side * 31, cy - 3)
    lid = lid + [wing] if side > 0 else [wing] + lid
    c.paint(c.stroke(lid, 3.2, blur=0.3), (46, 30, 30))
    c.paint(c.stroke(_arc(cx, cy, 26, 12, 15, 165), 1.0, blur=0.5), (150, 96, 86), 0.5)  # lower lid
    c.paint(c.stroke(_arc(cx, cy - 2, 28, 22, 200, 340), 1.2, blur=0.8), _SKIN_SHADOW, 0.6)  # crease
    brow = [(cx - side * 30, _EYE_Y - 28), (cx - side * 8, _EYE_Y - 36), (cx + side * 18, _EYE_Y - 36), (cx + side * 36, _EYE_Y - 29)]
    c.paint(c.stroke(brow, 6.5, blur=1.0), (84, 54, 42))


def _nose_and_mouth(c: _Canvas) -> None:
    c.paint(c.stroke([(248, 246), (244, 276), (240, 292)], 3.0, blur=3.5), _SKIN_SHADOW, 0.45)
    c.paint(c.stroke(_arc(256, 290, 16, 9, 20, 160), 2.2, blur=1.5), _SKIN_SHADOW, 0.7)
    for s in (-1, 1):
        c.paint(c.ellipse((256 + s * 8, 297), (4.5, 2.4), blur=0.8), (150, 92, 80), 0.85)
    c.shade(c.ellipse((258, 284), (7, 5), blur=3), 1.06)  # tip highlight
    y, w = _MOUTH_Y, _MOUTH_HALF_W
    upper = [(256 - w, y)] + [(256 - 22, y - 8), (256 - 8, y - 10), (256, y - 7), (256 + 8, y - 10), (256 + 22, y - 8)] + [(256 + w, y)]
    upper += [(256 + 20, y + 1.5), (256, y + 2), (256 - 20, y + 1.5)]
    lower = [(256 - w, y), (256 - 20, y + 1.5), (256, y + 2), (256 + 20, y + 1.5), (256 + w, y)] + _arc(256, y, w - 2, 15, 0, 180)[1:-1]
    c.paint(c.poly(lower, blur=0.7), _LIP)
    c.shade(c.ellipse((256, y + 7), (16, 4), blur=3), 1.12)  # lower lip highlight
    c.paint(c.poly(upper, blur=0.7), _LIP_DARK)
    c.paint(c.stroke([(256 - w, y), (256 - 20, y + 1.5), (256, y + 2), (256 + 20, y + 1.5), (256 + w, y)], 1.6, blur=0.4), (112, 44, 52))
    c.shade(c.ellipse((256, y + 22), (20, 5), blur=4), 0.9)  # under-lip shadow


def _hair_front(c: _Canvas, face: np.ndarray) -> None:
    outer = _arc(256, 226, 152, 152, 188, 352)
    inner = [(396, 262), (384, 214), (360, 176), (326, 150), (296, 140), (262, 150), (222, 164), (186, 186), (160, 218), (146, 262), (124, 270)]
    m = c.poly(outer + inner, blur=1.0)
    c.paint(m, _HAIR)
    # A few lighter strands following the sweep, and a soft sheen.
    for pts in ([(170, 140), (214, 112), (270, 100)], [(304, 104), (346, 124), (376, 164)], [(150, 190), (178, 150)], [(236, 150), (280, 128), (300, 126)]):
        c.paint(c.stroke(pts, 3.0, blur=2.0) * m, _HAIR_LIGHT, 0.6)
    c.shade(c.ellipse((300, 112), (60, 15), angle=18, blur=8) * m, 1.3)
    c.shade(np.clip(face - m, 0, 1) * c.ellipse((256, 160), (120, 26), blur=10), 0.88)  # hair shadow on the forehead


@lru_cache(maxsize=4)
def _draw(size: int) -> np.ndarray:
    c = _Canvas(size)
    _background(c)
    _body(c)
    face = _face(c)
    for s in (-1, 1):
        _eye(c, 256 + s * _EYE_DX, s)
    _nose_and_mouth(c)
    _hair_front(c, face)
    img = c.result()
    img.setflags(write=False)
    return img


def draw_default_avatar(size: int = 512) -> np.ndarray:
    """The built-in avatar as RGB uint8 ``(size, size, 3)``."""
    if size < 64:
        raise ValueError(f"default avatar size must be at least 64 pixels, got {size}")
    return _draw(int(size)).copy()


def default_avatar_layout(size: int = 512) -> FaceLayout:
    """Face layout of :func:`draw_default_avatar` at ``size`` (known from the drawing)."""
    s = size / 512.0
    layout = FaceLayout(
        face_box=(126.0, 128.0, 260.0, 260.0),
        left_eye=(256.0 - _EYE_DX, _EYE_Y + 1.0),
        right_eye=(256.0 + _EYE_DX, _EYE_Y + 1.0),
        mouth=(256.0, _MOUTH_Y + 1.0),
        mouth_width=2.0 * _MOUTH_HALF_W,
    )
    return layout.transformed(s, 0.0, 0.0)
