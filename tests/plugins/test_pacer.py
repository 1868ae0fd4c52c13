"""Media-clock pacing (plugins.pacer): 25 -> 30 fps by pts, holding, gaps, drift resets, tick clock."""
from __future__ import annotations

import math

import numpy as np
import pytest

from plugins.pacer import MediaClockPacer, TickClock


def _frames(first: int, n: int) -> list[np.ndarray]:
    return [np.full((2, 2, 3), (first + i) % 256, np.uint8) for i in range(n)]


def _show(pacer: MediaClockPacer, ticks: range) -> list[int | None]:
    out = []
    for k in ticks:
        due = pacer.frame_for_tick(k)
        out.append(None if due is None else due[0])
    return out


def test_25_to_30_fps_shows_the_latest_frame_at_or_before_each_tick_pts() -> None:
    pacer = MediaClockPacer(25, 30)
    pacer.push(0, _frames(0, 50))
    shown = _show(pacer, range(60))
    assert shown == [math.floor(k * 25 / 30) for k in range(60)]  # pts(frame) <= pts(tick) < pts(frame + 1)
    assert shown[:7] == [0, 0, 1, 2, 3, 4, 5]
    assert sorted(set(shown)) == list(range(50))  # 25 -> 30 never skips a frame
    assert pacer.stats.skipped_frames == 0 and pacer.stats.starved_ticks == 0


def test_frames_returned_are_the_pushed_frames() -> None:
    pacer = MediaClockPacer(25, 30)
    frames = _frames(0, 5)
    pacer.push(0, frames)
    index, frame = pacer.frame_for_tick(0)  # type: ignore[misc]
    assert index == 0 and frame is frames[0]


def test_nothing_before_the_first_frames_then_latency_ticks_of_buffer() -> None:
    pacer = MediaClockPacer(25, 30, latency_ticks=3)
    assert _show(pacer, range(4)) == [None] * 4  # caller shows its slate
    pacer.push(100, _frames(100, 25))  # anchored at tick 4 + 3 = 7
    assert _show(pacer, range(4, 14)) == [None, None, None, 100, 100, 101, 102, 103, 104, 105]


def test_starving_holds_the_last_frame_and_counts_it() -> None:
    pacer = MediaClockPacer(25, 30)
    pacer.push(0, _frames(0, 5))
    shown = _show(pacer, range(12))
    assert shown == [0, 0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4]
    assert pacer.stats.starved_ticks == 6


def test_a_gap_holds_the_frame_before_it_and_stays_on_the_clock() -> None:
    pacer = MediaClockPacer(25, 30)
    pacer.push(0, _frames(0, 5))
    pacer.push(10, _frames(10, 5))  # frames 5..9 were dropped upstream
    shown = _show(pacer, range(18))
    assert shown == [0, 0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 10, 10, 11, 12, 13, 14]
    assert pacer.stats.resets == 0


def test_a_slightly_late_chunk_skips_its_past_frames() -> None:
    pacer = MediaClockPacer(25, 30, max_drift_frames=6)
    pacer.push(0, _frames(0, 5))
    _show(pacer, range(9))  # the clock is at frame 7 by now
    pacer.push(5, _frames(5, 10))  # 2 frames late (clock at 7): within the drift budget
    assert _show(pacer, range(9, 12)) == [7, 8, 9]
    assert pacer.stats.resets == 0 and pacer.stats.skipped_frames == 2  # 5 and 6 were never shown


def test_a_late_chunk_never_shows_frames_older_than_the_one_on_screen() -> None:
    pacer = MediaClockPacer(25, 30, max_drift_frames=6)
    pacer.push(0, _frames(0, 11))
    assert _show(pacer, range(13))[-1] == 10
    pacer.push(8, _frames(8, 2))  # already shown (or skipped): dropped, not replayed
    assert _show(pacer, range(13, 15)) == [10, 10]
    pacer.push(10, _frames(10, 5))  # overlaps: only 11.. are new
    assert _show(pacer, range(15, 17)) == [12, 13]  # on the clock again (tick 15 -> frame 12)


def test_drift_beyond_the_budget_reanchors_at_the_next_tick() -> None:
    pacer = MediaClockPacer(25, 30, max_drift_frames=6)
    pacer.push(0, _frames(0, 5))
    _show(pacer, range(30))  # starving: the clock reaches frame 25
    pacer.push(5, _frames(5, 10))  # 20 frames behind: engine restarted or stalled
    assert _show(pacer, range(30, 37)) == [5, 5, 6, 7, 8, 9, 10]
    assert pacer.stats.resets == 1


def test_a_timeline_jump_ahead_or_a_new_session_reanchors() -> None:
    pacer = MediaClockPacer(25, 30, capacity=50)
    pacer.push(0, _frames(0, 5), session="a")
    _show(pacer, range(3))
    pacer.push(1000, _frames(1000, 5), session="a")
    assert _show(pacer, range(3, 5)) == [1000, 1000]
    pacer.push(1005, _frames(1005, 5), session="b")  # same timeline position, new session: still a reset
    assert pacer.stats.resets == 2


def test_resync_keeps_the_last_frame_until_the_next_chunk_starts() -> None:
    pacer = MediaClockPacer(25, 30)
    pacer.push(0, _frames(0, 5))
    _show(pacer, range(4))
    pacer.resync()  # the engine is holding
    assert _show(pacer, range(4, 8)) == [2, 2, 2, 2]
    pacer.push(3, _frames(3, 5))
    assert _show(pacer, range(8, 10)) == [3, 3]


def test_ticks_must_not_go_backwards() -> None:
    pacer = MediaClockPacer(25, 30)
    pacer.frame_for_tick(5)
    pacer.frame_for_tick(5)  # asking again for the current tick is allowed
    with pytest.raises(ValueError, match="backwards"):
        pacer.frame_for_tick(3)


def test_buffer_is_bounded() -> None:
    pacer = MediaClockPacer(25, 30, capacity=10)
    pacer.push(0, _frames(0, 30))
    assert pacer.stats.skipped_frames == 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, dt: float) -> None:
        self.slept.append(dt)
        self.now += dt


def test_tick_clock_sleeps_until_each_tick_is_due() -> None:
    fake = FakeClock()
    clock = TickClock(30, clock=fake, sleep=fake.sleep)
    ticks = [clock.wait_next() for _ in range(90)]
    assert ticks == list(range(90))
    assert fake.now == pytest.approx(1000.0 + 89 / 30)  # 90 frames span 89 periods: 30 per second


def test_tick_clock_skips_ahead_after_a_stall_instead_of_bursting() -> None:
    fake = FakeClock()
    clock = TickClock(30, clock=fake, sleep=fake.sleep, max_late_ticks=3)
    assert [clock.wait_next() for _ in range(3)] == [0, 1, 2]
    fake.now += 2.0  # a 2 s stall
    tick = clock.wait_next()
    assert tick == math.floor((fake.now - 1000.0) * 30 + 1e-9) and clock.skipped == tick - 3
    fake.now += 0.05  # small lateness is caught up frame by frame, not skipped
    before = clock.skipped
    assert clock.wait_next() == tick + 1 and clock.skipped == before
