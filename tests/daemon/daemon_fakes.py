"""Test doubles and media helpers for the daemon tests: a tiny engine, tone files, mp4 probing."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.interface import ChunkSpec, FrameChunk, SessionRequest


class FakeSession:
    """Implements AvatarSession: frame k is a flat grey level k % 256 so tests can read the timeline back."""

    def __init__(self, spec: ChunkSpec, session_id: str, step_delay_s: float = 0.0) -> None:
        self.spec = spec
        self.session_id = session_id
        self._buf = np.zeros(0, np.float32)
        self._next_frame = 0
        self._seq = 0
        self._delay = step_delay_s

    def push_audio(self, pcm: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, np.asarray(pcm, np.float32).reshape(-1)])

    def chunks_ready(self) -> int:
        return self._buf.shape[0] // self.spec.samples_per_chunk

    def next_chunk(self) -> FrameChunk:
        import time

        if self._delay:
            time.sleep(self._delay)
        spc = self.spec.samples_per_chunk
        audio = np.zeros(spc, np.float32)
        take = self._buf[:spc]
        audio[: take.shape[0]] = take
        self._buf = self._buf[spc:]
        n = self.spec.frames_per_chunk
        levels = (np.arange(self._next_frame, self._next_frame + n) % 256).astype(np.uint8)
        frames = np.broadcast_to(levels[:, None, None, None], (n, self.spec.height, self.spec.width, 3)).copy()
        chunk = FrameChunk(self.session_id, self._seq, self._next_frame, frames, audio, self._next_frame * self.spec.samples_per_frame)
        self._next_frame += n
        self._seq += 1
        return chunk

    def reset(self) -> None:
        self._buf = np.zeros(0, np.float32)


class FakeEngine:
    """Implements AvatarEngine with FakeSession; ``step_delay_s`` makes each chunk take that long."""

    name = "fake"

    def __init__(self, frames_per_chunk: int = 5, width: int = 64, height: int = 48, step_delay_s: float = 0.0) -> None:
        self.spec = ChunkSpec(fps=Fraction(25), sample_rate=16000, frames_per_chunk=frames_per_chunk, height=height, width=width)
        self._delay = step_delay_s

    def start_session(self, request: SessionRequest) -> FakeSession:
        return FakeSession(self.spec, request.session_id, self._delay)


def tone(seconds: float, sample_rate: int, freq_hz: float = 440.0, channels: int = 1, amp: float = 0.4) -> np.ndarray:
    """A sine, shape (channels, n) float32."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    mono = (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return np.repeat(mono[None], channels, axis=0)


def write_audio(path: Path, pcm: np.ndarray, sample_rate: int) -> Path:
    """Encode ``pcm`` (channels, n) float32 with PyAV; the codec follows the extension (wav/flac/mp3/ogg)."""
    import av

    codec, fmt = {".wav": ("pcm_s16le", "s16"), ".flac": ("flac", "s16"), ".mp3": ("libmp3lame", "fltp"),
                  ".ogg": ("libvorbis", "fltp")}[path.suffix]
    layout = "mono" if pcm.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, np.float32), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def decoded_lengths(path: Path) -> tuple[int, float, list[int], int, float]:
    """(video frames, fps, video pts, audio samples decoded, audio rate) of an mp4."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        pts = [f.pts for f in c.decode(v)]
        fps = float(v.average_rate)
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(a))
        rate = float(a.rate)
    return len(pts), fps, pts, samples, rate


def main() -> int:
    """Run a real Daemon (signals, bus, recorder) around FakeEngine: ``python daemon_fakes.py AUDIO OUT RUNTIME_DIR``.

    Options via environment: FAKE_STEP_DELAY_S (seconds per chunk), FAKE_GRACE_S (shutdown grace).
    """
    import os
    import sys

    from soulx_live.config import load_config
    from soulx_live.daemon import Daemon
    from soulx_live.log import setup_logging

    audio, out, runtime = sys.argv[1:4]
    setup_logging("INFO", process_name="fake-daemon")
    config = load_config(None, env={}, overrides={
        "audio.file": audio, "audio.realtime": True, "bus.runtime_dir": runtime,
        "sinks.recorder.enabled": True, "sinks.recorder.path": out,
        "supervisor.shutdown_grace_s": float(os.environ.get("FAKE_GRACE_S", "10")),
    })
    delay = float(os.environ.get("FAKE_STEP_DELAY_S", "0"))
    return Daemon(config, engine_factory=lambda _: FakeEngine(step_delay_s=delay)).run()


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, when run as a script
    sys.exit(main())
