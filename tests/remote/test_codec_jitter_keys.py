"""The link's H.264 codec on a real still face (quality and bitrate), the jitter buffer, the key files."""
from __future__ import annotations

import os
import stat
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from soulx_live.errors import DaemonError
from soulx_live.remote.codec import (
    VideoDecoder,
    VideoEncoder,
    float_to_pcm16,
    pcm16_to_float,
)
from soulx_live.remote.jitter import JitterBuffer
from soulx_live.remote.keys import (
    add_allowed_key,
    allowed_keys,
    create_key_pair,
    load_key_pair,
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def still_face(width: int = 448, height: int = 768, frames: int = 5) -> np.ndarray:
    """The lite engine's idle output (no blinks, no idle motion): a still face, as the benchmark's goal says."""
    from engine.interface import SessionRequest
    from engine.lite.engine import LiteConfig, LiteEngine

    engine = LiteEngine(LiteConfig(width=width, height=height, frames_per_chunk=frames, blinks=False, idle_motion=False))
    session = engine.start_session(SessionRequest(session_id="t"))
    session.push_audio(np.zeros(engine.spec.samples_per_chunk, dtype=np.float32))
    return session.next_chunk().frames


def test_still_face_keeps_quality_within_the_bitrate() -> None:
    face = still_face()
    encoder = VideoEncoder(448, 768, Fraction(25), bitrate=3_000_000)
    decoder = VideoDecoder()
    total, scores = 0, []
    for i in range(10):  # 2 s at 25 fps
        packets, key = encoder.encode(face, keyframe=i == 0)
        assert key == (i == 0)  # keyframes only when asked for
        assert len(packets) == len(face)  # zero latency: a packet per frame, at once
        total += sum(map(len, packets))
        decoded = decoder.decode(packets, len(face), 768, 448)
        scores += [psnr(d, f) for d, f in zip(decoded, face)]
    mbit_s = total * 8 / 2.0 / 1e6
    assert mbit_s <= 4.0, f"{mbit_s:.2f} Mbit/s"
    assert min(scores) >= 35.0, f"PSNR {min(scores):.1f} dB"


def test_keyframe_on_request_lets_a_fresh_decoder_start() -> None:
    face = still_face(96, 96)
    encoder = VideoEncoder(96, 96, Fraction(25), bitrate=500_000)
    encoder.encode(face, keyframe=True)
    packets, _ = encoder.encode(face, keyframe=False)
    from soulx_live.remote.codec import CodecError

    with pytest.raises(CodecError):  # a P-frame without its reference: no picture
        VideoDecoder().decode(packets, len(face), 96, 96)
    packets, key = encoder.encode(face, keyframe=True)
    assert key
    assert psnr(VideoDecoder().decode(packets, len(face), 96, 96)[-1], face[-1]) > 30


def test_pcm16_round_trip() -> None:
    pcm = np.sin(np.linspace(0, 60, 1600)).astype(np.float32) * 0.8
    back = pcm16_to_float(float_to_pcm16(pcm))
    assert np.max(np.abs(back - pcm)) < 1e-4


def test_jitter_buffer_delays_by_measured_jitter_and_drops_late_chunks() -> None:
    jb = JitterBuffer(max_delay_s=0.3, chunk_s=0.2)
    rng = np.random.default_rng(0)
    for k in range(50):  # up to 20 ms of jitter around a 50 ms path, and one 200 ms stall (a retransmission)
        stall = 0.2 if k == 30 else 0.0
        assert jb.push(k, k * 0.2, 100 + k * 0.2 + 0.05 + rng.uniform(0, 0.02) + stall, 5)
        jb.pop_due(float("inf"))
    assert 0.002 < jb.stats.jitter_s < 0.03
    assert 0.014 < jb.stats.target_s < 0.021  # the 90th percentile of the spread: the stall is not in it
    due = None
    jb.push("on time", 50 * 0.2, 100 + 50 * 0.2 + 0.05, 5)
    due = jb.next_due()
    assert due is not None and due >= 100 + 50 * 0.2 + 0.05  # waits out the jitter
    assert not jb.push("late", 51 * 0.2, 100 + 51 * 0.2 + 0.05 + 1.0, 5)  # a second late: dropped, not queued
    assert jb.stats.late_dropped == 1 and jb.stats.late_frames == 5
    assert jb.push("next", 52 * 0.2, 100 + 52 * 0.2 + 0.05 + 1.0, 5)  # re-anchored: the next one plays


def test_key_files_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    pair = create_key_pair(folder, "client")
    for name in ("client.key", "client.key_secret"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert pair.secret is not None and pair.secret.decode() not in repr(pair)
    with pytest.raises(DaemonError, match="already exists"):
        create_key_pair(folder, "client")
    os.chmod(folder / "client.key_secret", 0o644)
    with pytest.raises(DaemonError, match="chmod 600"):
        load_key_pair(folder / "client.key_secret")
    path = add_allowed_key(tmp_path / "allowed", pair.public, "laptop")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert allowed_keys(tmp_path / "allowed") == {pair.public}
    with pytest.raises(DaemonError, match="Z85"):
        add_allowed_key(tmp_path / "allowed", b"not-a-key", "bad")
    with pytest.raises(DaemonError, match="key name"):
        add_allowed_key(tmp_path / "allowed", pair.public, "../escape")
