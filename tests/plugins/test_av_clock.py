"""The shared A/V clock over a simulated 24-hour session (fake wall clock): the frame the camera shows and the
sample the microphone plays stay within one frame period of each other through steady speech, jittery chunk
arrival, an engine outage and a barge-in; a clock that accumulates float steps instead fails the same check."""
from __future__ import annotations

import math

import numpy as np

from plugins.av_clock import AvClock
from plugins.pacer import MediaClockPacer
from plugins.virtualmic import _AudioQueue

SR, FPS = 16000, 25
SPF = SR // FPS  # samples per frame
CHUNK = 5 * SPF
DAY_S = 24 * 3600


class FakeWall:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_24_hours_camera_and_microphone_show_the_same_moment() -> None:
    """The real pacer (camera side) and the real microphone queue, both asked by one AvClock at the same instants.

    Chunk k is made at wall ``start + (k+1) * chunk + jitter`` (the engine is paced by live audio, so jitter does
    not accumulate); its frames carry their index as pixels and its audio carries the frame number as the sample
    value. Three hours in the engine is away for 4 s (its backlog arrives in a burst: re-anchor, skipping it), seven hours in a barge-in cuts the
    timeline (new epoch). At every check the frame on the camera and the frame the microphone's sample belongs to
    are at most one frame apart."""
    wall = FakeWall()
    clock = AvClock(SR, latency_s=0.12, max_late_s=0.25, clock=wall)
    pacer = MediaClockPacer(FPS, 30, capacity=64, external_clock=True)
    mic = _AudioQueue()
    rng = np.random.default_rng(1)
    start = wall.t
    chunk_s = CHUNK / SR
    n_chunks = int(DAY_S / chunk_s)
    outage = range(int(3 * 3600 / chunk_s), int((3 * 3600 + 4) / chunk_s))
    bargein = int(7 * 3600 / chunk_s)
    epoch, first_frame, worst, checked, both = 0, 0, 0, 0, 0
    for k in range(n_chunks):
        arrive = start + (k + 1) * chunk_s + abs(rng.normal(0, 0.02))
        if k in outage:
            arrive = start + (outage[-1] + 1) * chunk_s + 0.05  # delivered in a burst when the engine is back
        # camera and microphone checks at instants up to this chunk's arrival
        t = max(wall.t, arrive - chunk_s)
        while t < arrive:
            wall.t = t
            sample = clock.sample_at(t)
            if sample is not None:
                shown = pacer.frame_for_index(sample // SPF)
                heard = mic.take(sample, sample + 1)[0]
                checked += 1
                if shown is not None and heard > 0:
                    both += 1
                    worst = max(worst, abs(int(shown[0]) - (int(heard) - 1)))
            t += 0.013 if k % 500 == 0 else chunk_s / 2.1  # dense now and then, sparse otherwise
        wall.t = arrive
        if k == bargein:
            epoch += 1
            first_frame += 7  # the worker cuts and continues the timeline
        frames = [np.full((1,), first_frame + i, np.int64) for i in range(CHUNK // SPF)]
        audio = np.repeat(np.arange(first_frame, first_frame + CHUNK // SPF, dtype=np.float32) + 1, SPF)
        clock.observe(first_frame * SPF, n_samples=CHUNK, epoch=epoch, session="s")
        pacer.push(first_frame, frames, session="s")
        mic.put(first_frame * SPF, audio)
        first_frame += CHUNK // SPF
    assert both > 0.9 * checked, f"only {both} of {checked} checks had both picture and voice"
    assert worst <= 1, f"camera and microphone {worst} frames apart"
    assert clock.reanchors >= 2  # the outage and the barge-in moved the anchor, for both sinks at once
    lag = first_frame * SPF - clock.sample_at(wall.t)
    assert 0 <= lag < 0.5 * SR, f"after a day the voice plays {lag / SR:.2f} s behind the engine"


def test_no_accumulation_sample_times_are_exact_after_a_day() -> None:
    wall = FakeWall()
    clock = AvClock(SR, clock=wall)
    clock.observe(0)
    t0 = clock.wall_at(0)
    assert t0 is not None
    n = DAY_S * SR
    assert clock.wall_at(n) == t0 + DAY_S
    assert clock.sample_at(t0 + DAY_S) == n


def test_a_float_accumulating_clock_fails_the_same_check() -> None:
    """What the exact clock avoids: a position advanced by float32 steps every camera tick drifts past one frame
    within a day, so the agreement check above would catch such a clock."""
    pos = np.float32(0.0)
    step = np.float32(SR / 30.0)  # samples per 30 fps camera tick
    ticks = DAY_S * 30
    for _ in range(0, ticks, 1000):  # 1000 ticks at a time, as float32 sums do
        pos = np.float32(pos + np.float32(step * np.float32(1000.0)))
    exact = SR * DAY_S
    assert abs(float(pos) - exact) > SPF
    assert math.isclose(AvClock(SR, clock=FakeWall()).latency_s, 0.12)
