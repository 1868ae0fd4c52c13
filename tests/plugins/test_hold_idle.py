"""The hold fallback chain (last frame -> cached idle loop -> lite renderer) and barge-in in HoldingSink, on a fake clock."""
from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from engine.interface import ChunkSpec, FrameChunk
from plugins.hold import FrameGapFiller, HoldingSink, IdleCache, IdleConfig, ping_pong

pytestmark = pytest.mark.timeout(20)

SPEC = ChunkSpec(Fraction(25), 16000, 5, 8, 8)
SPF = SPEC.samples_per_frame
PERIOD = 0.04
SPEECH_TAG, QUIET_TAG = 255, 10


def engine_chunk(first: int, speech: list[bool] | bool, *, epoch: int = 0, session: str = "s") -> FrameChunk:
    """Frames tagged with their engine index (channel 0: index % 250 + 1, channel 2: 50 + index // 250)
    and whether they speak (channel 1); the audio is noise for speaking frames and exact silence for the others."""
    flags = [speech] * SPEC.frames_per_chunk if isinstance(speech, bool) else speech
    n = len(flags)
    frames = np.full((n, SPEC.height, SPEC.width, 3), 50, np.uint8)
    rng = np.random.default_rng(first)
    audio = np.zeros(n * SPF, np.float32)
    for i, loud in enumerate(flags):
        frames[i, ..., 0] = (first + i) % 250 + 1
        frames[i, ..., 2] = 50 + (first + i) // 250
        frames[i, ..., 1] = SPEECH_TAG if loud else QUIET_TAG
        if loud:
            audio[i * SPF:(i + 1) * SPF] = 0.3 * rng.standard_normal(SPF)
    return FrameChunk(session, first // 5, first, frames, audio, first * SPF, epoch=epoch)


def code(frame: np.ndarray) -> int:
    return (int(frame[0, 0, 2]) - 50) * 250 + int(frame[0, 0, 0]) - 1


def drive(filler: FrameGapFiller, chunks: list[FrameChunk], until: float, poll_s: float = 0.01):  # type: ignore[no-untyped-def]
    """Chunk k arrives at 0.2 k s (real time); poll every ``poll_s``. Returns [(chunk, held)]."""
    out = []
    pending = list(chunks)
    for i in range(round(until / poll_s) + 1):
        now = i * poll_s
        while pending and pending[0].first_frame / 25 <= now + 1e-9:
            out.append((filler.feed(pending.pop(0), now), False))
        held = filler.poll(now)
        if held is not None:
            out.append((held, True))
    return out


def held_frames(out) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    return [frame for chunk, held in out if held for frame in chunk.frames]


def test_ping_pong_walks_back_from_the_newest_without_jumps() -> None:
    assert [ping_pong(4, k) for k in range(9)] == [3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert [ping_pong(1, k) for k in range(3)] == [0, 0, 0]


def test_outage_plays_the_idle_loop_after_the_last_frame_never_speech() -> None:
    idle = IdleConfig(after_s=0.5, cache_s=2.0, min_loop_s=1.0, settle_s=0.3, lead_s=0.12)
    filler = FrameGapFiller(SPEC, idle=idle)
    chunks = [engine_chunk(5 * k, False) for k in range(15)] + [engine_chunk(75, True), engine_chunk(80, True)]
    out = drive(filler, chunks, until=3.4 + 0.04 + 0.5 + 2.5)  # content until 3.4 s, then an outage
    firsts = [c.first_frame for c, _ in out]
    assert firsts == list(np.cumsum([0] + [c.num_frames for c, _ in out[:-1]]))  # contiguous output indices
    assert all(not c.audio.any() for c, h in out if h)  # held frames play silence
    frames = held_frames(out)
    # the first 0.5 s: the last frame (a speaking one) repeated
    head = frames[:13]  # hold slots starting 0.00 .. 0.48 s after the content ran out
    assert all(code(f) == 84 for f in head)
    loop = frames[len(head):]
    codes = [code(f) for f in loop]
    assert len(loop) > 50 and filler.idle_frames == len(loop)
    assert all(int(f[0, 0, 1]) == QUIET_TAG for f in loop), "a speaking frame was played as idle"
    # frames 72..74 are within lead_s of the speech, 0..7 lack settle_s of silence before them; the
    # cache keeps the newest 2 s (50 frames) of the rest: 22..71, newest first, ping-pong
    assert set(codes) == set(range(22, 72))
    assert codes[0] == 71 and all(abs(a - b) == 1 for a, b in itertools.pairwise(codes))
    assert len(set(codes)) > 1, "one frozen frame instead of an idle loop"
    assert all(f.any() for f in frames)  # never black


def test_frames_near_speech_are_never_cached() -> None:
    """Random speech/silence per frame: every cached frame has settle_s of silence before it and lead_s after."""
    rng = np.random.default_rng(7)
    idle = IdleConfig(cache_s=4.0, settle_s=0.2, lead_s=0.12)
    cache = IdleCache(SPEC, idle)
    flags: list[bool] = []
    for k in range(400):  # 80 s: runs of silence of random length, short bursts of speech
        chunk_flags = [bool(rng.random() < 0.08) for _ in range(5)]
        flags += chunk_flags
        cache.add(engine_chunk(5 * k, chunk_flags).frames, engine_chunk(5 * k, chunk_flags).audio)
        for frame in cache.snapshot():
            k_frame = code(frame)
            assert not any(flags[max(0, k_frame - 5):k_frame + 3 + 1]), f"frame {k_frame} is near speech"
        assert cache.frames_held <= 2 * cache.max_frames + 9  # two loops of copies + the decision window


def test_speech_only_keeps_the_last_frame_and_never_goes_black() -> None:
    filler = FrameGapFiller(SPEC)
    chunks = [engine_chunk(5 * k, [True, False, False, True, False]) for k in range(10)]
    out = drive(filler, chunks, until=2.0 + 3.0)
    frames = held_frames(out)
    assert len(frames) > 60 and filler.idle_frames == 0
    assert all(code(f) == 49 and f.any() for f in frames)


def test_idle_cache_memory_is_bounded_and_a_restart_breaks_the_run() -> None:
    cache = IdleCache(SPEC, IdleConfig(cache_s=2.0, min_loop_s=1.0))
    for k in range(3000):  # 10 minutes of silence
        chunk = engine_chunk(5 * k, False)
        cache.add(chunk.frames, chunk.audio)
    assert len(cache.snapshot()) == cache.max_frames == 50
    assert cache.frames_held <= 2 * cache.max_frames + 11
    before = cache.snapshot()
    cache.break_run()  # e.g. the worker restarted: its frames do not continue these
    for k in range(5):  # 1 s of new silence: not yet min_loop_s of settled frames, the old loop stays
        chunk = engine_chunk(5 * k, False, session="t")
        cache.add(chunk.frames, chunk.audio)
    assert cache.snapshot() == before
    for k in range(5, 20):
        chunk = engine_chunk(5 * k, False, session="t")
        cache.add(chunk.frames, chunk.audio)
    assert code(cache.snapshot()[-1]) == 99 - 3  # the newer stretch took over (lead_s frames undecided)


class InterruptibleList:
    """A sink with a queue that drops on interrupt."""

    name = "q"

    def __init__(self) -> None:
        self.written: list[FrameChunk] = []
        self.interrupts: list[int] = []

    def open(self, spec: ChunkSpec) -> None:
        pass

    def write(self, chunk: FrameChunk) -> None:
        self.written.append(chunk)

    def hold(self, reason: str) -> None:
        pass

    def interrupt(self, epoch: int) -> None:
        self.interrupts.append(epoch)

    def close(self) -> None:
        pass


def test_holding_sink_interrupt_forwards_drops_stale_chunks_and_holds_at_once() -> None:
    now = [0.0]
    inner = InterruptibleList()
    sink = HoldingSink(inner, clock=lambda: now[0])
    sink.open(SPEC)
    for k in range(5):  # a burst: 1 s of content scheduled at t=0
        sink.write(engine_chunk(5 * k, True))
    assert sink.filler is not None and sink.filler.covered_until == pytest.approx(1.0)
    now[0] = 0.3
    sink.interrupt(1)
    assert inner.interrupts == [1] and sink.epoch == 1
    sink.interrupt(1)  # idempotent
    assert inner.interrupts == [1]
    n = len(inner.written)
    sink.write(engine_chunk(25, True, epoch=0))  # stale: still in flight from the old epoch
    assert len(inner.written) == n and sink.stale_dropped == 1
    now[0] = 0.3 + 2 * PERIOD
    assert sink.tick() == 2  # the dropped content no longer counts: hold frames right away
    assert inner.written[-1].epoch == 1
    sink.write(engine_chunk(30, False, epoch=1))
    assert inner.written[-1].epoch == 1 and inner.written[-1].frames[0, 0, 0, 1] == QUIET_TAG
    sink.write(engine_chunk(35, False, epoch=2))  # a newer epoch without interrupt(): it is one
    assert inner.interrupts == [1, 2] and sink.epoch == 2
    firsts = [c.first_frame for c in inner.written]
    assert firsts == list(np.cumsum([0] + [c.num_frames for c in inner.written[:-1]]))


def test_holding_sink_interrupt_without_inner_support() -> None:
    class Plain:
        name = "plain"

        def __init__(self) -> None:
            self.written: list[FrameChunk] = []

        def open(self, spec: ChunkSpec) -> None:
            pass

        def write(self, chunk: FrameChunk) -> None:
            self.written.append(chunk)

        def hold(self, reason: str) -> None:
            pass

        def close(self) -> None:
            pass

    inner = Plain()
    sink = HoldingSink(inner, clock=lambda: 0.0)
    sink.interrupt(3)  # before open(): remembered
    sink.open(SPEC)
    sink.write(engine_chunk(0, False, epoch=2))
    sink.write(engine_chunk(5, False, epoch=3))
    assert [c.epoch for c in inner.written] == [3] and sink.stale_dropped == 1


def test_no_idle_frames_but_a_face_the_lite_renderer_keeps_it_alive() -> None:
    """Last fallback: the engine spoke all along (nothing idle cached) and then went away; the last frame has a
    face, so after ``after_s`` the lite renderer animates it (blinks, sway) instead of freezing it."""
    from engine.interface import SessionRequest
    from engine.lite.engine import LiteConfig, LiteEngine

    spec = ChunkSpec(Fraction(25), 16000, 5, 256, 256)
    lite = LiteEngine(LiteConfig(width=256, height=256, frames_per_chunk=5)).start_session(SessionRequest(session_id="x"))
    filler = FrameGapFiller(spec)
    rng = np.random.default_rng(0)
    now = 0.0
    for k in range(5):  # 1 s of speech
        lite.push_audio(0.3 * rng.standard_normal(spec.samples_per_chunk).astype(np.float32))
        filler.feed(lite.next_chunk(), now)
        now += 0.2
    last = filler._last.copy()  # type: ignore[union-attr]
    held: list[np.ndarray] = []
    for i in range(1, 201):  # 2 s of outage
        chunk = filler.poll(now + i * 0.01)
        if chunk is not None:
            held += list(chunk.frames)
        if i == 40:  # 0.4 s: the set-up began at 0.25 s in a background thread; a real clock gives it this time
            assert filler.wait_fallback(30.0)
    assert filler.idle_frames == 0 and filler.lite_frames > 20
    assert all(f.any() for f in held)  # never black
    lively = held[-filler.lite_frames:]
    assert len({f.tobytes() for f in lively}) > 10, "the lite fallback froze"
    assert np.abs(lively[0].astype(int) - last.astype(int)).mean() < 20  # the same face, not another picture


def test_the_lite_fallback_is_set_up_off_the_sink_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting the lite renderer up (face detection) takes longer than a frame period: it must not stall the
    thread that polls the filler. A set-up that blocks until released: polling goes on with the last frame,
    and once released the animated frames follow."""
    import threading

    import plugins.lite_idle

    release, built_on = threading.Event(), []

    class SlowAnimator:
        def __init__(self, frame: np.ndarray, spec: ChunkSpec) -> None:
            built_on.append(threading.current_thread().name)
            assert release.wait(30.0)
            self.frame = frame

        def next_frame(self) -> np.ndarray:
            return 255 - self.frame

    monkeypatch.setattr(plugins.lite_idle, "LiteIdleAnimator", SlowAnimator)
    filler = FrameGapFiller(SPEC)
    last = engine_chunk(0, True)
    filler.feed(last, 0.0)  # speech only: no idle loop, so the lite renderer is the fallback
    held = []
    for i in range(1, 101):  # 1 s of outage on a fake clock; after_s = 0.5
        chunk = filler.poll(0.2 + i * 0.01)
        if chunk is not None:
            held += list(chunk.frames)
    assert built_on and built_on[0] != threading.current_thread().name
    assert len(held) >= 20 and all(np.array_equal(f, last.frames[-1]) for f in held), "held the last frame meanwhile"
    release.set()
    assert filler.wait_fallback(30.0)
    chunk = filler.poll(1.25)
    assert chunk is not None and np.array_equal(chunk.frames[0], 255 - last.frames[-1])
    assert filler.lite_frames >= 1
