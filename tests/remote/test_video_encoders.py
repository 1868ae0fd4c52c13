"""Choosing the remote link's H.264 encoder: hardware first where it opens, libx264 everywhere, clear errors.

No NVENC/QSV/AMF device exists here, so the preference logic is tested with a probe that says which encoders open
(the only fake: a GPU driver), and the real probe is checked on this machine, where only libx264 opens.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from soulx_live.config import load_config
from soulx_live.doctor import check_remote_encoder
from soulx_live.remote.codec import VideoDecoder, VideoEncoder
from soulx_live.remote.encoders import (
    PREFERENCE,
    EncoderUnavailable,
    choose_encoder,
    encoder_options,
    usable_encoders,
)


def test_the_real_probe_opens_libx264_here_and_no_hardware_encoder() -> None:
    usable = usable_encoders()
    assert "libx264" in usable  # PyAV's wheel bundles it
    assert usable == tuple(name for name in PREFERENCE if name in usable)  # preference order kept
    assert choose_encoder("auto", usable) == usable[0]


def test_auto_prefers_a_hardware_encoder_that_opens() -> None:
    opens = {"h264_qsv", "libx264"}
    usable = usable_encoders(probe=lambda name: name in opens)
    assert usable == ("h264_qsv", "libx264")
    assert choose_encoder("auto", usable) == "h264_qsv"
    assert choose_encoder("libx264", usable) == "libx264"


def test_a_named_encoder_that_does_not_open_names_what_does_and_the_fix() -> None:
    with pytest.raises(EncoderUnavailable, match=r"h264_nvenc cannot open.*usable here: libx264.*video_encoder=auto"):
        choose_encoder("h264_nvenc", ("libx264",))
    with pytest.raises(EncoderUnavailable, match=r"unknown remote.video_encoder 'vp8'"):
        choose_encoder("vp8", ("libx264",))
    with pytest.raises(EncoderUnavailable, match=r"pip install --force-reinstall av"):
        choose_encoder("auto", ())


def test_every_encoder_gets_low_latency_options_with_the_bitrate_cap() -> None:
    for name in PREFERENCE:
        options = encoder_options(name, bitrate=3_000_000, preset="veryfast", gop=1000)
        assert options["maxrate"] == "3000000" and options["bf"] == "0" and options["g"] == "1000"
    assert encoder_options("libx264", bitrate=1, preset="ultrafast", gop=5)["tune"] == "zerolatency"
    assert encoder_options("h264_nvenc", bitrate=1, preset="x", gop=5)["tune"] == "ull"


def test_the_chosen_encoder_round_trips_frames() -> None:
    name = choose_encoder("auto", usable_encoders())
    encoder = VideoEncoder(64, 48, Fraction(25), bitrate=500_000, encoder=name)
    assert encoder.name == name
    y, x = np.mgrid[0:48, 0:64]
    image = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)  # smooth ramps: easy to code well
    frames = np.repeat(image[None], 3, axis=0)
    packets, key = encoder.encode(frames, keyframe=True)
    assert key and len(packets) == 3
    decoded = VideoDecoder().decode(packets, 3, 48, 64)
    mse = float(np.mean((decoded.astype(float) - frames.astype(float)) ** 2))
    assert 10 * np.log10(255.0**2 / max(mse, 1e-9)) > 30.0


def test_doctor_shows_the_choice_and_flags_an_unusable_setting() -> None:
    good = check_remote_encoder("auto")
    assert good.ok is True and "libx264" in good.detail
    bad = check_remote_encoder("h264_nvenc")
    assert bad.ok is False and bad.fix == "set remote.video_encoder=auto"
    assert load_config(env={}).remote.video_encoder == "auto"
