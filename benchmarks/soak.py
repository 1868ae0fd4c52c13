"""Accelerated soak: the long version of ``tests/daemon/test_soak.py``, which imports its helpers from here.

The real in-process daemon path (lite engine, bus, a sink thread) turns a long talk/pause speech file into
frames as fast as it can (``audio.realtime=false``, so the daemon runs the engine in a thread), while a sampler
thread records the process RSS against the audio timeline (frames reached by the sink / fps). After a warm-up
(the first quarter of the audio: the decoded file, the bus buffers and the allocator settle) the Theil-Sen
slope of RSS over audio time, in MB per audio-hour, must stay under ``LEAK_LIMIT_MB_PER_AUDIO_HOUR``. The same
run with a sink that keeps every chunk (a real leak: 64x64x3 bytes x 25 fps = 1.1 GB per audio-hour) must fail
that check, so the check is shown to be able to fail.

Each run is a fresh interpreter (``--single``): pages freed by an earlier run would be reused by the leak
without the RSS growing.

Run: ``OMP_NUM_THREADS=1 python benchmarks/soak.py`` (1 audio-hour each, about two minutes on the 2-core VM);
writes ``benchmarks/results/soak.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "daemon"))

from live_support import live_config, short_tmp

from engine.interface import ChunkSpec, FrameChunk
from soulx_live.daemon import Daemon
from soulx_live.memory_watch import MemorySample, process_rss_bytes, theil_sen_slope

log = logging.getLogger("soak")

RESULTS = ROOT / "benchmarks" / "results" / "soak.json"
LEAK_LIMIT_MB_PER_AUDIO_HOUR = 100.0
SAMPLE_PERIOD_S = 0.05  # RSS sampling period (wall clock)
WARMUP_FRACTION = 0.25  # of the audio; excluded from the slope
SR = 16000
FPS = 25.0


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


def speech_block(start: int, n: int, sr: int = SR) -> np.ndarray:
    """Samples ``start .. start+n`` of a speech-like signal: a 220 Hz voice, 3 Hz syllables, talk/pause rhythm."""
    t = np.arange(start, start + n) / sr
    envelope = (np.sin(2 * np.pi * 0.7 * t) > -0.2).astype(np.float32)
    return (0.3 * envelope * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def write_speech_file(path: Path, seconds: float, sr: int = SR, block_s: float = 60.0) -> Path:
    """A mono 16-bit WAV of ``seconds`` of :func:`speech_block`, encoded block by block (an hour is 58 M samples;
    one array of it in float64 would take half a gigabyte per temporary)."""
    import av

    total = round(seconds * sr)
    block = int(block_s * sr)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=sr)
        stream.layout = "mono"
        for start in range(0, total, block):
            pcm = speech_block(start, min(block, total - start), sr)
            frame = av.AudioFrame.from_ndarray(pcm[None], format="fltp", layout="mono")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@dataclass(frozen=True)
class SoakRun:
    slope_mb_per_audio_hour: float
    samples: list[MemorySample]  # after warm-up
    frames: int
    wall_s: float


def run_soak(root: Path, seconds: float, keep: bool, size: int = 64) -> SoakRun:
    """Run the daemon over ``seconds`` of audio as fast as it goes and sample this process's RSS meanwhile."""
    speech = write_speech_file(root / "speech.wav", seconds)
    config = live_config(root, **{"audio.file": str(speech), "audio.realtime": False,
                                  "engine.lite.width": size, "engine.lite.height": size})
    sink = CountingSink(keep)
    daemon = Daemon(config, sink_factory=lambda _: [sink])
    if daemon.isolation != "thread":
        raise RuntimeError(f"the soak measures the in-process path, got isolation={daemon.isolation}")
    samples: list[MemorySample] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_PERIOD_S):
            samples.append(MemorySample(sink.frames / FPS, process_rss_bytes(os.getpid(), children=False) / 2**20))

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    t0 = time.monotonic()
    sampler.start()
    try:
        code = daemon.run()
    finally:
        done.set()
        sampler.join()
    wall = time.monotonic() - t0
    if code != 0:
        raise RuntimeError(f"the daemon ended with {code}")
    warm = [s for s in samples if s.t > WARMUP_FRACTION * seconds]
    return SoakRun(theil_sen_slope(warm) * 3600.0, warm, sink.frames, wall)


def soak(root: Path, seconds: float, keep: bool, size: int = 64) -> tuple[float, list[MemorySample], int]:
    """(slope MB per audio-hour after warm-up, samples, frames): the test's view of :func:`run_soak`."""
    run = run_soak(root, seconds, keep, size)
    return run.slope_mb_per_audio_hour, run.samples, run.frames


# --- the benchmark --------------------------------------------------------------------------------


def _single(seconds: float, keep: bool, size: int) -> dict[str, object]:
    with short_tmp() as root:
        run = run_soak(root, seconds, keep, size)
    rss = [s.rss_mb for s in run.samples]
    # one RSS point per audio-minute is plenty to show the trend; the slope used every sample
    picked: list[MemorySample] = []
    for s in run.samples:
        if not picked or s.t >= picked[-1].t + 60.0:
            picked.append(s)
    return {
        "audio_s": seconds, "wall_s": round(run.wall_s, 1), "speed_x_realtime": round(seconds / run.wall_s, 1),
        "frames": run.frames, "frames_expected": int(np.ceil(seconds * FPS / 5) * 5),
        "rss_samples_after_warmup": len(run.samples),
        "rss_mb_first_last_after_warmup": [round(rss[0], 1), round(rss[-1], 1)] if rss else None,
        "rss_mb_min_max_after_warmup": [round(min(rss), 1), round(max(rss), 1)] if rss else None,
        "slope_mb_per_audio_hour": round(run.slope_mb_per_audio_hour, 2),
        "passes_check": run.slope_mb_per_audio_hour < LEAK_LIMIT_MB_PER_AUDIO_HOUR,
        "rss_mb_by_audio_s": [[round(s.t, 1), round(s.rss_mb, 1)] for s in picked],
    }


def _in_child(seconds: float, keep: bool, size: int) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--single", "leak" if keep else "clean", "--audio-s", str(seconds),
           "--size", str(size)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"soak run failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio-s", type=float, default=3600.0, help="audio seconds of the clean run")
    parser.add_argument("--leak-audio-s", type=float, default=3600.0, help="audio seconds of the leaking-sink run")
    parser.add_argument("--size", type=int, default=64, help="lite engine frame size (square)")
    parser.add_argument("--single", choices=["clean", "leak"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.single:
        print(json.dumps(_single(args.audio_s, args.single == "leak", args.size)))
        return 0
    load_before = os.getloadavg()
    clean = _in_child(args.audio_s, False, args.size)
    leak = _in_child(args.leak_audio_s, True, args.size)
    result = {
        "benchmark": "soak",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
        "load_avg_1_5_15_before": [round(x, 2) for x in load_before],
        "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "config": {"engine": "lite", "size": [args.size, args.size], "fps": FPS, "frames_per_chunk": 5,
                   "isolation": "thread (audio.realtime=false)", "sink": "CountingSink", "omp_threads": 1,
                   "rss": "this process, sampled every 50 ms wall", "warmup": f"first {WARMUP_FRACTION:.0%} of the audio",
                   "slope": "Theil-Sen (soulx_live.memory_watch.theil_sen_slope) of RSS vs audio time",
                   "leak_limit_mb_per_audio_hour": LEAK_LIMIT_MB_PER_AUDIO_HOUR},
        "clean": clean,
        "leaking_sink": leak,
        "check_catches_the_leak": bool(clean["passes_check"]) and not leak["passes_check"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'run':<14}{'audio s':>9}{'wall s':>8}{'x rt':>7}{'frames':>8}{'RSS MB first->last':>21}{'MB/audio-h':>12}  check")
    for name, r in (("clean", clean), ("leaking sink", leak)):
        first, last = r["rss_mb_first_last_after_warmup"] or (0, 0)  # type: ignore[misc]
        print(f"{name:<14}{r['audio_s']:>9.0f}{r['wall_s']:>8.1f}{r['speed_x_realtime']:>7.1f}{r['frames']:>8}"
              f"{f'{first:.0f} -> {last:.0f}':>21}{r['slope_mb_per_audio_hour']:>12.1f}  "
              f"{'pass' if r['passes_check'] else 'FAIL'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
