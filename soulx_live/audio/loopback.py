"""Find the "system audio" (what the speakers play) as a capture device.

**Linux (PulseAudio, or PipeWire through its pulse shim ``pipewire-pulse``)** — every sink has a
``<sink>.monitor`` source carrying what is played into it. :func:`find_monitor_source` asks
``pactl`` for the default sink (``pactl get-default-sink``; older servers: ``pactl info``), or
takes the sink/source name you give, checks it against ``pactl list short sources`` and returns a
:class:`LoopbackTarget`: PortAudio device ``"pulse"`` (ALSA's pulse plugin, from
``libasound2-plugins``) plus ``PULSE_SOURCE=<sink>.monitor`` in the environment, which the pulse
plugin reads when the stream is opened. This is the combination verified in
``research/integration.md`` §3 (normalized cross-correlation 0.997–0.999 with a null sink).
Packages: ``apt-get install libportaudio2 pulseaudio-utils libasound2-plugins``.

**Windows** — system audio is WASAPI loopback on the render endpoint. PortAudio gained
``[Loopback]`` devices in PR #672 (2022), but the DLL bundled by stock ``sounddevice`` may not have
them yet (python-sounddevice issue #510). If ``soulx-live devices`` lists an input named
``... [Loopback]``, set ``audio.source = "mic"`` and ``audio.device = "<that name>"``. Otherwise
install a virtual cable (VB-CABLE): make "CABLE Input" the default playback device (or the output
of the one app to capture) and set ``audio.device = "CABLE Output"``.

**macOS** — there is no loopback API for a PortAudio client. Install BlackHole
(``brew install blackhole-2ch``), create a *Multi-Output Device* in Audio MIDI Setup containing
your speakers and "BlackHole 2ch", select it as the system output, then set
``audio.source = "mic"`` and ``audio.device = "BlackHole 2ch"``.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

__all__ = ["LoopbackError", "LoopbackTarget", "find_monitor_source"]

log = logging.getLogger(__name__)

_PACTL_TIMEOUT_S = 5.0


class LoopbackError(RuntimeError):
    """System audio cannot be captured here; the message says what to do."""


@dataclass(frozen=True)
class LoopbackTarget:
    """A PortAudio device plus the environment that points it at the monitor source."""

    device: str | int
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""


def find_monitor_source(name: str | None = None) -> LoopbackTarget:
    """The monitor source of sink ``name`` (a sink or ``.monitor`` source name; ``None``: the default sink)."""
    if sys.platform == "win32":
        raise LoopbackError(
            'system-audio loopback on Windows: set audio.source="mic" and audio.device to the '
            '"[Loopback]" input (or "CABLE Output" of VB-CABLE) shown by `soulx-live devices`'
        )
    if sys.platform == "darwin":
        raise LoopbackError(
            'system-audio loopback on macOS needs BlackHole: install it, route output through a '
            'Multi-Output Device, then set audio.source="mic" and audio.device="BlackHole 2ch"'
        )
    if shutil.which("pactl") is None:
        raise LoopbackError(
            "system-audio loopback needs PulseAudio or PipeWire (pipewire-pulse) and `pactl`; "
            "install it with: apt-get install pulseaudio-utils"
        )
    sources = _list_sources()
    source = _monitor_name(name if name else _default_sink())
    if source not in sources:
        monitors = ", ".join(s for s in sources if s.endswith(".monitor")) or "none"
        raise LoopbackError(f"no PulseAudio source {source!r}; monitor sources available: {monitors}")
    log.info("system audio: capturing PulseAudio source %s", source)
    return LoopbackTarget(device="pulse", env={"PULSE_SOURCE": source}, description=f"pulse:{source}")


def _monitor_name(name: str) -> str:
    return name if name.endswith(".monitor") else f"{name}.monitor"


def _pactl(*args: str) -> str:
    try:
        done = subprocess.run(
            ["pactl", *args], capture_output=True, text=True, timeout=_PACTL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LoopbackError(f"`pactl {' '.join(args)}` timed out; is the PulseAudio server responsive?") from exc
    if done.returncode != 0:
        raise LoopbackError(
            f"`pactl {' '.join(args)}` failed ({done.stderr.strip() or done.returncode}); "
            "start PulseAudio/PipeWire (`pulseaudio --start` or `systemctl --user start pipewire-pulse`)"
        )
    return done.stdout


def _default_sink() -> str:
    try:
        sink = _pactl("get-default-sink").strip()
    except LoopbackError:
        sink = ""  # pactl < 15 has no get-default-sink: fall back to `pactl info`
    if not sink:
        for line in _pactl("info").splitlines():
            if line.startswith("Default Sink:"):
                sink = line.split(":", 1)[1].strip()
    if not sink or sink == "@DEFAULT_SINK@":
        raise LoopbackError("PulseAudio has no default sink; name one with audio.device=<sink name>")
    return sink


def _list_sources() -> list[str]:
    return [line.split("\t")[1] for line in _pactl("list", "short", "sources").splitlines() if "\t" in line]
