"""MemoryWatch: watermark, Theil-Sen leak trend (fake clock and RSS), and a real allocating child process."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from soulx_live.memory_watch import (
    MemorySample,
    MemoryWatch,
    process_rss_bytes,
    theil_sen_slope,
)

MB = 2**20


class FakeProcess:
    def __init__(self) -> None:
        self.t = 0.0
        self.rss_mb = 500.0

    def clock(self) -> float:
        return self.t

    def rss(self, pid: int) -> int:
        return int(self.rss_mb * MB)


def _run(fake: FakeProcess, watch: MemoryWatch, hours: float, growth_mb_per_hour: float, step_s: float = 10.0,
         spike_at_s: float | None = None) -> str | None:
    verdict = None
    steps = int(hours * 3600 / step_s)
    for _ in range(steps):
        fake.t += step_s
        fake.rss_mb += growth_mb_per_hour * step_s / 3600
        if spike_at_s is not None and abs(fake.t - spike_at_s) < step_s / 2:
            fake.rss_mb += 400  # a one-off allocation that stays (e.g. a cache filled once)
        verdict = watch.check(1234) or verdict
    return verdict


def _watch(fake: FakeProcess, limit_mb: float | None = None) -> MemoryWatch:
    return MemoryWatch(limit_mb, leak_mb_per_hour=100.0, window_s=1800, warmup_s=120, interval_s=5,
                       clock=fake.clock, rss=fake.rss)


def test_flat_memory_never_asks_for_a_restart() -> None:
    fake = FakeProcess()
    watch = _watch(fake)
    assert _run(fake, watch, hours=3, growth_mb_per_hour=0.0) is None
    assert abs(watch.slope_mb_per_hour()) < 1


def test_sustained_leak_is_detected_with_its_rate() -> None:
    fake = FakeProcess()
    watch = _watch(fake)
    verdict = _run(fake, watch, hours=1, growth_mb_per_hour=300.0)
    assert verdict is not None and "MB/h" in verdict and "leak_mb_per_hour=100" in verdict
    assert watch.slope_mb_per_hour() == pytest.approx(300, rel=0.05)


def test_a_single_step_then_flat_is_not_a_leak() -> None:
    fake = FakeProcess()
    watch = _watch(fake)
    assert _run(fake, watch, hours=2, growth_mb_per_hour=0.0, spike_at_s=3000.0) is None


def test_watermark_restarts_above_the_limit_at_once() -> None:
    fake = FakeProcess()
    watch = _watch(fake, limit_mb=600)
    fake.t = 10.0
    assert watch.check(1) is None
    fake.rss_mb, fake.t = 700.0, 20.0
    verdict = watch.check(1)
    assert verdict is not None and "memory_limit_mb=600" in verdict


def test_a_restarted_process_starts_a_new_history() -> None:
    fake = FakeProcess()
    watch = _watch(fake)
    _run(fake, watch, hours=0.5, growth_mb_per_hour=300.0)
    fake.t += 10
    assert watch.check(9999) is None  # new pid: warm-up again, no verdict from the old trend
    assert watch.slope_mb_per_hour() == 0.0


def test_theil_sen_ignores_an_outlier() -> None:
    samples = [MemorySample(float(t), 100.0 + 0.01 * t) for t in range(100)]
    samples[50] = MemorySample(50.0, 10_000.0)
    assert theil_sen_slope(samples) == pytest.approx(0.01, rel=0.05)


def test_real_child_that_allocates_is_seen_growing() -> None:
    code = ("import sys, time\nblocks = []\nfor _ in range(6):\n    blocks.append(bytearray(40 * 2**20))\n"
            "    blocks[-1][::4096] = b'x' * len(blocks[-1][::4096])\n    time.sleep(0.15)\ntime.sleep(5)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.1)
        start = process_rss_bytes(proc.pid)
        time.sleep(1.2)
        end = process_rss_bytes(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert end - start > 150 * MB, f"RSS grew only {(end - start) / MB:.0f} MB"
    assert process_rss_bytes(proc.pid) == 0  # gone: 0, not an exception
