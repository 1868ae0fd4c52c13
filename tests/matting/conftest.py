"""Every test here needs the person-segmentation model that ``make install`` adds (the mediapipe 0.10.21 wheel,
--no-deps). Without it they skip, naming the install command; in CI (``CI`` set) that is a failure instead."""
from __future__ import annotations

import os

import pytest

from engine.matting.model import MatteModelMissing, find_model


@pytest.fixture(autouse=True, scope="module")  # before the modules' own model fixtures
def _matte_model() -> None:
    try:
        find_model()
    except MatteModelMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI is set)")
        pytest.skip(str(exc))
