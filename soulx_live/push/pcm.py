"""Pushed PCM bytes -> float32 mono at the engine rate, with errors that say what to send instead.

Formats: ``s16le`` and ``f32le`` interleaved, 1-2 channels, any rate in [MIN_RATE, MAX_RATE]; or a WAV
body (PCM 16-bit or IEEE float 32-bit). Stereo is averaged to mono; the rate is converted with
libswresample (the same PyAV resampler as the microphone source), flushed at the end of the packet.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from soulx_live.audio.resample import resample

__all__ = ["FORMATS", "MAX_RATE", "MIN_RATE", "PcmError", "PcmSpec", "byte_cap", "decode_pcm", "parse_wav"]

FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
MIN_RATE = 4000
MAX_RATE = 192000
MAX_CHANNELS = 2


class PcmError(ValueError):
    """Bad pushed audio; ``code`` is ``bad_audio`` or ``too_large``."""

    def __init__(self, message: str, code: str = "bad_audio") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PcmSpec:
    format: str
    sample_rate: int
    channels: int


def byte_cap(max_packet_s: float) -> int:
    """Largest body read at all: ``max_packet_s`` of f32 stereo at MAX_RATE plus 64 KiB of headers."""
    return int(max_packet_s * MAX_RATE * MAX_CHANNELS * 4) + 65536


def check_spec(spec: PcmSpec) -> np.dtype:
    dtype = FORMATS.get(spec.format)
    if dtype is None:
        raise PcmError(f"unknown sample format {spec.format!r}; send one of {', '.join(FORMATS)} (or a WAV file)")
    if not MIN_RATE <= spec.sample_rate <= MAX_RATE:
        raise PcmError(f"sample rate {spec.sample_rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz; send the rate "
                       "your audio really has (it is resampled to the engine rate)")
    if spec.channels not in (1, 2):
        raise PcmError(f"{spec.channels} channels: send mono or stereo (1 or 2)")
    return dtype


def decode_pcm(data: bytes | memoryview, spec: PcmSpec, *, out_rate: int, max_packet_s: float) -> np.ndarray:
    """Validate and convert one packet; raises :class:`PcmError` naming the problem."""
    dtype = check_spec(spec)
    frame_bytes = dtype.itemsize * spec.channels
    if len(data) == 0:
        raise PcmError("the audio packet is empty")
    if len(data) % frame_bytes:
        raise PcmError(f"{len(data)} bytes is not a whole number of {spec.format} frames of {spec.channels} channel(s) "
                       f"({frame_bytes} bytes each): check format and channels")
    n = len(data) // frame_bytes
    if n / spec.sample_rate > max_packet_s:
        raise PcmError(f"the packet is {n / spec.sample_rate:.1f} s long; at most push.max_packet_s={max_packet_s:g} s "
                       "per push (split it)", code="too_large")
    samples = np.frombuffer(data, dtype=dtype).reshape(n, spec.channels)
    if dtype.kind == "f":
        if not np.all(np.isfinite(samples)):
            raise PcmError("the packet has NaN or infinite samples")
        mono = samples.astype(np.float32).mean(axis=1, dtype=np.float32)
    else:
        mono = (samples.astype(np.float32) / 32768.0).mean(axis=1, dtype=np.float32)
    return resample(np.ascontiguousarray(mono, dtype=np.float32), spec.sample_rate, out_rate)


def parse_wav(data: bytes | memoryview) -> tuple[PcmSpec, memoryview]:
    """``(spec, sample bytes)`` of a RIFF/WAVE body: PCM 16-bit or IEEE float 32-bit, 1-2 channels."""
    buf = memoryview(data)
    if len(buf) < 12 or bytes(buf[0:4]) != b"RIFF" or bytes(buf[8:12]) != b"WAVE":
        raise PcmError("not a WAV file (no RIFF/WAVE header); send WAV, or raw PCM with ?format=&rate=&channels=")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(buf):
        cid = bytes(buf[pos:pos + 4])
        size = struct.unpack_from("<I", buf, pos + 4)[0]
        body = buf[pos + 8:pos + 8 + size]
        if cid == b"fmt " and size >= 16:
            fmt = struct.unpack_from("<HHIIHH", body, 0)
            if fmt[0] == 0xFFFE and size >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's first 2 bytes
                fmt = (struct.unpack_from("<H", body, 24)[0], *fmt[1:])
        elif cid == b"data":
            payload = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise PcmError("the WAV file has no 'fmt ' or 'data' chunk")
    tag, channels, rate, _, _, bits = fmt
    if tag == 1 and bits == 16:
        name = "s16le"
    elif tag == 3 and bits == 32:
        name = "f32le"
    else:
        raise PcmError(f"WAV encoding (format tag {tag}, {bits} bits) is not supported; send 16-bit PCM or 32-bit float")
    frame = 2 if name == "s16le" else 4
    usable = len(payload) - len(payload) % (frame * max(channels, 1))  # a truncated last frame is dropped
    return PcmSpec(name, int(rate), int(channels)), payload[:usable]
