"""What the machine offers for input and output: audio devices (PortAudio) and video devices (V4L2).

Audio needs the optional ``sounddevice`` package; without it the listing says which extra to install
instead of failing. Cameras are read straight from ``/dev/video*`` and ``/sys/class/video4linux``, so
virtual cameras created by v4l2loopback show up with their ``card_label``.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from engine.extras import MissingExtraError, require

__all__ = [
    "AudioDevice",
    "VideoDevice",
    "audio_unavailable_reason",
    "list_audio_devices",
    "list_video_devices",
    "v4l2loopback_loaded",
]

SYS_V4L = Path("/sys/class/video4linux")


@dataclass(frozen=True)
class AudioDevice:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool
    is_default_output: bool


@dataclass(frozen=True)
class VideoDevice:
    path: str  # /dev/videoN
    name: str  # from sysfs; a v4l2loopback device shows its card_label
    is_loopback: bool


def list_audio_devices() -> list[AudioDevice]:
    """Every PortAudio device. Raises :class:`MissingExtraError` without ``soulx-live[audio]``."""
    sd = require("sounddevice", "audio", "listing and capturing audio devices")
    hostapis = [h["name"] for h in sd.query_hostapis()]
    default_in, default_out = _defaults(sd)
    out = []
    for index, dev in enumerate(sd.query_devices()):
        out.append(
            AudioDevice(
                index=index,
                name=str(dev["name"]),
                hostapi=hostapis[dev["hostapi"]] if dev["hostapi"] < len(hostapis) else "?",
                max_input_channels=int(dev["max_input_channels"]),
                max_output_channels=int(dev["max_output_channels"]),
                default_samplerate=float(dev["default_samplerate"]),
                is_default_input=index == default_in,
                is_default_output=index == default_out,
            )
        )
    return out


def _defaults(sd: object) -> tuple[int, int]:
    try:
        pair = sd.default.device  # type: ignore[attr-defined]
        return int(pair[0]), int(pair[1])
    except (TypeError, ValueError, IndexError):
        return -1, -1


def list_video_devices(dev_glob: str = "/dev/video*", sys_root: Path = SYS_V4L) -> list[VideoDevice]:
    """``/dev/video*`` nodes with their driver names, sorted by number."""
    devices = []
    for path in sorted(glob.glob(dev_glob), key=_video_number):
        node = os.path.basename(path)
        name = _read(sys_root / node / "name") or "(unknown)"
        devices.append(VideoDevice(path, name, is_loopback=_is_loopback(sys_root / node, name)))
    return devices


def _is_loopback(sys_node: Path, name: str) -> bool:
    # v4l2loopback nodes hang off a virtual or "v4l2loopback.N" platform device and, without a
    # card_label, are called "Dummy video device (0x0000)".
    where = os.path.realpath(sys_node)
    return "v4l2loopback" in where or "/virtual/" in where or "loopback" in name.lower() or name.startswith("Dummy video device")


def v4l2loopback_loaded(sys_module: Path = Path("/sys/module/v4l2loopback"), proc_modules: Path = Path("/proc/modules")) -> bool:
    """True when the v4l2loopback kernel module is loaded (sysfs first, then ``/proc/modules``, as lsmod does)."""
    if sys_module.exists():
        return True
    text = _read(proc_modules)
    return any(line.split(" ", 1)[0] == "v4l2loopback" for line in text.splitlines())


def _video_number(path: str) -> int:
    digits = "".join(ch for ch in os.path.basename(path) if ch.isdigit())
    return int(digits) if digits else 1 << 30


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def audio_unavailable_reason() -> str | None:
    """None when audio devices can be listed, else the one-line reason with its fix."""
    try:
        require("sounddevice", "audio", "listing and capturing audio devices")
    except MissingExtraError as exc:
        return str(exc)
    return None
