"""Person segmentation of RGB frames with MediaPipe's selfie-segmentation model, run by OpenCV's DNN module.

OpenCV (already a core dependency) reads the ``.tflite`` file directly, MediaPipe's custom transposed
convolution included, so neither TensorFlow Lite nor MediaPipe's own runtime is needed. The model sees the frame
at 256x256 (RGB in [0, 1]) and answers a person probability per pixel; that low-resolution answer is upsampled
and then fitted to the frame's own edges by a guided filter (He, Sun and Tang, "Guided Image Filtering",
TPAMI 2013), which is what makes hair and shoulder outlines follow the picture instead of a blurred blob.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np

from engine.matting.model import find_model

__all__ = ["PersonSegmenter", "guided_filter", "to_alpha"]

log = logging.getLogger(__name__)

MODEL_SIDE = 256  # the general selfie-segmentation model's square input
GUIDE_EPS = 1e-3  # guided-filter regulariser (guide in [0, 1]): lower follows image edges more closely


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float = GUIDE_EPS) -> np.ndarray:
    """Edge-preserving smoothing of ``src`` (float32 H x W) steered by ``guide`` (float32 grey in [0, 1])."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(src)
    cov_ip = box(guide * src) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def to_alpha(prob: np.ndarray) -> np.ndarray:
    """Person probability (float, any shape) -> uint8 alpha, clipped to [0, 255]."""
    return np.clip(prob * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


def grey(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 -> float32 luminance in [0, 1] (the guide and the motion measure)."""
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1.0 / 255.0)


class PersonSegmenter:
    """Person probability per pixel for RGB uint8 frames. Safe to call from several threads: each thread gets its
    own network (an OpenCV ``Net`` keeps its input and buffers, so one must not be shared between threads)."""

    def __init__(self, model: Path | None = None, *, refine: bool = True) -> None:
        self.model_path = find_model(model)
        self.refine = refine
        self._local = threading.local()
        self._net()  # load now: a broken file fails here, not in the first frame
        log.debug("matte: loaded %s", self.model_path)

    def _net(self) -> cv2.dnn.Net:
        net = getattr(self._local, "net", None)
        if net is None:
            net = self._local.net = cv2.dnn.readNetFromTFLite(str(self.model_path))
        return net

    def raw(self, frame: np.ndarray) -> np.ndarray:
        """The model's answer for one RGB uint8 frame, upsampled to the frame: float32 (H, W) in [0, 1]."""
        h, w = frame.shape[:2]
        blob = cv2.dnn.blobFromImage(frame, 1.0 / 255.0, (MODEL_SIDE, MODEL_SIDE), swapRB=False, crop=False)
        net = self._net()
        net.setInput(blob)
        small = net.forward()[0, 0]
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)

    def fit_edges(self, prob: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """``prob`` fitted to the edges of ``guide`` (the frame's grey); a no-op when ``refine`` is off."""
        if not self.refine:
            return prob
        radius = max(2, round(min(prob.shape) / 64))  # 8 px at 512: about one model pixel, twice
        return np.clip(guided_filter(guide, prob, radius), 0.0, 1.0)

    def matte(self, frame: np.ndarray) -> np.ndarray:
        """The alpha of a still image (a portrait): uint8 (H, W), 255 = person."""
        return to_alpha(self.fit_edges(self.raw(frame), grey(frame)))
