"""A transparent recording: ``sinks.recorder.alpha`` writes a WebM whose VP9 stream carries the person matte,
read back by a real decoder (libvpx's, which decodes the alpha plane)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engine.interface import ChunkSpec, FrameChunk
from plugins.base import SinkError
from plugins.recorder import RecorderSink
from soulx_live.config import SoulxConfig
from soulx_live.render import render

SPEC = ChunkSpec(Fraction(25), 16000, 5, 64, 96)


def decode_rgba(path: Path) -> tuple[list[np.ndarray], str]:
    """Every frame as RGBA and the audio codec's name."""
    frames = []
    with av.open(str(path)) as container:
        audio_codec = container.streams.audio[0].codec_context.name
        decoder = av.CodecContext.create("libvpx-vp9", "r")  # FFmpeg's own vp9 decoder drops the alpha plane
        for packet in container.demux(container.streams.video[0]):
            frames.extend(f.to_ndarray(format="rgba") for f in decoder.decode(packet))
    return frames, audio_codec


def test_the_webm_carries_the_matte_and_hold_frames_keep_it(tmp_path: Path) -> None:
    sink = RecorderSink(tmp_path / "cut.webm", alpha=True)
    sink.open(SPEC)
    for k in range(4):
        frames = np.zeros((5, 64, 96, 3), np.uint8)
        frames[..., 0], frames[..., 1] = 200, 60
        alpha = np.zeros((5, 64, 96), np.uint8)
        alpha[:, :, 48:] = 255
        chunk = FrameChunk("s", k, k * 5, frames, np.zeros(3200, np.float32), k * 3200, alpha=alpha if k != 2 else None)
        sink.write(chunk)
    stats = sink.close()
    assert stats is not None and stats.frames == 20 and abs(stats.audio_duration_s - stats.video_duration_s) < 0.04
    decoded, audio_codec = decode_rgba(tmp_path / "cut.webm")
    assert audio_codec == "opus" and len(decoded) == 20
    for rgba in decoded:  # chunk 2 had no matte: it kept the last one
        assert rgba[32, 10, 3] < 10 and rgba[32, 80, 3] > 245
        assert abs(int(rgba[32, 80, 0]) - 200) < 8 and abs(int(rgba[32, 80, 1]) - 60) < 8


def test_alpha_needs_a_webm_name(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match=r"name it \.webm, not 'out\.mp4'"):
        RecorderSink(tmp_path / "out.mp4", alpha=True)


def test_render_writes_a_transparent_avatar(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "daemon"))
    from live_support import write_tone

    speech = write_tone(tmp_path / "speech.wav", 1.0)
    config = SoulxConfig.model_validate({"engine": {"lite": {"width": 128, "height": 128}},
                                         "sinks": {"recorder": {"alpha": True}}})
    stats = render(speech, None, tmp_path / "avatar.webm", config, progress=False)
    assert stats.frames == 25
    decoded, _ = decode_rgba(tmp_path / "avatar.webm")
    assert len(decoded) == 25
    last = decoded[-1]
    assert last[64, 64, 3] > 240 and last[3, 3, 3] < 15  # the built-in avatar's face solid, its corner cut away
