"""Drift monitor cost per chunk, and the tiny-random FlashTalk preset's chunk time, on the CPU.

* monitor: one released-size chunk (28 frames of 768x448), as the session hands it over (a float video
  tensor in [-1, 1]) and as uint8 frames; plus the 64x48 tiny chunk. Median and p90 over ``--repeats``.
* tiny preset: seconds per chunk of ``engine.flashtalk.preset: tiny-random`` (4 frames = 160 ms of video),
  with the monitor on, against its real-time budget.

Run: ``OMP_NUM_THREADS=1 python benchmarks/drift_bench.py`` (about 20 s). Prints a table; writes nothing.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from engine.drift import DriftMonitor, DriftSettings


def _times(fn: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _row(name: str, times: list[float], budget_s: float | None = None) -> str:
    med = statistics.median(times)
    p90 = sorted(times)[int(0.9 * (len(times) - 1))]
    extra = f"  ({100 * med / budget_s:.1f}% of the {budget_s * 1000:.0f} ms chunk)" if budget_s else ""
    return f"{name:<48} median {med * 1000:8.2f} ms   p90 {p90 * 1000:8.2f} ms{extra}"


def bench_monitor(repeats: int) -> list[str]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for label, (h, w, n, chunk_s) in {
        "monitor, 28 x 768x448 video tensor": (768, 448, 28, 28 / 25),
        "monitor, 4 x 64x48 video tensor (tiny)": (64, 48, 4, 4 / 25),
    }.items():
        ref = torch.rand(1, 3, 1, h, w, generator=g) * 2 - 1
        video = (ref + 0.1 * torch.randn(1, 3, n, h, w, generator=g)).clamp(-1, 1)
        latent = torch.randn(1, 16, 2, h // 8, w // 8, generator=g)
        monitor = DriftMonitor(ref, latent[:, :, :1], DriftSettings())
        rows.append(_row(label, _times(lambda m=monitor, v=video, z=latent: m.check(v, z, z), repeats), chunk_s))
        if n == 28:
            frames = ((video[0].permute(1, 2, 3, 0) + 1) * 127.5).to(torch.uint8).numpy()
            rows.append(_row("monitor, 28 x 768x448 uint8 frames", _times(lambda m=monitor, f=frames, z=latent: m.check(f, z), repeats), chunk_s))
    return rows


def bench_tiny(chunks: int) -> list[str]:
    from engine.interface import SessionRequest
    from engine.build import build_tiny_engine

    engine = build_tiny_engine(drift=DriftSettings())
    session = engine.start_session(SessionRequest("bench", seed=1))
    t = np.arange((chunks + 3) * engine.spec.samples_per_chunk) / 16000
    session.push_audio((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32))
    times = _times(session.next_chunk, chunks)
    budget = engine.spec.frames_per_chunk / float(engine.spec.fps)
    return [_row(f"tiny-random chunk ({engine.spec.frames_per_chunk} frames, monitor on)", times, budget),
            _row("  of which the drift check", [session.stats.drift.check_s] * 1, budget)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--chunks", type=int, default=30)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for row in bench_monitor(args.repeats) + bench_tiny(args.chunks):
        print(row)


if __name__ == "__main__":
    main()
