"""The person segmenter, its temporal smoothing and the model lookup: real model, real portraits."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from matte_support import PORTRAITS, flicker, iou, lite_reference, noisy_stills, reference

from engine.lite.default_avatar import draw_default_avatar
from engine.matting import model as matte_model
from engine.matting.model import MatteModelMissing, find_model
from engine.matting.segmenter import PersonSegmenter, grey, to_alpha
from engine.matting.stage import AlphaSession
from engine.matting.temporal import TemporalMatte


@pytest.fixture(scope="module")
def segmenter() -> PersonSegmenter:
    return PersonSegmenter()


@pytest.mark.parametrize("name", PORTRAITS)
def test_matte_matches_the_hand_drawn_mask(shared_data: Path, segmenter: PersonSegmenter, name: str) -> None:
    image, truth = reference(name, shared_data)
    alpha = segmenter.matte(image)
    assert alpha.shape == truth.shape and alpha.dtype == np.uint8
    assert iou(alpha, truth) >= 0.9
    # and not by accident: the background is cut (the mask is not everything) and the person kept
    assert 0.25 < (alpha >= 128).mean() < 0.85


def test_the_built_in_avatar_is_cut_out(segmenter: PersonSegmenter) -> None:
    image = draw_default_avatar(512)
    alpha = segmenter.matte(image)
    assert alpha[256, 256] > 240  # the face
    assert alpha[20, 20] < 15 and alpha[20, 490] < 15  # the corners are background


def test_temporal_smoothing_removes_flicker_and_follows_motion(segmenter: PersonSegmenter) -> None:
    image = draw_default_avatar(512)
    stills = noisy_stills(image, 12, sigma=6.0)
    raw = np.stack([to_alpha(segmenter.fit_edges(segmenter.raw(f), grey(f))) for f in stills])
    smoothed = AlphaSession.__new__(AlphaSession)  # the stage's own loop, without an engine
    AlphaSession.__init__(smoothed, inner=_NoSession(), segmenter=lambda: segmenter)
    kept = smoothed.segment(stills)
    assert flicker(kept[4:]) < 0.5 * flicker(raw[4:])
    # a head that moves 24 px: the smoothed matte follows within a frame (no ghost left behind)
    moved = np.roll(image, 24, axis=1)
    after = smoothed.segment(moved[None])[0]
    fresh = segmenter.matte(moved)
    assert np.abs(after.astype(int) - fresh.astype(int)).mean() < 3.0


def test_temporal_matte_validates_and_resets() -> None:
    with pytest.raises(ValueError, match="rest_weight"):
        TemporalMatte(rest_weight=0.0)
    t = TemporalMatte(rest_weight=0.5)
    g = np.zeros((4, 4), np.float32)
    assert t.update(np.ones((4, 4), np.float32), g).mean() == 1.0
    assert t.update(np.zeros((4, 4), np.float32), g).mean() == 0.5  # still: half way
    t.reset()
    assert t.update(np.zeros((4, 4), np.float32), g).mean() == 0.0


def test_missing_model_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(matte_model.ENV_OVERRIDE, raising=False)

    def nothing(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(matte_model.metadata, "distribution", nothing)
    with pytest.raises(MatteModelMissing, match='pip install --no-deps "mediapipe==0.10.21"'):
        find_model()
    monkeypatch.setenv(matte_model.ENV_OVERRIDE, str(tmp_path / "nope.tflite"))
    with pytest.raises(MatteModelMissing, match="does not exist"):
        find_model()


def test_the_model_comes_from_the_installed_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(matte_model.ENV_OVERRIDE, raising=False)
    path = find_model()
    assert path.name == "selfie_segmentation.tflite" and "site-packages" in str(path)
    assert path.stat().st_size == 249_505  # the file the mediapipe 0.10.21 wheel ships


class _NoSession:
    session_id = "none"


def test_parallel_segmentation_gives_the_same_mattes(segmenter: PersonSegmenter) -> None:
    frames = noisy_stills(draw_default_avatar(256), 6, sigma=4.0)
    one = AlphaSession(_NoSession(), lambda: segmenter, 1)  # type: ignore[arg-type]
    two = AlphaSession(_NoSession(), lambda: segmenter, 3)  # type: ignore[arg-type]
    try:
        assert np.array_equal(one.segment(frames), two.segment(frames))
    finally:
        two.close()


@pytest.mark.parametrize("name", PORTRAITS)
def test_the_lite_engines_matte_matches_the_hand_drawn_mask(shared_data: Path, name: str) -> None:
    """The lite path (portrait fitted to the output, segmented once): its frames' alpha against the drawn mask."""
    frame, alpha, truth = lite_reference(name, shared_data)
    assert iou(alpha, truth) >= 0.9
