"""The audio input named by ``audio.source``: a file, a sound device, pushed audio or a timed TTS script."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from engine.extras import MissingExtraError
from soulx_live.audio.file_source import FileSource
from soulx_live.audio.push_source import PushSource
from soulx_live.audio.source import AudioSource
from soulx_live.config import SoulxConfig
from soulx_live.errors import DaemonError

if TYPE_CHECKING:
    from soulx_live.tts.script_source import ScriptSource

__all__ = ["AudioSource", "build_source", "default_speech_path"]


def default_speech_path() -> Path:
    """The built-in demo speech (16 kHz mono wav shipped in the package)."""
    return Path(str(resources.files("soulx_live").joinpath("assets/demo_speech.wav")))


def build_source(config: SoulxConfig, block_samples: int) -> AudioSource:
    """The audio input named by ``audio.source``, delivering blocks of ``block_samples``."""
    audio = config.audio
    if audio.source == "file":
        return _file_source(config, block_samples)
    if audio.source in ("mic", "loopback"):
        from soulx_live.audio.device_source import open_live_source
        from soulx_live.audio.loopback import LoopbackError

        try:
            return open_live_source(audio.source, audio.device, sample_rate=audio.sample_rate, block_samples=block_samples)
        except (LoopbackError, MissingExtraError) as exc:
            raise DaemonError(str(exc)) from exc
    if audio.source == "push":
        return PushSource(sample_rate=audio.sample_rate, block_samples=block_samples)
    if audio.source == "script":
        return _script_source(config, block_samples)
    raise DaemonError(f"audio.source={audio.source!r} is not supported; use file, mic, loopback, push or script")


def _file_source(config: SoulxConfig, block_samples: int) -> FileSource:
    from soulx_live.audio.file import AudioFileError

    audio = config.audio
    try:
        return FileSource(audio.file or default_speech_path(), sample_rate=audio.sample_rate,
                          block_samples=block_samples, realtime=audio.realtime)
    except AudioFileError as exc:
        raise DaemonError(str(exc)) from exc


def _script_source(config: SoulxConfig, block_samples: int) -> ScriptSource:
    """``audio.source=script``: timed lines of ``tts.script`` spoken by the configured TTS."""
    if config.tts.script is None:
        raise DaemonError("audio.source=script needs tts.script (--set tts.script=lines.txt)")
    try:
        from soulx_live.tts import build_tts
        from soulx_live.tts.script_source import ScriptSource
    except ImportError as exc:
        raise DaemonError(f"audio.source=script is not available in this build: {exc}") from exc
    try:
        tts = build_tts(config.tts)
        return ScriptSource(config.tts.script, tts, sample_rate=config.audio.sample_rate, block_samples=block_samples,
                            realtime=config.audio.realtime, loop=config.tts.loop_script)
    except Exception as exc:  # TtsError, a bad script: their messages name the fix
        raise DaemonError(f"audio.source=script: {exc}") from exc
