"""Locate the face, eyes and mouth of a frontal portrait with the Haar cascades that ship in opencv.

The cascades are XML files inside the installed ``opencv-python-headless`` wheel
(``cv2.data.haarcascades``), so nothing is downloaded at run time. Eyes come from the eye cascade
inside the face box, refined to the darkest (iris) spot; the mouth comes from face geometry (it lies
about 1.1 interocular distances below the eye midpoint, perpendicular to the eye line) refined by a
lip-colour and lip-seam search. Every detector step falls back to geometry, so a found face always
yields a complete layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

MIN_FACE_PX = 64
"""Smallest face (box side, in pixels of the given image) the locator accepts."""

_DETECT_MAX_SIDE_PX = 640  # detection runs on a copy downscaled to this; layouts are mapped back
_EYE_DOWN_RATIO = 1.12  # eye midpoint -> mouth seam, in interocular distances (typical adult face)


class NoFaceError(ValueError):
    """The image has no detectable frontal face."""


@dataclass(frozen=True)
class FaceLayout:
    """Where the face parts are, in pixels of one image (x right, y down).

    ``left_eye`` is the eye on the image's left. ``mouth`` is the centre of the seam between the lips
    and ``mouth_width`` the distance between the mouth corners.
    """

    face_box: tuple[float, float, float, float]  # x, y, w, h
    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    mouth: tuple[float, float]
    mouth_width: float

    @property
    def interocular(self) -> float:
        return math.dist(self.left_eye, self.right_eye)

    @property
    def roll_rad(self) -> float:
        """Angle of the eye line against the image x axis (positive: right eye lower)."""
        (lx, ly), (rx, ry) = self.left_eye, self.right_eye
        return math.atan2(ry - ly, rx - lx)

    @property
    def face_centre(self) -> tuple[float, float]:
        x, y, w, h = self.face_box
        return x + w / 2.0, y + h / 2.0

    def eye_boxes(self) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """Boxes (x, y, w, h) around each eye opening, derived from the eye centres."""
        d = self.interocular
        w, h = 0.62 * d, 0.34 * d
        return tuple(  # type: ignore[return-value]
            (int(round(cx - w / 2)), int(round(cy - h / 2)), int(round(w)), int(round(h)))
            for cx, cy in (self.left_eye, self.right_eye)
        )

    def transformed(self, scale: float, dx: float, dy: float) -> FaceLayout:
        """The same layout after ``p -> p * scale + (dx, dy)`` (a resize plus a crop or pad)."""

        def pt(p: tuple[float, float]) -> tuple[float, float]:
            return (p[0] * scale + dx, p[1] * scale + dy)

        x, y, w, h = self.face_box
        return FaceLayout(
            face_box=(x * scale + dx, y * scale + dy, w * scale, h * scale),
            left_eye=pt(self.left_eye),
            right_eye=pt(self.right_eye),
            mouth=pt(self.mouth),
            mouth_width=self.mouth_width * scale,
        )


@lru_cache(maxsize=None)
def _cascade(name: str) -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"opencv cascade {path} could not be loaded; reinstall opencv-python-headless")
    return cascade


def _check_image(image_u8: np.ndarray) -> None:
    if not isinstance(image_u8, np.ndarray) or image_u8.dtype != np.uint8 or image_u8.ndim != 3 or image_u8.shape[2] != 3:
        got = f"{type(image_u8).__name__} {getattr(image_u8, 'dtype', '')} {getattr(image_u8, 'shape', '')}"
        raise ValueError(f"expected an RGB image as uint8 numpy array (H, W, 3), got {got}")


def _no_face(image_u8: np.ndarray, why: str) -> NoFaceError:
    h, w = image_u8.shape[:2]
    return NoFaceError(
        f"no face found in the {w}x{h} image ({why}); use a frontal photo where the face is clearly visible, "
        f"at least {MIN_FACE_PX}x{MIN_FACE_PX} pixels"
    )


def _detect_face(gray: np.ndarray, min_px: int) -> tuple[int, int, int, int] | None:
    """Largest face box; alt2 first (tighter boxes), the default cascade as a fallback."""
    for name, neighbours in (("haarcascade_frontalface_alt2.xml", 4), ("haarcascade_frontalface_default.xml", 6)):
        faces = _cascade(name).detectMultiScale(gray, scaleFactor=1.08, minNeighbors=neighbours, minSize=(min_px, min_px))
        if len(faces):
            x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
            return int(x), int(y), int(w), int(h)
    return None


def _iris_centre(gray: np.ndarray, cx: float, cy: float, iris_px: float) -> tuple[float, float]:
    """Darkest iris-sized spot near (cx, cy). A box filter of the iris size averages out thin dark
    lashes and brows, which a plain minimum would pick. Keeps (cx, cy) when the patch is flat."""
    k = max(3, int(iris_px) | 1)
    r = max(2, int(0.8 * iris_px))
    x0, y0 = max(0, int(cx) - r - k), max(0, int(cy) - r - k)
    patch = gray[y0 : int(cy) + r + k + 1, x0 : int(cx) + r + k + 1].astype(np.float32)
    if patch.shape[0] <= 2 * k or patch.shape[1] <= 2 * k:
        return cx, cy
    mean = cv2.blur(patch, (k, k))
    # Only centres within r of the cascade's centre compete.
    cy_l, cx_l = int(cy) - y0, int(cx) - x0
    window = mean[max(0, cy_l - r) : cy_l + r + 1, max(0, cx_l - r) : cx_l + r + 1]
    if window.size == 0 or float(window.max() - window.min()) < 6.0:
        return cx, cy
    _, _, (mx, my), _ = cv2.minMaxLoc(window)
    return float(x0 + max(0, cx_l - r) + mx), float(y0 + max(0, cy_l - r) + my)


def _detect_eyes(gray: np.ndarray, face: tuple[int, int, int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Eye centres (image-left, image-right) inside the face box; geometric defaults when not found."""
    x, y, w, h = face
    geo_l, geo_r = (x + 0.31 * w, y + 0.39 * h), (x + 0.69 * w, y + 0.39 * h)
    top, bottom = y + int(0.15 * h), y + int(0.58 * h)
    roi = gray[top:bottom, x : x + w]
    eyes = _cascade("haarcascade_eye.xml").detectMultiScale(
        roi, scaleFactor=1.05, minNeighbors=4, minSize=(max(8, w // 10), max(8, w // 10)), maxSize=(w // 2, w // 2)
    )
    left: list[tuple[float, float, float]] = []
    right: list[tuple[float, float, float]] = []
    for ex, ey, ew, eh in eyes:
        ecx, ecy = x + ex + ew / 2.0, top + ey + eh / 2.0
        if not 0.1 * w < ecx - x < 0.9 * w:
            continue
        side, geo = (left, geo_l) if ecx < x + w / 2.0 else (right, geo_r)
        side.append((math.dist((ecx, ecy), geo), ecx, ecy))
    chosen = []
    for side, geo in ((left, geo_l), (right, geo_r)):
        if side:
            _, ecx, ecy = min(side)
            chosen.append(_iris_centre(gray, ecx, ecy, 0.065 * w))
        else:
            chosen.append(geo)
    (lx, ly), (rx, ry) = chosen
    # Reject a pair that is implausible for a frontal face (too close, too far, too tilted).
    d = math.dist((lx, ly), (rx, ry))
    if not (0.25 * w < d < 0.65 * w) or abs(ry - ly) > 0.6 * d:
        return geo_l, geo_r
    return (lx, ly), (rx, ry)


def _refine_mouth(
    rgb: np.ndarray, gray: np.ndarray, guess: tuple[float, float], iod: float, roll: float
) -> tuple[tuple[float, float], float]:
    """Mouth seam centre and width from lip colour (YCrCb Cr) and the dark seam row near ``guess``."""
    default_w = 0.8 * iod
    gx, gy = guess
    half_w, half_h = int(0.55 * iod), int(0.38 * iod)
    h_img, w_img = gray.shape
    x0, x1 = max(0, int(gx) - half_w), min(w_img, int(gx) + half_w + 1)
    y0, y1 = max(0, int(gy) - half_h), min(h_img, int(gy) + half_h + 1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return guess, default_w
    # Undo the head roll so lips run along rows.
    centre = (float(gx - x0), float(gy - y0))
    rot = cv2.getRotationMatrix2D(centre, math.degrees(roll), 1.0)
    size = (x1 - x0, y1 - y0)
    patch = cv2.warpAffine(rgb[y0:y1, x0:x1], rot, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    cr = cv2.cvtColor(patch, cv2.COLOR_RGB2YCrCb)[:, :, 1].astype(np.float32)
    cr = cv2.GaussianBlur(cr, (5, 5), 0)
    thr = float(np.percentile(cr, 82))
    mask = (cr >= thr).astype(np.uint8)
    n, labels, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
    best = None
    for i in range(1, n):
        bx, by, bw, bh, area = stats[i]
        ccx, ccy = cents[i]
        if area < 0.01 * iod * iod or not 0.35 * iod < bw < 1.3 * iod or bh > 0.6 * iod:
            continue
        if abs(ccx - centre[0]) > 0.3 * iod or abs(ccy - centre[1]) > 0.3 * iod:
            continue
        score = area - 4.0 * iod * abs(ccx - centre[0])
        if best is None or score > best[0]:
            best = (score, bx, by, bw, bh)
    if best is None:
        return guess, default_w
    _, bx, by, bw, bh = best
    # The seam is the thin dark line between the lips: the row that is darkest relative to the rows a
    # few pixels above and below it (lip bodies are dark too, but broadly so). The blob may hold only
    # the redder lower lip, so the search starts above it.
    lum = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY).astype(np.float32)
    cols = slice(bx + bw // 4, bx + bw - bw // 4)
    pad = max(2, int(0.04 * iod))
    r0, r1 = max(0, by - 3 * pad), min(lum.shape[0], by + bh + pad)
    rows = cv2.GaussianBlur(lum[r0:r1, cols].mean(axis=1).reshape(-1, 1), (1, 3), 0).ravel()
    if rows.size > 2 * pad + 1:
        valley = rows[pad:-pad] - 0.5 * (rows[: -2 * pad] + rows[2 * pad :])
        seam_row = r0 + pad + int(np.argmin(valley))
    else:
        seam_row = by + bh // 2
    local = np.array([bx + bw / 2.0, float(seam_row), 1.0])
    inv = cv2.invertAffineTransform(rot)
    mx, my = inv @ local
    # Corners are less red than the lip bodies, so the blob is narrower than the mouth.
    return (float(mx + x0), float(my + y0)), float(min(max(1.2 * bw, 0.65 * iod), 1.0 * iod))


def locate_face(image_u8: np.ndarray) -> FaceLayout:
    """Find the largest frontal face in an RGB uint8 image; raise :class:`NoFaceError` if there is none."""
    _check_image(image_u8)
    h, w = image_u8.shape[:2]
    if min(h, w) < MIN_FACE_PX:
        raise _no_face(image_u8, "the image is smaller than the smallest face the detector accepts")
    scale = min(1.0, _DETECT_MAX_SIDE_PX / max(h, w))
    small = cv2.resize(image_u8, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else image_u8
    gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    face = _detect_face(gray, max(24, int(MIN_FACE_PX * scale)))
    if face is None:
        raise _no_face(image_u8, "the face detector found nothing")
    left, right = _detect_eyes(gray, face)
    iod = math.dist(left, right)
    roll = math.atan2(right[1] - left[1], right[0] - left[0])
    mid = ((left[0] + right[0]) / 2.0, (left[1] + right[1]) / 2.0)
    down = (-math.sin(roll), math.cos(roll))
    guess = (mid[0] + _EYE_DOWN_RATIO * iod * down[0], mid[1] + _EYE_DOWN_RATIO * iod * down[1])
    mouth, mouth_w = _refine_mouth(small, gray, guess, iod, roll)
    # A refinement that wandered far from the geometry is more likely a wrong blob than a real mouth.
    if math.dist(mouth, guess) > 0.3 * iod:
        mouth, mouth_w = guess, 0.8 * iod
    x, y, fw, fh = face
    layout = FaceLayout(face_box=(float(x), float(y), float(fw), float(fh)), left_eye=left, right_eye=right, mouth=mouth, mouth_width=mouth_w)
    return layout.transformed(1.0 / scale, 0.0, 0.0) if scale < 1 else layout
