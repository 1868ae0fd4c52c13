"""The sinks enabled in ``config.sinks``; each plugin is imported only when it is enabled."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from engine.extras import require
from plugins.base import FrameSink
from soulx_live.config import SoulxConfig
from soulx_live.errors import DaemonError
from soulx_live.factory.engine import alpha_wanted, check_matte_model

__all__ = ["build_sinks"]


def build_sinks(config: SoulxConfig) -> list[FrameSink]:
    """The sinks enabled in ``config.sinks``. The virtual camera and the virtual microphone share one A/V clock
    when both are on, so the picture and the voice leave the machine in step."""
    sinks: list[FrameSink] = []
    if alpha_wanted(config):
        check_matte_model()  # here too: the daemon says it before any engine worker starts
    rec = config.sinks.recorder
    if rec.enabled:
        from plugins.recorder import RecorderSink

        suffix = ".webm" if rec.alpha else ".mp4"
        path = rec.path or Path.cwd() / f"soulx-live-{datetime.now():%Y%m%d-%H%M%S}{suffix}"
        sinks.append(RecorderSink(path, alpha=rec.alpha))
    vcam, mic = config.sinks.virtualcam, config.sinks.virtualmic
    clock = None
    if vcam.enabled and mic.enabled:
        from plugins.av_clock import AvClock

        clock = AvClock(config.audio.sample_rate)
    if vcam.enabled:
        require("pyvirtualcam", "vcam", "the virtual camera sink")  # fail early with the install hint
        from plugins.virtualcam import VirtualCamSink

        # keeps the last frame up by itself; under process isolation it is also behind a HoldingSink
        sinks.append(VirtualCamSink(vcam, av_clock=clock))
    if mic.enabled:
        from plugins.virtualmic import VirtualMicSink

        sinks.append(VirtualMicSink(mic, av_clock=clock))
    if config.sinks.obs.enabled:
        require("obsws_python", "obs", "the OBS integration")
        try:
            from plugins.obs.sink import ObsSink
        except ImportError as exc:
            raise DaemonError(f"sinks.obs: the OBS integration is not part of this build ({exc})") from exc
        sinks.append(ObsSink(config.sinks.obs))
    return sinks
