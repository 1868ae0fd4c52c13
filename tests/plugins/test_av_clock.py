"""The shared A/V clock over a simulated day (fake wall clock), checked against an independent reference.

The reference is the speaker's own timeline: frame ``f`` of the engine stands for sound spoken at
``start + f * 40 ms`` (the engine is paced by live audio; after a barge-in the worker cuts the timeline, so the
frames after the cut stand for sound spoken that many frames earlier). The camera's choice of frame (the real
:func:`~plugins.virtualcam.nearest_frame` on the shared clock, through the real pacer) and the sample the real
:class:`~plugins.virtualmic.VirtualMicSink` writes into a device buffer (its ``_fill`` callback, given the buffer's
DAC time as PortAudio would) are each turned into a latency: when it is presented minus when it was spoken.

Through steady speech, jittery chunk arrival, a 4 s engine outage and a barge-in, both latencies must stay within a
fixed window, agree within one frame, hold steady between re-anchors, and the clock may re-anchor only for the
outage and the barge-in. A clock running 100 ppm slow, and one that accumulates float32 steps instead of computing
from its anchor, fail the same check.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from engine.interface import FrameChunk
from plugins.av_clock import AvClock
from plugins.pacer import MediaClockPacer
from plugins.settings import VirtualMicConfig
from plugins.virtualcam import nearest_frame
from plugins.virtualmic import VirtualMicSink

SR, FPS = 16000, 25
SPF = SR // FPS  # samples per frame
FRAME_S = 1 / FPS
CHUNK = 5 * SPF
BLOCK = 160  # a 10 ms device buffer
DAC_DELAY_S = 0.01  # the buffer filled now reaches the DAC this much later
CUT_FRAMES = 7  # frames the worker skips at the barge-in
LATENCY_WINDOW_S = (0.1, 0.6)  # jitter buffer 120 ms + a chunk + arrival jitter, below max_late + a chunk
MAX_REANCHORS = 2  # the outage and the barge-in
MAX_SPREAD_S = 2 * FRAME_S  # how much a latency may wander between two re-anchors


class FakeWall:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Report:
    checks: int = 0
    both: int = 0
    worst_apart_s: float = 0.0
    latencies: list[tuple[int, float, float]] = field(default_factory=list)  # (anchor segment, camera, mic)
    reanchors: int = 0
    final_lag_s: float = 0.0

    def problems(self) -> list[str]:
        out = []
        if self.both < 0.9 * self.checks:
            out.append(f"only {self.both} of {self.checks} checks had both picture and voice")
        if self.worst_apart_s > FRAME_S + 1e-9:
            out.append(f"camera and microphone {self.worst_apart_s * 1000:.0f} ms apart")
        lo, hi = LATENCY_WINDOW_S
        seen = [lat for _, cam, mic in self.latencies for lat in (cam, mic)]
        if seen and not lo <= min(seen) <= max(seen) <= hi:
            out.append(f"latency {min(seen):.3f}..{max(seen):.3f} s outside {lo}..{hi} s")
        for segment in {s for s, _, _ in self.latencies}:
            mic = [m for s, _, m in self.latencies if s == segment]
            if max(mic) - min(mic) > MAX_SPREAD_S:
                out.append(f"latency wandered {max(mic) - min(mic):.3f} s between re-anchors (segment {segment})")
                break
        if self.reanchors > MAX_REANCHORS:
            out.append(f"{self.reanchors} re-anchors (at most {MAX_REANCHORS}: the outage and the barge-in)")
        return out


def spoken_at(start: float, frame: float, cut_from: int | None) -> float:
    """The reference: when the sound at (fractional) frame position ``frame`` was spoken."""
    shift = CUT_FRAMES if cut_from is not None and frame >= cut_from else 0
    return start + (frame - shift) * FRAME_S


def simulate(clock: AvClock, wall: FakeWall, hours: float) -> Report:
    """Chunk ``k`` arrives at ``start + (k + 1) * chunk + jitter``; its frames carry their index, its audio the
    frame number + 1 plus the eighth of the frame each sample is in (exact in float32 for a day of frames). Three hours in, the engine is away for 4 s (its backlog arrives in a
    burst); seven hours in, a barge-in cuts the timeline (new epoch)."""
    pacer = MediaClockPacer(FPS, 30, capacity=64, external_clock=True)
    mic = VirtualMicSink(VirtualMicConfig(), av_clock=clock)
    rng = np.random.default_rng(1)
    start, chunk_s = wall.t, CHUNK / SR
    n_chunks = int(hours * 3600 / chunk_s)
    outage = range(int(3 * 3600 / chunk_s), int((3 * 3600 + 4) / chunk_s))
    bargein = int(7 * 3600 / chunk_s)
    report, epoch, first_frame, cut_from = Report(), 0, 0, None
    buffer = np.zeros((BLOCK, 1), np.float32)
    for k in range(n_chunks):
        arrive = start + (k + 1) * chunk_s + abs(rng.normal(0, 0.02))
        if k in outage:
            arrive = start + (outage[-1] + 1) * chunk_s + 0.05  # delivered in a burst when the engine is back
        t = max(wall.t, arrive - chunk_s)
        while t < arrive:
            wall.t = t
            sample = clock.sample_at(t)
            if sample is not None:
                report.checks += 1
                shown = pacer.frame_for_index(nearest_frame(sample, SPF))
                mic._fill(buffer, BLOCK, SimpleNamespace(currentTime=t, outputBufferDacTime=t + DAC_DELAY_S), None)
                heard = float(buffer[BLOCK // 2, 0])
                if shown is not None and heard > 0:
                    report.both += 1
                    camera = t - spoken_at(start, shown[0], cut_from)  # a frame stands for its instant k / fps
                    played = t + DAC_DELAY_S + (BLOCK // 2) / SR
                    voice = played - spoken_at(start, heard - 1 + 1 / 16, cut_from)  # the middle of its eighth
                    report.worst_apart_s = max(report.worst_apart_s, abs(camera - voice))
                    report.latencies.append((clock.reanchors, camera, voice))
            t += 0.013 if k % 500 == 0 else chunk_s / 2.1  # dense now and then, sparse otherwise
        wall.t = arrive
        if k == bargein:
            epoch += 1
            first_frame += CUT_FRAMES  # the worker cuts and continues the timeline
            cut_from = first_frame
        frames = np.zeros((CHUNK // SPF, 1, 1, 3), np.uint8)
        audio = (np.repeat(np.arange(first_frame, first_frame + CHUNK // SPF, dtype=np.float32) + 1, SPF)
                 + np.tile(np.arange(SPF, dtype=np.float32) // (SPF // 8) / 8, CHUNK // SPF))  # frame + 1 + eighths
        mic.write(FrameChunk("s", k, first_frame, frames, audio, first_frame * SPF, epoch))  # observes the clock
        pacer.push(first_frame, [np.full((1,), first_frame + i, np.int64) for i in range(CHUNK // SPF)], session="s")
        first_frame += CHUNK // SPF
    report.reanchors = clock.reanchors
    playing = clock.sample_at(wall.t)
    report.final_lag_s = (first_frame * SPF - (playing or 0)) / SR
    return report


class SlowClock(AvClock):
    """A clock that runs ``ppm`` slow: it believes fewer samples play per second than really do."""

    def __init__(self, ppm: float, **kw: object) -> None:
        super().__init__(SR, **kw)  # type: ignore[arg-type]
        self.sample_rate = SR * (1 - ppm * 1e-6)  # type: ignore[assignment]


class FloatAccumulatingClock(AvClock):
    """A clock that advances a float32 position by each call's elapsed time, instead of computing from its anchor."""

    def __init__(self, **kw: object) -> None:
        super().__init__(SR, **kw)  # type: ignore[arg-type]
        self._acc: tuple[tuple[float, int], np.float32, float] | None = None

    def sample_at(self, wall: float) -> int | None:
        anchor = self._anchor
        if anchor is None:
            return None
        if self._acc is None or self._acc[0] is not anchor:
            self._acc = (anchor, np.float32(anchor[1]), anchor[0])
        _, pos, last = self._acc
        pos = np.float32(pos + np.float32((wall - last) * self.sample_rate))
        self._acc = (anchor, pos, wall)
        return int(math.floor(float(pos)))


def test_24_hours_camera_and_microphone_follow_the_speaker() -> None:
    wall = FakeWall()
    report = simulate(AvClock(SR, latency_s=0.12, max_late_s=0.25, clock=wall), wall, hours=24)
    assert report.problems() == []
    assert report.reanchors == MAX_REANCHORS  # the outage and the barge-in moved the anchor, for both sinks at once
    assert 0 <= report.final_lag_s < 0.5, f"after a day the voice plays {report.final_lag_s:.2f} s behind the engine"


@pytest.mark.parametrize("ppm", [100, -100])
def test_a_clock_100_ppm_off_fails_the_same_check(ppm: float) -> None:
    wall = FakeWall()
    report = simulate(SlowClock(ppm, latency_s=0.12, max_late_s=0.25, clock=wall), wall, hours=3)
    assert report.problems() != []


def test_a_float_accumulating_clock_fails_the_same_check() -> None:
    wall = FakeWall()
    report = simulate(FloatAccumulatingClock(latency_s=0.12, max_late_s=0.25, clock=wall), wall, hours=3)
    assert report.problems() != []


def test_no_accumulation_sample_times_are_exact_after_a_day() -> None:
    wall = FakeWall()
    clock = AvClock(SR, clock=wall)
    clock.observe(0)
    t0 = clock.wall_at(0)
    assert t0 is not None
    n = 24 * 3600 * SR
    assert clock.wall_at(n) == t0 + 24 * 3600
    assert clock.sample_at(t0 + 24 * 3600) == n
