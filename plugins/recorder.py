"""Record the bus to an mp4: H.264 video + AAC audio via PyAV, timestamps from the frame timeline.

Timing model: video pts = output frame index (time base 1/fps); audio pts = output sample index.
Both come from the chunk's ``first_frame``, never from wall-clock arrival, so a bursty engine still
produces an evenly timed file. Chunks that never arrive (dropped on the bus) are filled by repeating
the last frame with silence, which keeps later audio in sync with later video. Audio is resampled to
48 kHz for the AAC stream: AAC pads its last 1024-sample frame, and at 48 kHz that padding (<= 21 ms)
stays below one 25 fps frame period, so decoded audio and video lengths agree within one frame.
The file is written to ``<name>.part.mp4`` and renamed when complete, so the final name only ever
holds a finished, playable file.

With ``alpha`` (``sinks.recorder.alpha``) the file is a transparent WebM instead: VP9 with an alpha channel (the
person matte; video editors, browsers and OBS read it) + Opus at 48 kHz. Frames without a matte of their own (gap
fills, hold frames) keep the last matte.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.interface import ChunkSpec, FrameChunk
from plugins.base import SinkError
from plugins.matte import MatteKeeper, unmix_edges

__all__ = ["MediaInfo", "RecorderSink", "RecordingStats", "probe_media"]

log = logging.getLogger(__name__)

AUDIO_OUT_RATE = 48000


class RecordingStats:
    """What a finished recording holds (for logs and tests)."""

    def __init__(self, path: Path, frames: int, audio_samples: int, fps: Fraction, sample_rate: int, filled_frames: int) -> None:
        self.path = path
        self.frames = frames
        self.audio_samples = audio_samples  # at the engine's sample rate, before resampling
        self.fps = fps
        self.sample_rate = sample_rate
        self.filled_frames = filled_frames  # frames synthesised for chunks that never arrived

    @property
    def video_duration_s(self) -> float:
        return self.frames / float(self.fps)

    @property
    def audio_duration_s(self) -> float:
        return self.audio_samples / self.sample_rate

    def __repr__(self) -> str:
        return (
            f"RecordingStats({self.path}, frames={self.frames}, video={self.video_duration_s:.3f}s, "
            f"audio={self.audio_duration_s:.3f}s, filled={self.filled_frames})"
        )


class RecorderSink:
    """``FrameSink`` writing an mp4 (libx264 yuv420p + AAC 48 kHz mono).

    ``queue_chunks`` asks the daemon for a deeper bus queue than live sinks get: a recording would
    rather be late than miss chunks during an encoder hiccup.
    """

    queue_chunks = 16

    def __init__(self, path: str | Path, *, preset: str = "veryfast", crf: int = 20, name: str = "recorder",
                 alpha: bool = False) -> None:
        self.name = name
        self.path = Path(path)
        self.alpha = alpha
        if alpha and self.path.suffix.lower() != ".webm":
            raise SinkError(f"{name}: a recording with alpha is a WebM (VP9 with an alpha channel): name it .webm, "
                            f"not {self.path.name!r}")
        self._mattes = MatteKeeper()
        self.preset = preset
        self.crf = crf
        self.stats: RecordingStats | None = None
        self._container = None
        self._video = None
        self._audio = None
        self._resampler = None
        self._spec: ChunkSpec | None = None
        self._frames_out = 0  # next output frame index
        self._samples_out = 0  # next output sample index at the engine rate
        self._session: str | None = None
        self._offset = 0  # output frame index minus the session's first_frame
        self._last_frame: np.ndarray | None = None
        self._filled = 0
        self._tmp_path = self.path.with_name(self.path.stem + ".part" + self.path.suffix)

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self, spec: ChunkSpec) -> None:
        import av

        if self._container is not None:
            raise SinkError(f"{self.name}: already open ({self.path})")
        self._spec = spec
        # yuv420p needs even dimensions; drop a last odd row/column rather than fail.
        self._h, self._w = spec.height & ~1, spec.width & ~1
        if self._h == 0 or self._w == 0:
            raise SinkError(f"{self.name}: frame size {spec.width}x{spec.height} is too small to encode")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self._tmp_path), mode="w", format="webm" if self.alpha else "mp4")
        except (OSError, av.FFmpegError) as exc:
            raise SinkError(f"{self.name}: cannot create {self.path}: {exc}") from exc
        if self.alpha:  # VP9 keeps the alpha plane (yuva420p); realtime speed, constant quality
            video = self._container.add_stream("libvpx-vp9", rate=spec.fps)
            video.width, video.height, video.pix_fmt = self._w, self._h, "yuva420p"
            video.options = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "30", "b": "0"}
        else:
            video = self._container.add_stream("libx264", rate=spec.fps)
            video.width, video.height, video.pix_fmt = self._w, self._h, "yuv420p"
            video.options = {"preset": self.preset, "crf": str(self.crf)}
        video.codec_context.time_base = Fraction(1) / spec.fps
        audio = self._container.add_stream("libopus" if self.alpha else "aac", rate=AUDIO_OUT_RATE)
        audio.layout = "mono"
        audio.codec_context.time_base = Fraction(1, AUDIO_OUT_RATE)
        self._video, self._audio = video, audio
        self._resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_OUT_RATE)
        log.info("%s: recording %dx%d @ %s fps to %s", self.name, self._w, self._h, spec.fps, self.path)

    def write(self, chunk: FrameChunk) -> None:
        spec = self._require_open()
        if chunk.session_id != self._session:
            # A new session continues the file where the previous one stopped.
            self._session = chunk.session_id
            self._offset = self._frames_out - chunk.first_frame
        start = chunk.first_frame + self._offset
        frames, audio = chunk.frames, self._fit_audio(chunk)
        if self.alpha:  # RGBA: the matte (or the last one) as the fourth channel
            matte = self._mattes.alpha_of(chunk)
            if matte is None:
                matte = np.full(frames.shape[:3], 255, np.uint8)
            else:
                frames = unmix_edges(frames, matte)
            frames = np.concatenate([frames, matte[..., None]], axis=3)
        if start > self._frames_out:
            self._fill(start - self._frames_out)
        elif start < self._frames_out:  # overlap with what is already written: keep the old, drop the new
            skip = self._frames_out - start
            log.warning("%s: chunk %d overlaps %d written frames; dropping them", self.name, chunk.seq, skip)
            frames, audio = frames[skip:], audio[skip * spec.samples_per_frame :]
        if frames.shape[0]:
            self._encode(frames, audio)

    def av_offset_s(self) -> float | None:
        """Video minus audio time written to the file so far (held frames come with their silence, so it stays
        within one frame unless a chunk's audio was cut or padded)."""
        spec = self._spec
        if spec is None or self._frames_out == 0:
            return None
        return self._frames_out / float(spec.fps) - self._samples_out / spec.sample_rate

    def hold(self, reason: str) -> None:
        # Nothing to do now: the gap is filled with the last frame when the next chunk arrives.
        log.info("%s: holding (%s)", self.name, reason)

    def close(self) -> RecordingStats | None:
        """Flush both encoders, finish the file and rename it into place. Returns the stats."""
        if self._container is None:
            return self.stats
        import av

        try:
            for frame in self._resampler.resample(None):  # the resampler's filter tail
                self._mux(self._audio, frame)
            self._mux(self._video, None)
            self._mux(self._audio, None)
            self._container.close()
        except (OSError, av.FFmpegError) as exc:
            raise SinkError(f"{self.name}: could not finish {self.path}: {exc}") from exc
        finally:
            self._container = None
        if self._frames_out == 0:
            self._tmp_path.unlink(missing_ok=True)
            log.warning("%s: no frames arrived; %s not written", self.name, self.path)
            return None
        self._tmp_path.replace(self.path)
        spec = self._spec
        assert spec is not None  # set by open()
        self.stats = RecordingStats(self.path, self._frames_out, self._samples_out, spec.fps, spec.sample_rate, self._filled)
        log.info("%s: wrote %s", self.name, self.stats)
        return self.stats

    def abort(self) -> None:
        """Stop without producing a file (the partial output is deleted)."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - best effort: the file is deleted next anyway
                log.debug("%s: error while aborting", self.name, exc_info=True)
        self._tmp_path.unlink(missing_ok=True)

    # -- internals -----------------------------------------------------------------------------

    def _require_open(self) -> ChunkSpec:
        if self._container is None or self._spec is None:
            raise SinkError(f"{self.name}: write() before open() or after close()")
        return self._spec

    def _fit_audio(self, chunk: FrameChunk) -> np.ndarray:
        """The chunk's audio padded with silence or trimmed to exactly its frames' duration."""
        spec = self._spec
        assert spec is not None
        want = chunk.num_frames * spec.samples_per_frame
        audio = np.asarray(chunk.audio, dtype=np.float32).reshape(-1)
        if audio.shape[0] != want:
            log.debug("%s: chunk %d audio %d samples, frames need %d; fitting", self.name, chunk.seq, audio.shape[0], want)
            fitted = np.zeros(want, dtype=np.float32)
            n = min(want, audio.shape[0])
            fitted[:n] = audio[:n]
            audio = fitted
        return audio

    def _fill(self, n_frames: int) -> None:
        spec = self._spec
        assert spec is not None
        log.warning("%s: %d frames missing (dropped upstream); repeating the last frame with silence", self.name, n_frames)
        last = self._last_frame if self._last_frame is not None else np.zeros((self._h, self._w, 4 if self.alpha else 3), np.uint8)
        for _ in range(n_frames):
            self._encode(last[None], np.zeros(spec.samples_per_frame, np.float32))
        self._filled += n_frames

    def _encode(self, frames: np.ndarray, audio: np.ndarray) -> None:
        import av

        spec = self._spec
        assert spec is not None
        for rgb in frames:
            rgb = np.ascontiguousarray(rgb[: self._h, : self._w])
            vf = av.VideoFrame.from_ndarray(rgb, format="rgba" if rgb.shape[2] == 4 else "rgb24")
            vf.pts = self._frames_out
            self._mux(self._video, vf)
            self._frames_out += 1
            self._last_frame = rgb
        af = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="fltp", layout="mono")
        af.sample_rate = spec.sample_rate
        af.time_base = Fraction(1, spec.sample_rate)
        af.pts = self._samples_out
        self._samples_out += audio.shape[0]
        for out in self._resampler.resample(af):
            self._mux(self._audio, out)

    def _mux(self, stream: object, frame: object) -> None:
        import av

        try:
            for packet in stream.encode(frame):  # type: ignore[attr-defined]
                self._container.mux(packet)  # type: ignore[union-attr]
        except av.FFmpegError as exc:
            raise SinkError(f"{self.name}: encoding failed for {self.path}: {exc}") from exc


class MediaInfo:
    """Durations of a finished mp4 as a player sees them (stream durations from the container)."""

    def __init__(self, video_s: float, audio_s: float, frames: int, video_codec: str, audio_codec: str,
                 width: int, height: int, fps: Fraction | None) -> None:
        self.video_s, self.audio_s, self.frames = video_s, audio_s, frames
        self.video_codec, self.audio_codec = video_codec, audio_codec
        self.width, self.height, self.fps = width, height, fps

    def __repr__(self) -> str:
        return (f"MediaInfo(video={self.video_s:.3f}s/{self.frames} frames {self.video_codec} {self.width}x{self.height}, "
                f"audio={self.audio_s:.3f}s {self.audio_codec})")


def probe_media(path: str | Path) -> MediaInfo:
    """Open ``path`` with PyAV and read its first video and audio stream's codec and duration."""
    import av

    with av.open(str(path)) as container:
        v = container.streams.video[0] if container.streams.video else None
        a = container.streams.audio[0] if container.streams.audio else None

        def seconds(stream: object) -> float:
            if stream is None or stream.duration is None:  # type: ignore[attr-defined]
                return 0.0
            return float(stream.duration * stream.time_base)  # type: ignore[attr-defined]

        return MediaInfo(
            video_s=seconds(v),
            audio_s=seconds(a),
            frames=int(v.frames) if v is not None else 0,
            video_codec=v.codec_context.name if v is not None else "",
            audio_codec=a.codec_context.name if a is not None else "",
            width=v.width if v is not None else 0,
            height=v.height if v is not None else 0,
            fps=v.average_rate if v is not None else None,
        )
