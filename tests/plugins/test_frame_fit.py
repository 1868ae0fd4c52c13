"""Letterbox and crop geometry of plugins.frame_fit on frames whose pixels encode their position."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from plugins.frame_fit import FrameFitter, fit_geometry


def _solid(h: int, w: int, rgb: tuple[int, int, int]) -> np.ndarray:
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = rgb
    return frame


def test_letterbox_square_into_720p_pads_left_and_right_centred() -> None:
    geo = fit_geometry((512, 512), (720, 1280), "letterbox")
    assert geo.size == (720, 720) and geo.offset == (0, 280) and geo.crop == (0, 512, 0, 512)
    assert geo.interpolation == cv2.INTER_LINEAR  # upscaling
    out = FrameFitter(1280, 720, "letterbox", pad_rgb=(10, 20, 30)).fit(_solid(512, 512, (200, 100, 50)))
    assert out.shape == (720, 1280, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out[:, :280] == (10, 20, 30)).all() and (out[:, 1000:] == (10, 20, 30)).all()
    assert (out[:, 280:1000] == (200, 100, 50)).all()


def test_letterbox_wide_into_720p_pads_top_and_bottom_and_downscales_with_area() -> None:
    geo = fit_geometry((400, 1600), (720, 1280), "letterbox")
    assert geo.size == (320, 1280) and geo.offset == (200, 0)
    assert geo.interpolation == cv2.INTER_AREA


def test_crop_square_into_720p_keeps_the_centre_rows() -> None:
    geo = fit_geometry((512, 512), (720, 1280), "crop")
    assert geo.crop == (112, 400, 0, 512) and geo.size == (720, 1280) and geo.offset == (0, 0)
    # Rows encode their source y: the output's first/last rows come from the crop's edges.
    src = np.repeat(np.arange(512, dtype=np.uint16)[:, None] // 2, 512, axis=1).astype(np.uint8)
    out = FrameFitter(1280, 720, "crop").fit(np.stack([src] * 3, axis=-1))
    assert out.shape == (720, 1280, 3)
    assert abs(int(out[0, 640, 0]) - 112 // 2) <= 1 and abs(int(out[-1, 640, 0]) - 399 // 2) <= 1
    assert abs(int(out[360, 640, 0]) - 256 // 2) <= 1


def test_same_size_is_a_copy_not_a_view() -> None:
    frame = _solid(72, 128, (1, 2, 3))
    out = FrameFitter(128, 72, "crop").fit(frame)
    assert np.array_equal(out, frame) and not np.shares_memory(out, frame)


def test_geometry_is_cached_per_input_size() -> None:
    fitter = FrameFitter(320, 180)
    assert fitter.geometry((64, 64)) is fitter.geometry((64, 64))
    assert fitter.geometry((64, 64)) is not fitter.geometry((64, 32))


@pytest.mark.parametrize("mode", ["letterbox", "crop"])
def test_tiny_and_odd_sizes_fit_exactly(mode: str) -> None:
    for h, w in [(1, 1), (7, 3), (33, 1000), (999, 17)]:
        out = FrameFitter(161, 91, mode).fit(_solid(h, w, (9, 9, 9)))  # type: ignore[arg-type]
        assert out.shape == (91, 161, 3)


def test_bad_input_is_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="fit mode"):
        FrameFitter(10, 10, "stretch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8 RGB"):
        FrameFitter(10, 10).fit(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="pad colour"):
        FrameFitter(10, 10, pad_rgb=(0, 0, 300))
