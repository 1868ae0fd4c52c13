"""Accelerated soak: the real in-process daemon path (lite engine, bus, a sink thread) turns a long speech file
into frames as fast as it can while the process RSS is sampled against the audio timeline. After warm-up the
Theil-Sen slope must be flat (MB per audio-hour); a sink that keeps every chunk (a real leak) fails the same
check, so the check can fail. The soak itself lives in ``benchmarks/soak.py``, which runs the long version
(an audio-hour) and records the figures in ``benchmarks/results/soak.json``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(BENCHMARKS))

from live_support import short_tmp
from soak import LEAK_LIMIT_MB_PER_AUDIO_HOUR, soak

pytestmark = pytest.mark.timeout(120)

AUDIO_S = 240.0  # 4 minutes of speech-like audio, 6000 frames


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
            "from soak import soak\nfrom live_support import short_tmp\n"
            "with short_tmp() as root:\n    slope, _, _ = soak(root, 60.0, keep=True)\nprint(slope)\n")
    out = subprocess.run([sys.executable, "-c", code, str(BENCHMARKS)], capture_output=True, text=True,
                         timeout=100, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    slope = float(out.stdout.strip().splitlines()[-1])
    # 64x64x3 bytes x 25 fps kept = 1.1 GB per audio-hour
    assert slope > LEAK_LIMIT_MB_PER_AUDIO_HOUR, f"a sink keeping every frame gave only {slope:.0f} MB per audio-hour"
