"""Compression for the link: H.264 video through PyAV's bundled libx264 (zero-latency tuning: one packet out per
frame in, no lookahead, no B-frames) and 16-bit PCM audio.

Keyframes come when asked for (session start, after loss, on barge-in), not on a timer: a still face then costs
almost nothing between them. PyAV is used rather than an ffmpeg subprocess because it hands packets over
in-process per frame (no pipe framing, no extra latency) and its wheel carries libx264.
"""
from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np

from soulx_live.remote.encoders import encoder_options

__all__ = ["CodecError", "VideoDecoder", "VideoEncoder", "float_to_pcm16", "pcm16_to_float"]

log = logging.getLogger(__name__)

GOP_FRAMES = 100_000  # no periodic keyframe: they come on demand


class CodecError(RuntimeError):
    """Bytes the decoder could not turn into the expected frames."""


def float_to_pcm16(pcm: np.ndarray) -> bytes:
    return (np.clip(np.asarray(pcm, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def pcm16_to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0


class VideoEncoder:
    """rgb24 frames -> H.264 packets, one packet per frame (zero-latency); ``encoder`` from
    :mod:`soulx_live.remote.encoders` (libx264 or a hardware encoder that opens here)."""

    def __init__(self, width: int, height: int, fps: Fraction, *, bitrate: int, preset: str = "veryfast",
                 encoder: str = "libx264") -> None:
        import av  # a core dependency (its wheel bundles libx264)

        if width % 2 or height % 2:
            raise ValueError(f"H.264 with 4:2:0 chroma needs even frame sides, got {width}x{height}")
        self._av = av
        self.name = encoder
        ctx = av.CodecContext.create(encoder, "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 1) / Fraction(fps)
        ctx.framerate = Fraction(fps)
        ctx.bit_rate = bitrate
        ctx.options = encoder_options(encoder, bitrate=bitrate, preset=preset, gop=GOP_FRAMES)
        ctx.open()
        self._ctx = ctx
        self._pts = 0
        self.keyframes = 0

    def encode(self, frames: np.ndarray, *, keyframe: bool) -> tuple[list[bytes], bool]:
        """Encode ``(n, H, W, 3)`` uint8; the packets and whether the first one is a keyframe."""
        picture = self._av.video.frame.PictureType
        packets: list[bytes] = []
        first_key = False
        for i, image in enumerate(frames):
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self._pts
            self._pts += 1
            if keyframe and i == 0:
                frame.pict_type = picture.I
            for packet in self._ctx.encode(frame):
                if not packets:
                    first_key = bool(packet.is_keyframe)
                packets.append(bytes(packet))
        self.keyframes += int(first_key)
        return packets, first_key


class VideoDecoder:
    """H.264 packets -> rgb24 frames."""

    def __init__(self) -> None:
        import av  # a core dependency (its wheel bundles libx264)

        self._av = av
        self._ctx = av.CodecContext.create("h264", "r")
        self._ctx.thread_type = "NONE"  # frame threads would hold frames back: one in, one out

    def decode(self, packets: list[bytes], expected: int, height: int, width: int) -> np.ndarray:
        """The ``expected`` frames of these packets as ``(n, H, W, 3)`` uint8; CodecError when they are not there."""
        out = np.empty((expected, height, width, 3), dtype=np.uint8)
        got = 0
        try:
            for data in packets:
                for frame in self._ctx.decode(self._av.Packet(data)):
                    image = frame.to_ndarray(format="rgb24")
                    if image.shape != (height, width, 3) or got >= expected:
                        raise CodecError(f"decoded a {image.shape} frame where {expected} of {height}x{width} were due")
                    out[got] = image
                    got += 1
        except self._av.error.FFmpegError as exc:
            raise CodecError(f"H.264 decoding failed: {exc}") from None
        if got != expected:
            raise CodecError(f"{got} frames decoded, {expected} expected")
        return out

    def reset(self) -> None:
        """Forget the reference frames (after loss: the next keyframe starts afresh)."""
        self._ctx = self._av.CodecContext.create("h264", "r")
        self._ctx.thread_type = "NONE"
