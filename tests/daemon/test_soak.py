"""Accelerated soak: the real in-process daemon path (lite engine, bus, a sink thread) turns a long speech file
into frames as fast as it can while the process RSS is sampled against the audio timeline. After warm-up the
Theil-Sen slope must be flat (MB per audio-hour); a sink that keeps every chunk (a real leak) fails the same
check, so the check can fail. ``benchmarks/soak.py`` runs the long version and records the figures.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from live_support import live_config, short_tmp

from engine.interface import ChunkSpec, FrameChunk
from soulx_live.daemon import Daemon
from soulx_live.memory_watch import MemorySample, process_rss_bytes, theil_sen_slope

pytestmark = pytest.mark.timeout(120)

AUDIO_S = 240.0  # 4 minutes of speech-like audio, 6000 frames
LEAK_LIMIT_MB_PER_AUDIO_HOUR = 100.0


class CountingSink:
    """A sink that looks at every chunk; ``keep`` makes it hold on to them (the leak the soak must catch)."""

    name = "counter"

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.frames = 0
        self.kept: list[np.ndarray] = []

    def open(self, spec: ChunkSpec) -> None:
        self.spec = spec

    def write(self, chunk: FrameChunk) -> None:
        self.frames += chunk.num_frames
        if self.keep:
            self.kept.append(chunk.frames.copy())

    def hold(self, reason: str) -> None:
        pass

    def close(self) -> None:
        pass


def _speech_file(path: Path, seconds: float) -> Path:
    from daemon_fakes import write_audio

    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    envelope = (np.sin(2 * np.pi * 0.7 * t) > -0.2).astype(np.float32)  # talk / pause rhythm
    pcm = (0.3 * envelope * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return write_audio(path, pcm[None], sr)


def soak(root: Path, seconds: float, keep: bool, size: int = 64) -> tuple[float, list[MemorySample], int]:
    """Run the daemon over ``seconds`` of audio; (slope MB per audio-hour after warm-up, samples, frames)."""
    config = live_config(root, **{"audio.file": str(_speech_file(root / "speech.wav", seconds)), "audio.realtime": False,
                                  "engine.lite.width": size, "engine.lite.height": size})
    sink = CountingSink(keep)
    daemon = Daemon(config, sink_factory=lambda _: [sink])
    assert daemon.isolation == "thread"
    samples: list[MemorySample] = []
    done = threading.Event()

    def sample() -> None:
        fps = 25.0
        while not done.wait(0.05):
            samples.append(MemorySample(sink.frames / fps, process_rss_bytes(os.getpid(), children=False) / 2**20))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        assert daemon.run() == 0
    finally:
        done.set()
        sampler.join()
    warm = [s for s in samples if s.t > 0.25 * seconds]
    return theil_sen_slope(warm) * 3600.0, warm, sink.frames


def test_long_session_memory_is_flat() -> None:
    with short_tmp() as root:
        t0 = time.monotonic()
        slope, samples, frames = soak(root, AUDIO_S, keep=False)
        wall = time.monotonic() - t0
    assert frames >= AUDIO_S * 25 - 25
    print(f"soak: {AUDIO_S:.0f} s of audio in {wall:.1f} s wall ({AUDIO_S / wall:.1f}x), RSS {samples[0].rss_mb:.0f} -> "
          f"{samples[-1].rss_mb:.0f} MB, slope {slope:.1f} MB per audio-hour")
    assert len(samples) >= 10
    assert slope < LEAK_LIMIT_MB_PER_AUDIO_HOUR, f"memory grows {slope:.0f} MB per audio-hour"


def test_the_soak_check_catches_a_leaking_sink() -> None:
    # In a fresh interpreter: pages freed by an earlier test would be reused by the leak without RSS growing.
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from test_soak import soak\nfrom live_support import short_tmp\n"
            "with short_tmp() as root:\n    slope, _, _ = soak(root, 60.0, keep=True)\nprint(slope)\n")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True,
                         timeout=100, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    slope = float(out.stdout.strip().splitlines()[-1])
    # 64x64x3 bytes x 25 fps kept = 1.1 GB per audio-hour
    assert slope > LEAK_LIMIT_MB_PER_AUDIO_HOUR, f"a sink keeping every frame gave only {slope:.0f} MB per audio-hour"
