"""The settings of each sink: the ``sinks.*`` sections of the daemon configuration.

They live here, next to the sinks that read them, so that ``plugins`` never imports the daemon
(``soulx_live``); :mod:`soulx_live.config` composes them into its ``SinksConfig`` and re-exports the
names, so YAML files and ``from soulx_live.config import ObsConfig`` keep working.

Every section is frozen and rejects unknown keys, like the daemon's own sections: a misspelt key is
an error, never silently ignored. (The daemon's loader names such a key, its source and the closest
valid key before these models see it; constructing one directly raises pydantic's ``extra_forbidden``.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["ObsConfig", "RecorderConfig", "SinkSettings", "VirtualCamConfig", "VirtualMicConfig"]


class SinkSettings(BaseModel):
    """Base of every sink section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RecorderConfig(SinkSettings):
    """``sinks.recorder``: write the session to a video file."""

    enabled: bool = False
    path: Path | None = None
    alpha: bool = False  # a transparent WebM (VP9 with the person matte as alpha + Opus); the path must end in .webm


class VirtualCamConfig(SinkSettings):
    """``sinks.virtualcam``: the avatar as a webcam, in a meeting-friendly format."""

    enabled: bool = False
    width: int = Field(1280, gt=0)
    height: int = Field(720, gt=0)
    fps: int = Field(30, gt=0)
    fit: Literal["letterbox", "crop"] = "letterbox"
    device: str | None = None
    alpha: bool = False  # cut the person out and show them over ``background`` (meeting apps ignore alpha)
    background: str = "#00b140"  # with alpha: a #rrggbb colour or an image file (it fills the camera frame)

    @field_validator("background")
    @classmethod
    def _colour_or_file(cls, value: str) -> str:
        text = value.strip()
        if text.startswith("#") and (len(text) != 7 or any(c not in "0123456789abcdefABCDEF" for c in text[1:])):
            raise ValueError(f"background {value!r}: a colour is #rrggbb (e.g. #00b140), anything else names an image file")
        if not text.startswith("#") and not Path(text).expanduser().is_file():
            raise ValueError(f"background image {value!r} does not exist (or use a #rrggbb colour)")
        return text


class VirtualMicConfig(SinkSettings):
    """``sinks.virtualmic``: the avatar's voice as a microphone."""

    enabled: bool = False
    sink_name: str = "soulx_live_mic_sink"  # PulseAudio/PipeWire null sink the daemon plays into
    source_name: str = "soulx_live_mic"  # the virtual microphone meeting apps select
    description: str = "soulx-live avatar microphone"
    device: str | None = None  # Windows/macOS: a virtual cable output (VB-Cable, BlackHole) by name


class ObsConfig(SinkSettings):
    """``sinks.obs``: the obs-websocket connection, the scene to bind and the feed OBS reads."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(4455, ge=1, le=65535)
    password: SecretStr | None = None
    timeout_s: float = Field(5.0, gt=0)
    scene: str = "soulx-live"
    source_name: str = "soulx-live avatar"
    feed_host: str = "127.0.0.1"
    feed_port: int = Field(47870, ge=1, le=65535)
    speaking_scene: str | None = None  # switch to this scene when speech starts
    idle_scene: str | None = None  # and to this one when it ends
    alpha: bool = False  # the feed's alpha channel is the person matte: OBS shows what is behind the avatar
