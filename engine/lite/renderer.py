"""Render one frame of a portrait with a given mouth opening, mouth shape, blink and head pose.

A frame is made in two passes, both ``cv2.remap`` with displacement fields that are smooth, so the
picture bends like skin instead of tearing:

1. **Local edits in the portrait's own coordinates**, only inside small regions of interest:
   * mouth: the lower lip and jaw move down and the upper lip a little up, hinged at the mouth
     corners (lens-shaped opening); the shape feature widens (spread) or narrows (round) the lips;
     the opening between the lips is filled with a dark mouth cavity, a hint of upper teeth and, when
     wide, of lower teeth and tongue, with a soft shadow under the lips;
   * eyes: the upper lid slides down over the eye (lid skin stretches, lashes lead), and near full
     closure the lower lid rises to meet it.
2. **Whole-frame motion**: the head (a feathered ellipse around face and hair) turns and shifts about
   the neck, and breathing lifts everything above the bottom edge by a fraction of a pixel.

With opening 0, blink 0 and a neutral pose the output equals the reference image exactly. Regions
are in local face units: ``d`` is the interocular distance and (u, v) run along and across the eye
line, so a tilted head opens its mouth along its own axis. Everything is vectorised numpy/cv2; the
per-frame cost is dominated by the whole-frame remap.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from engine.lite.animator import NEUTRAL_POSE, HeadPose
from engine.lite.face_locator import FaceLayout

_POSE_UNIT_PX = 512.0  # HeadPose offsets are pixels of a 512-pixel frame
_BREATH_LIFT_PX = 0.7  # upward shift of shoulders and head at full inhale (512-pixel frame)

_CAVITY_RGB = np.array([48.0, 16.0, 20.0], dtype=np.float32)
_TEETH_RGB = np.array([214.0, 204.0, 192.0], dtype=np.float32)
_TONGUE_RGB = np.array([150.0, 62.0, 70.0], dtype=np.float32)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _cos2_window(x: np.ndarray, half_width: float) -> np.ndarray:
    """1 at 0, smoothly 0 at |x| >= half_width (compact, so fields vanish at ROI borders)."""
    c = np.cos(np.clip(np.abs(x) / half_width, 0.0, 1.0) * (math.pi / 2.0))
    return c * c


def _roi(cx: float, cy: float, half_u: float, v_top: float, v_bottom: float, roll: float, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Axis-aligned image box holding the rotated local rectangle u in [-half_u, half_u], v in [v_top, v_bottom]."""
    cos, sin = math.cos(roll), math.sin(roll)
    xs, ys = [], []
    for u in (-half_u, half_u):
        for v in (v_top, v_bottom):
            xs.append(cx + u * cos - v * sin)
            ys.append(cy + u * sin + v * cos)
    h, w = shape
    x0, x1 = max(0, int(math.floor(min(xs)))), min(w, int(math.ceil(max(xs))) + 1)
    y0, y1 = max(0, int(math.floor(min(ys)))), min(h, int(math.ceil(max(ys))) + 1)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


class _LocalFrame:
    """Pixel grid of one ROI expressed in face-local (u, v) coordinates around a centre."""

    def __init__(self, rows: slice, cols: slice, cx: float, cy: float, roll: float) -> None:
        self.rows, self.cols = rows, cols
        self.cx, self.cy = cx, cy
        self.cos, self.sin = math.cos(roll), math.sin(roll)
        ys, xs = np.mgrid[rows, cols].astype(np.float32)
        dx, dy = xs - cx, ys - cy
        self.u = dx * self.cos + dy * self.sin
        self.v = -dx * self.sin + dy * self.cos

    @property
    def empty(self) -> bool:
        return self.u.size == 0

    def to_maps(self, su: np.ndarray, sv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image-space remap maps for local source coordinates (su, sv)."""
        mx = self.cx + su * self.cos - sv * self.sin
        my = self.cy + su * self.sin + sv * self.cos
        return mx.astype(np.float32, copy=False), my.astype(np.float32, copy=False)


class _MouthRig:
    """Jaw/lip opening, spread/round shape and the mouth cavity, inside the mouth ROI."""

    def __init__(self, layout: FaceLayout, shape: tuple[int, int]) -> None:
        d = layout.interocular
        self.d = d
        self.half_mouth = 0.5 * layout.mouth_width
        self.gap_max = 0.30 * d
        self.half_u = 1.0 * d
        self.top_v, self.chin_v, self.bottom_v = -0.5 * d, 0.72 * d, 1.2 * d
        # Keep the mouth ROI clear of the eyes even for odd layouts.
        eye_to_mouth = math.dist(layout.mouth, ((layout.left_eye[0] + layout.right_eye[0]) / 2, (layout.left_eye[1] + layout.right_eye[1]) / 2))
        self.top_v = max(self.top_v, -(eye_to_mouth - 0.3 * d))
        rows, cols = _roi(*layout.mouth, self.half_u, self.top_v, self.bottom_v + 0.02 * d, layout.roll_rad, shape)
        self.frame = _LocalFrame(rows, cols, *layout.mouth, layout.roll_rad)
        u, v = self.frame.u, self.frame.v
        self.jaw_u = _cos2_window(u, 0.95 * d)
        self.spread_bump = _cos2_window(u, 0.95 * d) * _cos2_window(v, 0.45 * d)
        self.dirty = False

    def apply(self, work: np.ndarray, ref: np.ndarray, opening: float, shape: float) -> None:
        f = self.frame
        if f.empty:
            return
        if opening <= 0.0 and shape == 0.0:
            if self.dirty:
                work[f.rows, f.cols] = ref[f.rows, f.cols]
                self.dirty = False
            return
        d, u, v = self.d, f.u, f.v
        gap = opening * self.gap_max * (1.0 - 0.15 * shape)
        g_up, g_low = 0.28 * gap, 0.72 * gap
        width_scale = 1.0 + 0.10 * shape
        half_open = 0.92 * self.half_mouth * width_scale
        lens = np.clip(1.0 - (u / half_open) ** 2, 0.0, 1.0)
        lens_up, lens_low = lens**0.45, lens**0.65
        edge_top, edge_bot = -g_up * lens_up, g_low * lens_low

        # Below the opening: lower lip (hinged at the corners) blending into the jaw, fading under the chin.
        vs_low = v - edge_bot
        t = _smoothstep(0.0, 0.22 * d, vs_low)
        lateral = lens_low * (1.0 - t) + self.jaw_u * t
        fade = 1.0 - _smoothstep(self.chin_v, self.bottom_v, vs_low)
        src_low = v - g_low * lateral * fade
        # Above the opening: upper lip lifts, the skin up to the nose takes up the stretch.
        vs_up = v - edge_top
        t_up = _smoothstep(0.0, 0.12 * d, -vs_up)
        lateral_up = lens_up * (1.0 - t_up) + 0.5 * self.jaw_u * t_up
        src_up = v + g_up * lateral_up * _cos2_window(np.minimum(vs_up, 0.0), -self.top_v)
        src_v = np.where(v >= 0.5 * (edge_top + edge_bot), src_low, src_up)
        src_u = u - (width_scale - 1.0) * u * self.spread_bump
        mx, my = f.to_maps(src_u, src_v)
        warped = cv2.remap(ref, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)

        inside = np.minimum(v - edge_top, edge_bot - v)
        alpha = np.clip(inside + 0.5, 0.0, 1.0) * (lens > 0.0)
        if gap > 0.5:
            # Soft shadow of the lips just outside the opening.
            outside = np.maximum(-inside, 0.0)
            shadow = 0.35 * np.exp(-outside / (0.025 * d)) * (lens > 0.0) * min(1.0, gap / (0.08 * d))
            warped *= (1.0 - shadow)[..., None]
            warped = warped * (1.0 - alpha[..., None]) + self._cavity(u, v, edge_top, edge_bot, half_open, gap) * alpha[..., None]
        else:
            warped *= (1.0 - 0.6 * alpha)[..., None]
        work[f.rows, f.cols] = np.clip(warped + 0.5, 0.0, 255.0).astype(np.uint8)
        self.dirty = True

    def _cavity(self, u: np.ndarray, v: np.ndarray, top: np.ndarray, bot: np.ndarray, half_open: float, gap: float) -> np.ndarray:
        d = self.d
        height = np.maximum(bot - top, 1e-3)
        depth = (v - top) / height  # 0 at the upper lip, 1 at the lower lip
        across = np.clip(np.abs(u) / half_open, 0.0, 1.0)
        shade = (0.75 + 0.25 * across)[..., None]
        cav = np.broadcast_to(_CAVITY_RGB, u.shape + (3,)) * shade
        # Upper teeth: a light band right under the upper lip, darker towards the corners.
        teeth_h = min(0.38 * gap, 0.065 * d)
        in_teeth = np.clip((top + teeth_h - v) + 0.5, 0.0, 1.0) * _smoothstep(0.8, 0.55, across)
        teeth_shade = (0.45 + 0.55 * (1.0 - across**2))[..., None] * (0.75 + 0.25 * _smoothstep(0.0, 0.25, depth))[..., None]
        cav = cav + (in_teeth[..., None] * 0.85) * (_TEETH_RGB * teeth_shade - cav)
        if gap > 0.12 * d:
            strength = min(1.0, (gap - 0.12 * d) / (0.08 * d))
            low_h = 0.35 * teeth_h
            in_low = np.clip((v - (bot - low_h)) + 0.5, 0.0, 1.0) * _smoothstep(0.6, 0.4, across) * 0.6 * strength
            tongue = _smoothstep(0.55, 0.85, depth) * _smoothstep(0.7, 0.3, across) * 0.7 * strength
            cav = cav + tongue[..., None] * (_TONGUE_RGB - cav)
            cav = cav + in_low[..., None] * (_TEETH_RGB * 0.8 - cav)
        return cav


class _EyeRig:
    """Blink of one eye: the upper lid slides down, the lower lid rises at the end."""

    def __init__(self, centre: tuple[float, float], layout: FaceLayout, shape: tuple[int, int]) -> None:
        d = layout.interocular
        # Half width / half height of the eye opening, generous so the lid covers lashes and iris of
        # large eyes too (the extra only stretches a little more lid skin).
        self.a, self.b = 0.28 * d, 0.125 * d
        self.top_v, self.bottom_v = -self.b - 0.12 * d, self.b + 0.08 * d
        rows, cols = _roi(*centre, self.a + 0.02 * d, self.top_v, self.bottom_v, layout.roll_rad, shape)
        self.frame = _LocalFrame(rows, cols, *centre, layout.roll_rad)
        arc = np.clip(1.0 - (self.frame.u / self.a) ** 2, 0.0, 1.0) ** 0.6
        self.upper_arc, self.lower_arc = -self.b * arc, self.b * arc
        self.lash_taper = np.sqrt(arc)
        self.lash_width = max(0.6, 0.01 * d)
        self.dirty = False

    def apply(self, work: np.ndarray, ref: np.ndarray, blink: float, lash_rgb: np.ndarray) -> None:
        f = self.frame
        if f.empty:
            return
        if blink <= 0.0:
            if self.dirty:
                work[f.rows, f.cols] = ref[f.rows, f.cols]
                self.dirty = False
            return
        v = f.v
        closed_edge = 0.3 * self.lower_arc
        edge = self.upper_arc + blink * (closed_edge - self.upper_arc)
        # Above the lid edge: stretch [top, upper_arc] of the source onto [top, edge].
        span_src = self.upper_arc - self.top_v
        span_out = np.maximum(edge - self.top_v, 1e-3)
        src_above = self.top_v + (v - self.top_v) * (span_src / span_out)
        # Below it: the eye stays put until the end, then the lower lid rises to the edge.
        squeeze = blink**2
        low_src = edge + squeeze * (self.lower_arc - edge)
        span_low_out = np.maximum(self.bottom_v - edge, 1e-3)
        src_below = self.bottom_v - (self.bottom_v - v) * ((self.bottom_v - low_src) / span_low_out)
        src_v = np.where(v < edge, src_above, src_below)
        src_v = np.where((v < self.top_v) | (v > self.bottom_v), v, src_v)
        mx, my = f.to_maps(f.u, src_v)
        warped = cv2.remap(ref, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        # A soft lash line along the moving lid edge keeps the closing lid readable on any photo.
        lash = np.exp(-(((v - edge) / self.lash_width) ** 2)) * self.lash_taper * (0.5 * min(1.0, 2.0 * blink))
        warped += lash[..., None] * (lash_rgb - warped)
        work[f.rows, f.cols] = np.clip(warped + 0.5, 0.0, 255.0).astype(np.uint8)
        self.dirty = True


class _HeadRig:
    """Whole-frame maps for head sway/nod/roll about the neck and breathing."""

    def __init__(self, layout: FaceLayout, shape: tuple[int, int]) -> None:
        h, w = shape
        self.scale = min(h, w) / _POSE_UNIT_PX
        fx, fy, fw, fh = layout.face_box
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        self.x, self.y = xs, ys
        # Feathered ellipse over face and hair; fades out across the neck and the background.
        cx, cy = fx + fw / 2.0, fy + fh * 0.42
        r = np.sqrt(((xs - cx) / (0.95 * fw)) ** 2 + ((ys - cy) / (1.0 * fh)) ** 2)
        weight = (1.0 - _smoothstep(0.7, 1.35, r)).astype(np.float32)
        self.pivot = (cx, fy + 1.15 * fh)  # the neck, under the chin
        self.w = weight
        self.wx = weight * (xs - self.pivot[0])
        self.wy = weight * (ys - self.pivot[1])
        # Breathing: rows lift in proportion to their height above the bottom edge (shoulders rise).
        self.lift = np.clip((h - ys) / max(1.0, h - (fy + 1.3 * fh)), 0.0, 1.0).astype(np.float32)

    def maps(self, pose: HeadPose) -> tuple[np.ndarray, np.ndarray]:
        s = self.scale
        th = math.radians(pose.roll_deg)
        c, sn = math.cos(th), math.sin(th)
        tx, ty = pose.dx * s, pose.dy * s
        # Backward map of a rotation R about the pivot plus translation t: src = R^-1 (p - pivot - t) + pivot.
        # R^-1 = [[c, sn], [-sn, c]] for a clockwise-on-screen roll.
        a11, a12, a21, a22 = c - 1.0, sn, -sn, c - 1.0
        b1 = -(c * tx + sn * ty)
        b2 = -(-sn * tx + c * ty)
        lift = _BREATH_LIFT_PX * s * pose.breath
        map_x = self.x + a11 * self.wx + a12 * self.wy + b1 * self.w
        map_y = self.y + a21 * self.wx + a22 * self.wy + b2 * self.w + lift * self.lift
        return map_x, map_y


def _lash_colour(ref: np.ndarray, layout: FaceLayout) -> np.ndarray:
    """Colour of the darkest pixels around the eyes (lashes), for the lid line drawn while blinking."""
    patches = []
    for x, y, w, h in layout.eye_boxes():
        p = ref[max(0, y) : y + h, max(0, x) : x + w].reshape(-1, 3)
        if p.size:
            patches.append(p)
    if not patches:
        return np.array([40.0, 30.0, 30.0], dtype=np.float32)
    px = np.concatenate(patches).astype(np.float32)
    lum = px @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    dark = px[lum <= np.percentile(lum, 5)]
    return dark.mean(axis=0)


def fit_portrait(image: np.ndarray, layout: FaceLayout, width: int, height: int) -> tuple[np.ndarray, FaceLayout]:
    """Crop ``image`` around the face to the output aspect (face box about 42% of the width, room for
    hair above and shoulders below) and resize it to ``width`` x ``height``. Returns the frame and its
    layout. A crop larger than the photo shrinks to fit inside it (the face then fills more)."""
    img_h, img_w = image.shape[:2]
    fx, fy, fw, fh = layout.face_box
    crop_w = fw / 0.42
    crop_h = crop_w * height / width
    shrink = min(1.0, img_w / crop_w, img_h / crop_h)
    crop_w, crop_h = crop_w * shrink, crop_h * shrink
    x0 = min(max(fx + fw / 2.0 - crop_w / 2.0, 0.0), img_w - crop_w)
    y0 = min(max(fy + fh / 2.0 - 0.46 * crop_h, 0.0), img_h - crop_h)
    scale = width / crop_w
    # Affine crop+resize in one step (sub-pixel exact; INTER_AREA-like quality via pre-blur when shrinking).
    src = image
    if scale < 0.5:
        k = int(0.5 / scale) * 2 + 1
        src = cv2.GaussianBlur(image, (k, k), 0.35 / scale)
    m = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]], dtype=np.float64)
    frame = cv2.warpAffine(src, m, (width, height), flags=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(frame), layout.transformed(scale, -x0 * scale, -y0 * scale)


class LiteRenderer:
    """Animates one portrait. ``image`` is RGB uint8; it is fitted to ``size`` (width, height) around
    the face when its shape differs, and ``layout`` describes the given image."""

    def __init__(self, image: np.ndarray, layout: FaceLayout, size: tuple[int, int] = (512, 512), *, interpolation: int = cv2.INTER_CUBIC) -> None:
        width, height = size
        if image.shape[:2] != (height, width):
            image, layout = fit_portrait(image, layout, width, height)
        self.reference = np.ascontiguousarray(image, dtype=np.uint8)
        self.reference.setflags(write=False)
        self.layout = layout
        self.size = (width, height)
        self.interpolation = interpolation
        shape = (height, width)
        self._work = self.reference.copy()
        self._mouth = _MouthRig(layout, shape)
        self._eyes = [_EyeRig(c, layout, shape) for c in (layout.left_eye, layout.right_eye)]
        self._head = _HeadRig(layout, shape)
        self._lash_rgb = _lash_colour(self.reference, layout)
        # The person matte of ``reference`` (uint8, 255 = person) when alpha output is on: segmented once per
        # avatar, then moved by the same head warp as the pixels, so it fits every frame without a network.
        self.matte: np.ndarray | None = None

    def mouth_box(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the region the mouth edit may change, in output pixels."""
        rows, cols = self._mouth.frame.rows, self._mouth.frame.cols
        return cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start

    def render(
        self, opening: float = 0.0, shape: float = 0.0, blink: float = 0.0, pose: HeadPose = NEUTRAL_POSE, *, out: np.ndarray | None = None,
        alpha_out: np.ndarray | None = None,
    ) -> np.ndarray:
        """One RGB uint8 frame. ``opening`` in [0, 1], ``shape`` in [-1, 1] (spread > 0 > round),
        ``blink`` in [0, 1]. Writes into ``out`` (H, W, 3) uint8 when given, and the frame's matte into
        ``alpha_out`` (H, W) uint8 when given (needs :attr:`matte`). Mouth and eye edits stay inside the face,
        so only the head warp moves the matte."""
        opening = min(max(float(opening), 0.0), 1.0)
        shape = min(max(float(shape), -1.0), 1.0)
        blink = min(max(float(blink), 0.0), 1.0)
        ref, work = self.reference, self._work
        self._mouth.apply(work, ref, opening, shape)
        for eye in self._eyes:
            eye.apply(work, ref, blink, self._lash_rgb)
        width, height = self.size
        if out is None:
            out = np.empty((height, width, 3), dtype=np.uint8)
        elif out.shape != (height, width, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {(height, width, 3)}, got {out.dtype} {out.shape}")
        if alpha_out is not None and self.matte is None:
            raise ValueError("alpha_out needs the portrait's matte (LiteRenderer.matte)")
        if pose.is_neutral:
            np.copyto(out, work)
            if alpha_out is not None:
                np.copyto(alpha_out, self.matte)
        else:
            map_x, map_y = self._head.maps(pose)
            cv2.remap(work, map_x, map_y, self.interpolation, dst=out, borderMode=cv2.BORDER_REPLICATE)
            if alpha_out is not None:
                cv2.remap(self.matte, map_x, map_y, cv2.INTER_LINEAR, dst=alpha_out, borderMode=cv2.BORDER_REPLICATE)
        return out
