"""Offline rendering: an audio file and a portrait in, an mp4 with the audio muxed out.

Drives the engine through the same interface as the live daemon (``start_session`` ->
``push_audio`` -> ``next_chunk``), one chunk of audio at a time, as fast as the engine goes, straight
into the :class:`~plugins.recorder.RecorderSink` (no bus: nothing else listens, nothing may drop).
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from engine.interface import AvatarEngine
from engine.matting.stage import AlphaEngine
from plugins.recorder import RecorderSink, RecordingStats
from soulx_live.audio.file import AudioFileError, decode_audio_file
from soulx_live.config import SoulxConfig
from soulx_live.factory.engine import build_engine, check_matte_model, load_avatar, session_request

__all__ = ["Progress", "render"]


class Progress:
    """A one-line progress bar on stderr (tqdm when installed, else this small one; not a core dependency)."""

    def __init__(self, total: int, unit: str, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total, self.unit, self.done = total, unit, 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._t0 = time.monotonic()
        self._last_draw = 0.0
        self._tqdm = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._tqdm = tqdm(total=total, unit=unit, file=self._stream, dynamic_ncols=True, leave=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self._enabled:
            return
        if self._tqdm is not None:
            self._tqdm.update(n)
            return
        now = time.monotonic()
        if now - self._last_draw >= 0.2 or self.done >= self.total:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = self.done / self.total if self.total else 1.0
        width = 30
        filled = int(frac * width)
        elapsed = now - self._t0
        eta = elapsed / frac - elapsed if frac > 0 else math.inf
        eta_text = f"{eta:5.0f}s" if math.isfinite(eta) else "    ?"
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if self.done >= self.total else ""
        self._stream.write(f"\r{frac:4.0%} |{bar}| {self.done}/{self.total} {self.unit} eta {eta_text}{end}")
        self._stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._enabled and self.done < self.total:
            self._stream.write("\n")


def render(
    audio_path: str | Path,
    avatar_path: str | Path | None,
    out_path: str | Path,
    config: SoulxConfig,
    progress: bool = True,
    *,
    engine_factory: Callable[[SoulxConfig], AvatarEngine] = build_engine,
) -> RecordingStats:
    """Render ``audio_path`` spoken by the portrait at ``avatar_path`` (None: the engine's built-in avatar).

    The engine comes from ``config.engine`` (``engine.avatar`` is overridden by ``avatar_path``).
    Returns the recording's stats; raises ``AudioFileError``, ``DaemonError`` or ``SinkError`` with
    a message that names the problem.
    """
    if not Path(audio_path).is_file():  # fail before the (possibly slow) engine build
        raise AudioFileError(f"audio file not found: {audio_path}")
    avatar = load_avatar(Path(avatar_path) if avatar_path is not None else config.engine.avatar)
    alpha = config.sinks.recorder.alpha  # a transparent WebM: the engine's chunks need the person matte
    sink = RecorderSink(out_path, alpha=alpha)  # checks the file name before the (possibly slow) engine build
    if alpha:
        check_matte_model()
    engine = engine_factory(config)
    if alpha and not isinstance(engine, AlphaEngine):
        engine = AlphaEngine(engine)
    spec = engine.spec
    pcm = decode_audio_file(audio_path, spec.sample_rate)
    # Offline: no play-out deadline, so a drifting FlashTalk chunk is always generated again.
    session = engine.start_session(session_request(config, avatar, realtime=False))
    per_chunk = spec.samples_per_chunk
    n_chunks = max(1, math.ceil(pcm.shape[0] / per_chunk))
    sink.open(spec)
    bar = Progress(n_chunks, "chunks", enabled=progress)
    try:
        session.push_audio(pcm[:per_chunk])
        for k in range(n_chunks):
            # One chunk of audio at a time, as a live source delivers it, kept one chunk ahead so engines
            # that look ahead (the lite renderer's lips lead the sound by 60 ms) see what a live run sees.
            # The engine pads the last chunk with silence.
            session.push_audio(pcm[(k + 1) * per_chunk : (k + 2) * per_chunk])
            sink.write(session.next_chunk())
            bar.update()
    except BaseException:  # includes KeyboardInterrupt: never leave a half-written file behind
        sink.abort()
        raise
    finally:
        bar.close()
    stats = sink.close()
    assert stats is not None  # at least one chunk was written
    return stats
