"""Which H.264 encoder the remote link uses: a hardware one when this machine can open it, else libx264.

PyAV's wheel carries FFmpeg with NVENC (NVIDIA), QSV (Intel) and AMF (AMD) wrappers; each opens only where its
driver and device are present, so the choice is made by trying to open each one on a tiny frame (about a
millisecond each), once per process. A hardware encoder frees the CPU cores of a GPU server that already runs the
engine's host side; libx264 is everywhere and is the reference for the quality figures. ``remote.video_encoder``
picks one by name, or ``auto`` (the default) takes the first that opens in :data:`PREFERENCE` order.
``soulx-live doctor`` shows the same choice.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from fractions import Fraction

__all__ = ["PREFERENCE", "EncoderUnavailable", "choose_encoder", "encoder_options", "usable_encoders"]

log = logging.getLogger(__name__)

# Hardware first (they cost the host no CPU), libx264 last (always there: PyAV's wheel bundles it).
PREFERENCE: tuple[str, ...] = ("h264_nvenc", "h264_qsv", "h264_amf", "libx264")
PROBE_SIDE = 64  # a frame size every encoder accepts


class EncoderUnavailable(RuntimeError):
    """The configured encoder cannot be opened here."""


def encoder_options(name: str, *, bitrate: int, preset: str, gop: int) -> dict[str, str]:
    """Low-latency settings for ``name``: one packet out per frame in, no B-frames or look-ahead, keyframes only on
    demand (``gop`` frames apart at most), the bit rate capped at ``bitrate`` over about one second."""
    rate = {"maxrate": str(bitrate), "bufsize": str(bitrate), "g": str(gop), "bf": "0"}
    if name == "libx264":
        return {**rate, "tune": "zerolatency", "preset": preset, "keyint_min": str(gop), "sc_threshold": "0",
                "forced-idr": "1", "rc-lookahead": "0"}
    if name == "h264_nvenc":  # p1 = fastest preset, ull = ultra-low-latency tuning, no frame delay
        return {**rate, "preset": "p1", "tune": "ull", "zerolatency": "1", "delay": "0", "rc": "cbr",
                "forced-idr": "1", "rc-lookahead": "0"}
    if name == "h264_qsv":
        return {**rate, "preset": "veryfast", "async_depth": "1", "look_ahead": "0", "forced_idr": "1"}
    if name == "h264_amf":
        return {**rate, "usage": "ultralowlatency", "quality": "speed", "rc": "cbr"}
    raise EncoderUnavailable(f"unknown H.264 encoder {name!r}; use one of: auto, {', '.join(PREFERENCE)}")


def _opens(name: str) -> bool:
    """Whether FFmpeg can open ``name`` here (driver and device present)."""
    import av  # a core dependency

    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width = ctx.height = PROBE_SIDE
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
    except Exception as exc:  # noqa: BLE001 - PyAV raises a different error type per missing driver
        log.debug("H.264 encoder %s cannot open here: %s", name, exc)
        return False
    return True


@functools.lru_cache(maxsize=1)
def _usable_here() -> tuple[str, ...]:
    return tuple(name for name in PREFERENCE if _opens(name))


def usable_encoders(probe: Callable[[str], bool] | None = None) -> tuple[str, ...]:
    """The encoders of :data:`PREFERENCE` that open on this machine, in preference order (cached per process)."""
    if probe is None:
        return _usable_here()
    return tuple(name for name in PREFERENCE if probe(name))


def choose_encoder(wanted: str, usable: Sequence[str]) -> str:
    """``wanted`` (``auto`` or an encoder name) resolved against the ``usable`` ones; a clear error otherwise."""
    if wanted != "auto" and wanted not in PREFERENCE:
        raise EncoderUnavailable(f"unknown remote.video_encoder {wanted!r}; use one of: auto, {', '.join(PREFERENCE)}")
    if wanted == "auto":
        if not usable:
            raise EncoderUnavailable("no H.264 encoder opens here; reinstall PyAV's wheel, which bundles libx264 "
                                     "(pip install --force-reinstall av)")
        return usable[0]
    if wanted not in usable:
        raise EncoderUnavailable(f"remote.video_encoder={wanted} cannot open on this machine (its driver or device "
                                 f"is missing); usable here: {', '.join(usable) or 'none'}; or set "
                                 "remote.video_encoder=auto")
    return wanted
