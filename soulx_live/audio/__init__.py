"""Audio input for the daemon and ``render``: file decoding, a paced file source, the intake ring."""
from __future__ import annotations

from soulx_live.audio.file import AudioFileError, decode_audio_file
from soulx_live.audio.file_source import FileSource
from soulx_live.audio.ring import AudioRing

__all__ = ["AudioFileError", "AudioRing", "FileSource", "decode_audio_file"]
