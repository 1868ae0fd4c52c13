"""Shared helpers of the matting tests: the hand-drawn reference masks and flicker/IoU measures."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "data" / "alpha"
PORTRAITS = ("portrait_girl", "portrait_ditto")


def reference(name: str, data_dir: Path, side: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The portrait (RGB uint8) and its hand-drawn person mask (bool), both resized to ``side`` x ``side``."""
    ref = json.loads((REFERENCE_DIR / f"{name}.json").read_text())
    bgr = cv2.imread(str(data_dir / ref["image"]), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {ref['image']}"
    assert list(bgr.shape[1::-1]) == ref["size"], "the polygon was drawn on an image of another size"
    mask = np.zeros(bgr.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.array(ref["polygon"], np.int32)], 1)
    image = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (side, side), interpolation=cv2.INTER_AREA)
    return image, cv2.resize(mask, (side, side), interpolation=cv2.INTER_NEAREST) > 0


def iou(alpha: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of ``alpha >= 128`` and the reference mask."""
    person = alpha >= 128
    return float((person & truth).sum() / max(1, (person | truth).sum()))


def flicker(alphas: np.ndarray) -> float:
    """Mean absolute change of alpha (0-255 scale) between consecutive frames."""
    a = alphas.astype(np.float32)
    return float(np.abs(np.diff(a, axis=0)).mean())


def noisy_stills(image: np.ndarray, n: int, sigma: float, seed: int = 0) -> np.ndarray:
    """``n`` copies of a still image with fresh Gaussian pixel noise each (a camera, a codec, a diffusion model)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, sigma, (n, *image.shape))
    return np.clip(image[None].astype(np.float32) + noise, 0, 255).astype(np.uint8)


def lite_reference(name: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The lite engine's first (still) frame of a portrait with alpha on, its matte, and the hand-drawn mask moved
    by the same crop and scale the engine fitted the portrait with (read back from the face layouts)."""
    from engine.interface import SessionRequest
    from engine.lite.engine import LiteConfig, LiteEngine
    from engine.lite.face_locator import locate_face

    ref = json.loads((REFERENCE_DIR / f"{name}.json").read_text())
    image = cv2.cvtColor(cv2.imread(str(data_dir / ref["image"]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    session = LiteEngine(LiteConfig(idle_motion=False, blinks=False)).start_session(
        SessionRequest("ref", avatar=image, extra={"alpha": True}))
    session.push_audio(np.zeros(16000, np.float32))
    chunk = session.next_chunk()
    (x0, y0, w0, _), (x1, y1, w1, _) = locate_face(image).face_box, session.renderer.layout.face_box
    scale = w1 / w0
    polygon = np.array(ref["polygon"], np.float64) * scale + (x1 - x0 * scale, y1 - y0 * scale)
    h, w = chunk.frames.shape[1:3]
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    assert chunk.alpha is not None
    return chunk.frames[0], chunk.alpha[0], mask > 0


def soft_disc(size: int, radius: float, ramp: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A picture whose true colours are known: a textured orange "person" disc mixed over a blue background by a
    soft matte (``ramp`` px wide). Returns the mixed RGB uint8 frame, its uint8 alpha and the person's float colours."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    a = np.clip((radius - np.hypot(xx - c, yy - c)) / ramp + 0.5, 0, 1)[..., None]
    person = np.empty((size, size, 3), np.float32)
    person[:] = (200, 120, 60)
    person += 20 * np.sin(xx / 17)[..., None]
    behind = np.empty((size, size, 3), np.float32)
    behind[:] = (40, 90, 220)
    behind += 25 * np.cos(yy / 23)[..., None]
    frame = np.clip(a * person + (1 - a) * behind + 0.5, 0, 255).astype(np.uint8)
    return frame, np.clip(a[..., 0] * 255 + 0.5, 0, 255).astype(np.uint8), person
