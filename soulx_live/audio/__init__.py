"""Audio input for the daemon and ``render``: file decoding, a paced file source, sound devices and system
loopback, pushed audio, resampling, and the intake ring; :class:`~soulx_live.audio.source.AudioSource` is what
every source offers. May import ``engine`` (wire helpers, extras), ``plugins.portaudio`` and ``soulx_live.config``;
never the daemon, the push API or TTS (the timed TTS source lives in :mod:`soulx_live.tts.script_source`)."""
from __future__ import annotations

from soulx_live.audio.file import AudioFileError, decode_audio_file
from soulx_live.audio.file_source import FileSource
from soulx_live.audio.ring import AudioRing

__all__ = ["AudioFileError", "AudioRing", "FileSource", "decode_audio_file"]
