"""Pushed PCM conversion: formats, channels, any rate -> 16 kHz mono, WAV bodies, and every bad input."""
from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from push_testkit import tone

from soulx_live.push.pcm import PcmError, PcmSpec, byte_cap, decode_pcm, parse_wav


def _decode(data: bytes, fmt: str = "s16le", rate: int = 16000, ch: int = 1, max_s: float = 30.0) -> np.ndarray:
    return decode_pcm(data, PcmSpec(fmt, rate, ch), out_rate=16000, max_packet_s=max_s)


def _s16(x: np.ndarray) -> bytes:
    return (x * 32767).astype("<i2").tobytes()


@pytest.mark.parametrize("rate", [8000, 22050, 24000, 44100, 48000])
def test_any_rate_resamples_to_16k_keeping_length_and_pitch(rate: int) -> None:
    out = _decode(_s16(tone(rate, 1.0, freq=440.0)), rate=rate)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.shape[0] - 16000) <= 2  # the resampler is flushed: no tail held back
    spectrum = np.abs(np.fft.rfft(out[:16000] if out.shape[0] >= 16000 else out))
    peak_hz = np.argmax(spectrum) * 16000 / (2 * (spectrum.shape[0] - 1))
    assert abs(peak_hz - 440.0) < 3.0
    assert 0.45 < np.max(np.abs(out[2000:-2000])) < 0.55


def test_f32_stereo_is_averaged_to_mono() -> None:
    left = tone(16000, 0.1)
    stereo = np.stack([left, np.zeros_like(left)], axis=1).astype("<f4")
    out = _decode(stereo.tobytes(), fmt="f32le", ch=2)
    np.testing.assert_allclose(out, left / 2, atol=1e-6)


@pytest.mark.parametrize(("data", "spec", "message"), [
    (b"\x00\x00" * 10, PcmSpec("u8", 16000, 1), "unknown sample format"),
    (b"\x00\x00" * 10, PcmSpec("s16le", 16000, 3), "mono or stereo"),
    (b"\x00\x00" * 10, PcmSpec("s16le", 1000, 1), "outside"),
    (b"", PcmSpec("s16le", 16000, 1), "empty"),
    (b"\x00" * 3, PcmSpec("s16le", 16000, 1), "whole number"),
    (b"\x00" * 6, PcmSpec("f32le", 16000, 2), "whole number"),
    (np.array([0.1, np.nan], "<f4").tobytes(), PcmSpec("f32le", 16000, 1), "NaN"),
    (np.array([np.inf, 0.0], "<f4").tobytes(), PcmSpec("f32le", 16000, 1), "NaN or infinite"),
])
def test_bad_packets_name_the_problem(data: bytes, spec: PcmSpec, message: str) -> None:
    with pytest.raises(PcmError, match=message) as info:
        decode_pcm(data, spec, out_rate=16000, max_packet_s=30.0)
    assert info.value.code == "bad_audio"


def test_too_long_packet_is_too_large() -> None:
    with pytest.raises(PcmError, match="max_packet_s=1 s") as info:
        _decode(b"\x00\x00" * 16001, max_s=1.0)
    assert info.value.code == "too_large"
    assert _decode(b"\x00\x00" * 16000, max_s=1.0).shape == (16000,)


def test_byte_cap_covers_the_longest_valid_packet() -> None:
    assert byte_cap(1.0) >= 192000 * 2 * 4


def _wav(x: np.ndarray, rate: int, ch: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(ch)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(_s16(x))
    return buf.getvalue()


def test_wav_body_gives_its_format() -> None:
    spec, data = parse_wav(_wav(tone(22050, 0.5, channels=2), 22050, 2))
    assert spec == PcmSpec("s16le", 22050, 2)
    assert len(data) == 22050 // 2 * 4


def test_float_wav_is_read() -> None:
    import struct

    samples = tone(8000, 0.1).astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(samples)) + samples
    spec, data = parse_wav(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert spec == PcmSpec("f32le", 8000, 1) and bytes(data) == samples


@pytest.mark.parametrize(("body", "message"), [
    (b"hello world, not audio", "not a WAV"),
    (b"RIFF\x04\x00\x00\x00WAVE", "no 'fmt ' or 'data'"),
])
def test_bad_wav(body: bytes, message: str) -> None:
    with pytest.raises(PcmError, match=message):
        parse_wav(body)


def test_unsupported_wav_encoding() -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)  # 8-bit
        w.setframerate(8000)
        w.writeframes(b"\x80" * 100)
    with pytest.raises(PcmError, match="16-bit PCM or 32-bit float"):
        parse_wav(buf.getvalue())
