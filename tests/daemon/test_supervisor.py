"""Supervisor vs real and misbehaving workers; the gap filler that keeps the picture alive meanwhile."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from engine.interface import ChunkSpec, FrameChunk
from plugins.hold import FrameGapFiller, HoldingSink
from soulx_live.bus import FrameSubscriber
from soulx_live.config import SoulxConfig, SupervisorConfig
from soulx_live.engine_client import EngineClient
from soulx_live.supervisor import Supervisor
from soulx_live.worker_launch import WorkerLaunch

pytestmark = pytest.mark.timeout(30)

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")
SR = 16000
SPF = 640  # samples per frame at 25 fps
SPEC = ChunkSpec(Fraction(25), SR, 5, 8, 8)
PERIOD = 0.04


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def config() -> Iterator[SoulxConfig]:
    root = Path(tempfile.mkdtemp(prefix="sxsv-"))  # short: ipc paths are limited to 107 bytes
    yield SoulxConfig.model_validate({
        "engine": {"kind": "lite", "lite": {"width": 64, "height": 64, "frames_per_chunk": 5}},
        "bus": {"runtime_dir": str(root / "rt"), "hwm_chunks": 4},
        "logging": {"level": "WARNING"},
    })
    shutil.rmtree(root, ignore_errors=True)


def sup_config(**kw: object) -> SupervisorConfig:
    base = {"init_timeout_s": 15.0, "heartbeat_timeout_s": 2.0, "shutdown_grace_s": 3.0, "max_restarts": 3,
            "restart_window_s": 60.0, "restart_backoff_s": (0.1,)}
    return SupervisorConfig(**{**base, **kw})


class States:
    """Records on_state callbacks."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, state: str, detail: str) -> None:
        self.seen.append((state, detail))

    @property
    def names(self) -> list[str]:
        return [s for s, _ in self.seen]


def wait_for(predicate, timeout_s: float, what: str) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def fake_supervisor(config: SoulxConfig, mode: str, states: States, **kw: object) -> Supervisor:
    launch = WorkerLaunch.from_config(config, argv=(sys.executable, str(FAKE_WORKER), mode))
    return Supervisor(sup_config(**kw), launch, on_state=states)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class ListSink:
    """A FrameSink that remembers what it got (for the HoldingSink)."""

    name = "list"

    def __init__(self) -> None:
        self.chunks: list[tuple[int, int, bool]] = []  # first_frame, n, held
        self.holds = 0
        self.wrapper: HoldingSink | None = None  # set to tag each chunk as held or engine-made

    def open(self, spec: ChunkSpec) -> None:
        self.spec = spec

    def write(self, chunk: FrameChunk) -> None:
        held = self.wrapper is not None and self.wrapper.filler is not None and self.wrapper.filler.holding
        self.chunks.append((chunk.first_frame, chunk.num_frames, held))

    def hold(self, reason: str) -> None:
        self.holds += 1

    def close(self) -> None:
        pass


class SinkThread(threading.Thread):
    """The daemon's sink loop, in small: recv with a one-frame timeout, then tick the HoldingSink."""

    def __init__(self, address: str, spec: ChunkSpec) -> None:
        super().__init__(name="test-sink", daemon=True)
        self.inner = ListSink()
        self.sink = HoldingSink(self.inner)
        self.inner.wrapper = self.sink
        self.sink.open(spec)
        self.real_writes = 0
        self.stop = threading.Event()
        self._address = address

    def run(self) -> None:
        with FrameSubscriber(self._address, hwm_chunks=16) as sub:
            while not self.stop.is_set():
                item = sub.recv(timeout_ms=int(PERIOD * 1000))
                if isinstance(item, FrameChunk):
                    self.sink.write(item)
                    self.real_writes += 1
                self.sink.tick()


class Speaker(threading.Thread):
    """Pushes noise to the EngineClient in real time, 40 ms packets, until stopped."""

    def __init__(self, client: EngineClient) -> None:
        super().__init__(name="test-speaker", daemon=True)
        self.client = client
        self.stop = threading.Event()

    def run(self) -> None:
        rng = np.random.default_rng(0)
        next_t = time.monotonic()
        while not self.stop.is_set():
            self.client.push_audio((0.3 * rng.standard_normal(SPF)).astype(np.float32))
            next_t += PERIOD
            time.sleep(max(0.0, next_t - time.monotonic()))


# --- real worker: kill -9 mid-speech --------------------------------------------------------------


def test_kill_9_mid_speech_restarts_and_the_picture_never_stops(config: SoulxConfig) -> None:
    states = States()
    cfg = sup_config()
    sup = Supervisor(cfg, WorkerLaunch.from_config(config, subscribers=1), on_state=states)
    spec = SPEC.__class__(Fraction(25), SR, 5, 64, 64)
    sink = SinkThread(WorkerLaunch.from_config(config).frames, spec)
    speaker = Speaker(sup.client)
    sink.start()
    sup.start()
    try:
        assert sup.wait_ready(15) == spec
        sup.client.start_session("s1")
        speaker.start()
        wait_for(lambda: sink.real_writes >= 4, 10, "chunks from the first worker")
        first_pid = sup.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        wait_for(lambda: sup.stats.restarts == 1 and sup.state == "running", cfg.init_timeout_s, "the restarted worker")
        assert sup.pid != first_pid
        before = sink.real_writes
        wait_for(lambda: sink.real_writes >= before + 3, 10, "chunks from the restarted worker (session resumed)")
    finally:
        speaker.stop.set()
        sup.close()
        sink.stop.set()
        sink.join(5)
    assert gone(first_pid)
    assert "restarting" in states.names and states.names[-1] == "stopped"
    assert "SIGKILL" in next(d for s, d in states.seen if s == "restarting")
    chunks = sink.inner.chunks
    # one continuous output timeline: every frame index exactly once, no gap (pts = index / fps)
    assert [first for first, _, _ in chunks] == list(np.cumsum([0] + [n for _, n, _ in chunks[:-1]]))
    held = [i for i, (_, _, h) in enumerate(chunks) if h]
    assert held, "no hold frames were emitted while the worker restarted"
    assert any(not h for _, _, h in chunks[held[-1] + 1:]), "real frames did not come back after the hold"


def test_close_is_staged_and_the_worker_exits_zero(config: SoulxConfig) -> None:
    states = States()
    sup = Supervisor(sup_config(), WorkerLaunch.from_config(config), on_state=states)
    sup.start()
    try:
        sup.wait_ready(15)
        pid = sup.pid
    finally:
        sup.close()
    assert sup.stats.exit_codes == [0] and states.names[-1] == "stopped" and gone(pid)


# --- fake workers: hang, stall, crash, never ready, config, deaf -----------------------------------


def test_hung_worker_is_detected_and_restarted(config: SoulxConfig) -> None:
    states = States()
    # the fake never makes a chunk, so it never leaves its start-up phase: that limit is the one that applies
    sup = fake_supervisor(config, "hang", states, heartbeat_timeout_s=0.5, startup_timeout_s=0.5, max_restarts=1,
                          restart_backoff_s=(0.0,))
    sup.start()
    try:
        sup.wait_ready(10)
        first = sup.pid
        wait_for(lambda: sup.state == "failed", 10, "the second hang to exhaust the budget")
    finally:
        sup.close()
    assert sup.stats.restarts == 1 and gone(first)
    assert states.names == ["starting", "running", "restarting", "running", "failed"]
    assert all("no heartbeat" in d for s, d in states.seen if s in ("restarting", "failed"))
    assert "restart budget exhausted" in sup.detail


def test_stalled_worker_that_still_heartbeats_is_restarted(config: SoulxConfig) -> None:
    states = States()
    sup = fake_supervisor(config, "stall", states, heartbeat_timeout_s=0.5, startup_timeout_s=0.5, max_restarts=0)
    sup.start()
    try:
        wait_for(lambda: sup.state == "failed", 10, "the stall to be detected")
    finally:
        sup.close()
    assert "no chunk for" in sup.detail and "stalled" in sup.detail


def test_restart_budget_exhausted_means_failed(config: SoulxConfig) -> None:
    states = States()
    sup = fake_supervisor(config, "crash", states, max_restarts=2, restart_backoff_s=(0.0, 0.05))
    sup.start()
    try:
        wait_for(lambda: sup.state == "failed", 20, "state failed")
    finally:
        sup.close()
    assert sup.stats.restarts == 2 and sup.stats.exit_codes == [1, 1, 1]
    assert states.names.count("restarting") == 2 and states.names[-1] == "failed"
    assert "exited with code 1" in sup.detail and "max_restarts" not in sup.detail
    assert "2 restarts within supervisor.restart_window_s=60 s" in sup.detail


def test_no_ready_within_init_timeout(config: SoulxConfig) -> None:
    sup = fake_supervisor(config, "never_ready", States(), init_timeout_s=0.5, max_restarts=0)
    sup.start()
    try:
        with pytest.raises(Exception, match="init_timeout_s"):
            sup.wait_ready(10)
    finally:
        sup.close()
    assert sup.state == "failed"


def test_config_error_is_not_restarted(config: SoulxConfig) -> None:
    sup = fake_supervisor(config, "config", States())
    sup.start()
    try:
        wait_for(lambda: sup.state == "failed", 10, "state failed")
    finally:
        sup.close()
    assert sup.stats.restarts == 0 and "weights_dir" in sup.detail


def test_worker_that_ignores_shutdown_and_sigterm_is_killed(config: SoulxConfig) -> None:
    sup = fake_supervisor(config, "deaf", States(), shutdown_grace_s=0.3)
    sup.start()
    sup.wait_ready(10)
    pid = sup.pid
    start = time.monotonic()
    sup.close()
    assert time.monotonic() - start < 0.3 + 2.0 + 2.0  # grace, SIGTERM wait, then SIGKILL
    assert sup.stats.exit_codes == [-signal.SIGKILL] and gone(pid) and sup.state == "stopped"


def test_the_daemon_side_never_imports_torch() -> None:
    import subprocess

    code = ("import sys, soulx_live.supervisor, soulx_live.worker, plugins.hold; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; sys.exit(f'imported {bad}' if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr


# --- the client -----------------------------------------------------------------------------------


class FakeSocket:
    def __init__(self, room: int) -> None:
        self.room, self.sent = room, []

    def send_multipart(self, parts, flags=0, copy=True):  # type: ignore[no-untyped-def]
        import zmq

        if self.room <= 0:
            raise zmq.Again()
        self.room -= 1
        self.sent.append(parts)


def test_client_drops_oldest_audio_keeps_control_and_resends_start_after_ready() -> None:
    from soulx_live import protocol as p

    client = EngineClient(SR, max_pending_s=0.1)  # 1600 samples
    client.start_session("s1")
    for _ in range(5):
        client.push_audio(np.zeros(640, np.float32))  # 3200 samples: the two oldest packets go
    assert client.dropped_samples == 3 * 640
    sock = FakeSocket(room=100)
    client.on_ready()
    client.flush(sock)
    msgs = [p.decode(parts[0]) for parts in sock.sent]
    assert isinstance(msgs[0], p.StartSession)
    assert [m.seq for m in msgs[1:]] == [3, 4]  # the newest audio survives, in order
    client.push_audio(np.zeros(640, np.float32))
    client.on_ready()  # a restarted worker: the session starts again before more audio
    sock2 = FakeSocket(room=1)
    assert client.flush(sock2) == 1 and isinstance(p.decode(sock2.sent[0][0]), p.StartSession)
    client.stop_session()
    client.on_ready()
    sock3 = FakeSocket(room=100)
    client.flush(sock3)
    assert [type(p.decode(parts[0])).__name__ for parts in sock3.sent] == ["AudioIn", "StopSession"]


# --- the gap filler (fake clock) ------------------------------------------------------------------


def chunk(first: int, n: int = 5, level: int = 7, session: str = "s") -> FrameChunk:
    frames = np.full((n, SPEC.height, SPEC.width, 3), level, np.uint8)
    return FrameChunk(session, first // 5, first, frames, np.ones(n * SPF, np.float32), first * SPF)


def run_timeline(filler: FrameGapFiller, arrivals: dict[float, FrameChunk], until: float, poll_s: float = 0.01):  # type: ignore[no-untyped-def]
    """Drive the filler like a sink thread: poll every ``poll_s``, feed chunks at their arrival times.
    Returns (emit time, chunk, held) for everything it emitted."""
    out = []
    pending = sorted(arrivals.items())
    steps = round(until / poll_s)
    for i in range(steps + 1):
        now = i * poll_s
        while pending and pending[0][0] <= now + 1e-9:
            out.append((now, filler.feed(pending.pop(0)[1], now), False))
        held = filler.poll(now)
        if held is not None:
            out.append((now, held, True))
    return out


def test_filler_is_silent_while_chunks_arrive_on_time() -> None:
    filler = FrameGapFiller(SPEC)
    out = run_timeline(filler, {0.2 * k + 0.001 * (k % 3): chunk(5 * k) for k in range(10)}, until=2.0)
    assert filler.filled_frames == 0 and not any(h for _, _, h in out)
    assert [c.first_frame for _, c, _ in out] == list(range(0, 50, 5))


def test_filler_holds_one_frame_per_period_through_an_outage_then_resumes() -> None:
    filler = FrameGapFiller(SPEC)
    arrivals = {0.2 * k: chunk(5 * k, level=k) for k in range(5)}  # content until t=1.0
    restarted = {2.5 + 0.2 * k: chunk(5 * k, level=100 + k, session="s") for k in range(3)}  # a new worker: frames from 0
    out = run_timeline(filler, {**arrivals, **restarted}, until=3.05)
    emitted = [(t, c) for t, c, _ in out]
    # contiguous output indices although the engine's numbering restarted at 0
    assert [c.first_frame for _, c in emitted] == list(np.cumsum([0] + [c.num_frames for _, c in emitted[:-1]]))
    assert all(c.audio_t0 == c.first_frame * SPF for _, c in emitted)
    held = [(t, c) for t, c, h in out if h]
    assert all(c.num_frames == 1 for _, c in held)  # polled every 10 ms: one frame per period, no bursts
    # wall time of each held frame vs. its slot: the first is due one period after the content ran out,
    # each next one period later (never more than one poll interval late)
    slot_start = 1.0
    for i, (t, c) in enumerate(held):
        due = slot_start + i * PERIOD + filler.hold_after_s
        assert due - 1e-9 <= t <= due + 0.01 + 1e-9
    assert len(held) == int((2.5 - 1.0 - PERIOD) / PERIOD) + 1
    np.testing.assert_array_equal(held[0][1].frames[0], chunk(20, level=4).frames[-1])  # the last frame repeated
    assert not held[0][1].audio.any()  # with silence
    # the engine's frames come back and go out untouched
    back = [c for t, c, h in out if not h and t >= 2.5]
    assert len(back) == 3 and back[0].frames[0, 0, 0, 0] == 100 and back[0].audio.all()
    assert not filler.holding


def test_filler_emits_all_due_frames_after_a_late_poll_and_never_before_the_first_chunk() -> None:
    filler = FrameGapFiller(SPEC, hold_after_s=0.0)
    assert filler.poll(100.0) is None  # nothing to repeat yet
    filler.feed(chunk(0), now=10.0)  # covers 10.0 .. 10.2
    assert filler.poll(10.19) is None
    late = filler.poll(10.2 + 0.5)  # a stalled sink thread: 0.5 s of slots ran out at once
    assert late is not None and late.num_frames == 13 and late.first_frame == 5
    assert filler.poll(10.7) is None
    resumed = filler.feed(chunk(0), now=10.71)  # appended after the held frames (they cover until 10.72)
    assert resumed.first_frame == 18 and filler.covered_until == pytest.approx(10.2 + 13 * PERIOD + 0.2)


def test_holding_sink_calls_hold_once_per_outage() -> None:
    now = [0.0]
    inner = ListSink()
    sink = HoldingSink(inner, clock=lambda: now[0])
    sink.open(SPEC)
    sink.write(chunk(0))
    for step in range(1, 30):
        now[0] = step * 0.02
        sink.tick()
    sink.write(chunk(5))
    now[0] = 5.0
    sink.tick()
    assert inner.holds == 2
    assert [c[0] for c in inner.chunks] == list(np.cumsum([0] + [c[1] for c in inner.chunks[:-1]]))


# --- start-up phase and replay --------------------------------------------------------------------

SLOW_FIRST_CHUNK = """
import sys, time
from engine.lite import engine as lite
make = lite.LiteSession.next_chunk
def slow_first(self):
    if not getattr(self, "_warmed", False):
        self._warmed = True
        time.sleep(2.0)  # a warm-up: twice the heartbeat timeout, with no heartbeat meanwhile
    return make(self)
lite.LiteSession.next_chunk = slow_first
from soulx_live.worker import main
sys.exit(main())
"""


def test_a_first_chunk_slower_than_the_heartbeat_timeout_is_start_up_not_a_hang(config: SoulxConfig) -> None:
    """The real worker, its first chunk 2 s: with heartbeat_timeout_s=1 it is not restarted (start-up has its own
    limit, startup_timeout_s), and once it has made a chunk the 1 s limit applies."""
    states = States()
    launch = WorkerLaunch.from_config(config, argv=(sys.executable, "-c", SLOW_FIRST_CHUNK))
    sup = Supervisor(sup_config(heartbeat_timeout_s=1.0), launch, on_state=states)
    sup.start()
    try:
        sup.wait_ready(15)
        sup.client.start_session("s")
        speaker = Speaker(sup.client)
        speaker.start()
        wait_for(lambda: sup.stats.chunks_done >= 5, 15, "chunks after the slow first one")
        speaker.stop.set()
        speaker.join(2)
    finally:
        sup.close()
    assert sup.stats.restarts == 0, states.seen
    assert "stalled" not in states.names  # warming up is not a stall either


class FakeWorkerSocket:
    """A ctrl socket that keeps what it was sent."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, parts: list[bytes], flags: int = 0, copy: bool = True) -> None:
        self.sent.append(parts)


def _audio(sent: list[list[bytes]]) -> list[tuple[int, int, bool]]:
    from soulx_live import protocol as p

    msgs = [p.decode(parts[0]) for parts in sent]
    return [(m.t0, m.n_samples, m.replay) for m in msgs if isinstance(m, p.AudioIn)]


def test_client_replays_what_the_dead_worker_had_not_rendered_and_reports_what_it_could_not_keep() -> None:
    from soulx_live import protocol as p

    lost: list[tuple[int, int]] = []
    client = EngineClient(SR, max_pending_s=0.2, on_audio_lost=lambda start, n: lost.append((start, n)))  # 3200
    client.start_session("s")
    for _ in range(4):
        client.push_audio(np.zeros(640, np.float32))
    sock = FakeWorkerSocket()
    client.on_ready()
    client.flush(sock)
    assert _audio(sock.sent) == [(0, 640, False), (640, 640, False), (1280, 640, False), (1920, 640, False)]
    # the worker put 1000 samples into published chunks, then died
    client.on_progress(p.Heartbeat(mono_ns=0, chunks_done=1, session_id="s", rendered_t=1000))
    client.on_worker_gone()
    client.push_audio(np.zeros(640, np.float32))  # arrives while it is away
    successor = FakeWorkerSocket()
    client.on_ready()
    client.flush(successor)
    assert isinstance(p.decode(successor.sent[0][0]), p.StartSession)
    # from the dead worker's last rendered sample on, once, in order, then what came meanwhile: all owed
    assert _audio(successor.sent) == [(1000, 280, True), (1280, 640, True), (1920, 640, True), (2560, 640, True)]
    assert lost == [] and client.replayed_samples == 1560
    # the successor renders little and dies too; meanwhile more audio than the 0.2 s kept arrives: the oldest is
    # lost, reported as one span on the session timeline
    client.on_worker_gone()
    for _ in range(3):
        client.push_audio(np.zeros(640, np.float32))
    assert lost == [(1000, 280), (1280, 640)] and client.dropped_samples == 920
    # a barge-in drops what is queued on purpose: not lost, never replayed
    client.interrupt()
    client.on_worker_gone()
    assert client.dropped_samples == 920 and client.unrendered_samples == 0
