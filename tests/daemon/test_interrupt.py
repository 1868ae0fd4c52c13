"""Barge-in epochs end to end: the bus carries them, the worker drops stale audio and goes idle, the
client queues Interrupt ahead of later audio, a restarted worker keeps the epoch; supervisor health checks."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import zmq

from engine.interface import ChunkSpec, FrameChunk, SessionRequest
from soulx_live import protocol as p
from soulx_live.bus import FramePublisher, FrameSubscriber
from soulx_live.config import SoulxConfig, SupervisorConfig
from soulx_live.engine_client import EngineClient
from soulx_live.engine_worker import EngineWorker, WorkerOptions
from soulx_live.supervisor import Supervisor
from soulx_live.worker_launch import WorkerLaunch

pytestmark = pytest.mark.timeout(30)

SR = 16000
SPF = 640
FAKE_WORKER = Path(__file__).with_name("fake_worker.py")
_addr = iter(range(10**6))


def lite_config(root: Path, size: int = 64) -> SoulxConfig:
    return SoulxConfig.model_validate({
        "engine": {"kind": "lite", "lite": {"width": size, "height": size, "frames_per_chunk": 5}},
        "bus": {"runtime_dir": str(root / "rt"), "hwm_chunks": 16},
        "logging": {"level": "WARNING"},
    })


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def silent_reference(config: SoulxConfig, first_frame: int, n: int) -> np.ndarray:
    """Frames ``first_frame .. first_frame+n-1`` of a fresh session of the same engine fed only silence."""
    from soulx_live.factory.engine import build_engine

    session = build_engine(config).start_session(SessionRequest(session_id="ref"))
    session.push_audio(np.zeros((first_frame + n + 5) * SPF, np.float32))
    frames = []
    while sum(f.shape[0] for f in frames) < first_frame + n:
        frames.append(session.next_chunk().frames)
    return np.concatenate(frames)[first_frame:first_frame + n]


@dataclass
class Rig:
    """An in-process EngineWorker on inproc sockets: deterministic, one step at a time."""

    worker: EngineWorker
    sub: FrameSubscriber
    events: zmq.Socket

    def send(self, msg: p.Message, *extra: bytes) -> None:
        self.worker._dispatch([p.encode(msg), *extra])

    def audio(self, pcm: np.ndarray, seq: int = 0, session_id: str = "s") -> None:
        data = pcm.astype("<f4")
        self.send(p.AudioIn(session_id=session_id, seq=seq, t0=0, n_samples=data.shape[0], sample_rate=SR), data.tobytes())

    def steps(self) -> list[FrameChunk]:
        while self.worker._can_step():
            self.worker._step()
        got = []
        while (chunk := self.sub.recv(200)) is not None:
            assert isinstance(chunk, FrameChunk)
            got.append(chunk)
        return got

    def errors(self) -> list[p.EngineError]:
        out = []
        while self.events.poll(50):
            msg = p.decode(self.events.recv())
            if isinstance(msg, p.EngineError):
                out.append(msg)
        return out


@pytest.fixture
def config() -> Iterator[SoulxConfig]:
    root = Path(tempfile.mkdtemp(prefix="sxin-"))
    yield lite_config(root)
    shutil.rmtree(root, ignore_errors=True)


def make_rig(engine: object, **options: object) -> tuple[Rig, list[zmq.Socket], FramePublisher]:
    ctx = zmq.Context.instance()
    n = next(_addr)
    events_in, events_out, ctrl = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    events_in.bind(f"inproc://int-events-{n}")
    events_out.connect(f"inproc://int-events-{n}")
    publisher = FramePublisher(f"inproc://int-frames-{n}", hwm_chunks=64, context=ctx)
    sub = FrameSubscriber(f"inproc://int-frames-{n}", hwm_chunks=64, context=ctx)
    assert publisher.wait_for_subscribers(1, 5)
    worker = EngineWorker(engine, WorkerOptions(ctrl="", events="", frames="", **options), ctrl, events_out,  # type: ignore[arg-type]
                          publisher)
    return Rig(worker, sub, events_in), [events_in, events_out, ctrl], publisher


@pytest.fixture
def lite_rig(config: SoulxConfig) -> Iterator[Rig]:
    from soulx_live.factory.engine import build_engine

    rig, socks, publisher = make_rig(build_engine(config))
    yield rig
    for sock in socks:
        sock.close(linger=0)
    publisher.close(linger_ms=0)
    rig.sub.close()


# --- bus and protocol -----------------------------------------------------------------------------


def test_the_bus_carries_the_epoch() -> None:
    spec = ChunkSpec(Fraction(25), SR, 5, 8, 8)
    ctx = zmq.Context.instance()
    with FramePublisher("inproc://epoch-bus", context=ctx) as pub, FrameSubscriber("inproc://epoch-bus", context=ctx) as sub:
        assert pub.wait_for_subscribers(1, 5)
        frames = np.zeros((5, 8, 8, 3), np.uint8)
        chunk = FrameChunk("s", 0, 0, frames, np.zeros(5 * SPF, np.float32), 0, epoch=3)
        pub.publish(chunk, spec)
        pub.publish(chunk, spec, epoch=5)  # an explicit epoch wins
        got = [sub.recv(2000), sub.recv(2000)]
    assert [c.epoch for c in got] == [3, 5]  # type: ignore[union-attr]
    assert FrameChunk("s", 0, 0, frames, np.zeros(5 * SPF, np.float32), 0).epoch == 0  # old callers unchanged


# --- the worker, in process -----------------------------------------------------------------------


def test_interrupt_drops_staged_audio_and_the_next_chunk_is_silent_idle(lite_rig: Rig, config: SoulxConfig) -> None:
    rig = lite_rig
    rig.send(p.StartSession(session_id="s"))
    rig.audio(speech(1.6))  # 8 chunks of speech, staged at once
    rig.worker._feed()
    for _ in range(2):  # the engine has made two of them when the user barges in
        rig.worker._step()
    rig.send(p.Interrupt(session_id="s", epoch=1))
    assert rig.worker.epoch == 1 and rig.worker.interrupted_samples == int(1.6 * SR) - 2 * 5 * SPF
    assert rig.worker._staged_samples == 0
    got = rig.steps()
    assert [c.epoch for c in got] == [0, 0, 1]  # the primed idle chunk comes out at once, nothing else
    assert [c.first_frame for c in got] == [0, 5, 10]  # the timeline continues, no index reused
    idle = got[2]
    assert not idle.audio.any()
    reference = silent_reference(config, 10, 5)
    np.testing.assert_array_equal(idle.frames, reference)  # the mouth is closed: the silent rendering
    assert not np.array_equal(got[1].frames, silent_reference(config, 5, 5)), "speech frames look idle: test is blind"
    rig.audio(np.zeros(SR // 2, np.float32), seq=1)  # the daemon goes on feeding (silence now)
    later = rig.steps()
    assert later and all(c.epoch == 1 for c in later)
    assert [c.first_frame for c in later] == list(range(15, 15 + 5 * len(later), 5))


def test_stale_or_foreign_interrupts(lite_rig: Rig) -> None:
    rig = lite_rig
    rig.send(p.StartSession(session_id="s"))
    rig.send(p.Interrupt(session_id="s", epoch=2))
    rig.steps()
    rig.audio(speech(0.5))
    rig.send(p.Interrupt(session_id="s", epoch=2))  # a repeat: ignored, the audio stays
    assert rig.worker._staged_samples == int(0.5 * SR) and rig.worker.epoch == 2
    rig.send(p.Interrupt(session_id="other", epoch=3))  # another session named: the active one is cut all the same
    assert rig.worker.epoch == 3 and rig.worker._staged_samples == 0 and not rig.errors()
    rig.audio(speech(0.5), seq=1)
    rig.send(p.Interrupt(session_id="", epoch=4))  # "" too
    assert rig.worker._staged_samples == 0 and rig.worker.epoch == 4
    assert [c.epoch for c in rig.steps()] == [4]  # epoch 3's idle chunk was cut before it was made


def test_phonemes_reach_sessions_that_take_them_and_are_ignored_otherwise() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from daemon_fakes import FakeEngine, FakeSession

    class PhonemeSession(FakeSession):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, **kw)  # type: ignore[arg-type]
            self.spans: list[tuple[int, int, str]] = []

        def push_phonemes(self, spans: list[tuple[int, int, str]]) -> None:
            self.spans += spans

    class PhonemeEngine(FakeEngine):
        def start_session(self, request: SessionRequest) -> PhonemeSession:
            return PhonemeSession(self.spec, request.session_id)

    for engine, takes in ((PhonemeEngine(width=8, height=8), True), (FakeEngine(width=8, height=8), False)):
        rig, socks, publisher = make_rig(engine)
        try:
            rig.send(p.StartSession(session_id="s"))
            rig.send(p.PhonemesIn(session_id="s", spans=[(0, 800, "h"), (800, 2400, "@U")]))
            rig.send(p.PhonemesIn(session_id="nope", spans=[(0, 1, "a")]))
            assert [e.kind for e in rig.errors()] == ["bad_request"]
            if takes:
                assert rig.worker._session.spans == [(0, 800, "h"), (800, 2400, "@U")]  # type: ignore[union-attr]
        finally:
            for sock in socks:
                sock.close(linger=0)
            publisher.close(linger_ms=0)
            rig.sub.close()


# --- the client -----------------------------------------------------------------------------------


class Room:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, parts, flags=0, copy=True):  # type: ignore[no-untyped-def]
        self.sent.append(parts)


def test_client_interrupt_drops_queued_audio_and_goes_ahead_of_later_audio() -> None:
    client = EngineClient(SR)
    assert client.epoch == 0
    assert client.interrupt() == 1  # no session: the epoch still moves (a restarted worker starts at it)
    client.start_session("s")
    for _ in range(3):
        client.push_audio(np.zeros(640, np.float32))
    client.push_phonemes([(0, 640, "a")])
    assert client.interrupt() == 2 and client.epoch == 2 and client.interrupted_samples == 3 * 640
    client.push_audio(np.ones(640, np.float32))
    client.push_phonemes([(1920, 2560, "b")])
    sock = Room()
    client.flush(sock)  # type: ignore[arg-type]
    msgs = [p.decode(parts[0]) for parts in sock.sent]
    assert [type(m).__name__ for m in msgs] == ["Interrupt", "StartSession", "Interrupt", "AudioIn", "PhonemesIn"]
    assert (msgs[0].session_id, msgs[0].epoch) == ("", 1)  # type: ignore[union-attr]
    assert (msgs[2].session_id, msgs[2].epoch) == ("s", 2)  # type: ignore[union-attr]
    assert msgs[4].spans == [(1920, 2560, "b")]  # type: ignore[union-attr]
    for k in range(100):  # phonemes queued while the worker is away are bounded
        client.push_phonemes([(k, k + 1, "x")])
    assert sum(1 for item in client._queue if item.kind == "phonemes") == 64
    client.push_audio(np.ones(640, np.float32))
    client.start_session("t")  # a new session: what was queued for "s" goes, control messages stay
    client.interrupt()
    client.on_ready()
    sock = Room()
    client.flush(sock)  # type: ignore[arg-type]
    assert [type(p.decode(parts[0])).__name__ for parts in sock.sent] == ["StartSession", "Interrupt"]


# --- the real worker process behind a Supervisor ---------------------------------------------------


class Recorder(threading.Thread):
    """A bus subscriber remembering (epoch, first_frame, chunk) in arrival order."""

    def __init__(self, address: str) -> None:
        super().__init__(name="test-recorder", daemon=True)
        self.address = address
        self.chunks: list[FrameChunk] = []
        self.stop = threading.Event()
        self.connected = threading.Event()

    def run(self) -> None:
        with FrameSubscriber(self.address, hwm_chunks=64) as sub:
            self.connected.set()
            while not self.stop.is_set():
                item = sub.recv(timeout_ms=20)
                if isinstance(item, FrameChunk):
                    self.chunks.append(item)


class Voice(threading.Thread):
    """Pushes 40 ms packets in real time: speech until ``barge`` is set, then interrupts (same thread,
    so no speech packet can follow the interrupt) and pushes silence."""

    def __init__(self, client: EngineClient) -> None:
        super().__init__(name="test-voice", daemon=True)
        self.client = client
        self.barge = threading.Event()
        self.stop = threading.Event()
        self.epoch = 0

    def run(self) -> None:
        rng = np.random.default_rng(1)
        next_t = time.monotonic()
        while not self.stop.is_set():
            if self.barge.is_set() and self.epoch == 0:
                self.epoch = self.client.interrupt()
            loud = self.epoch == 0
            self.client.push_audio((0.3 * rng.standard_normal(SPF) if loud else np.zeros(SPF)).astype(np.float32))
            next_t += 0.04
            time.sleep(max(0.0, next_t - time.monotonic()))


def wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def sup_config(**kw: object) -> SupervisorConfig:
    base = {"init_timeout_s": 15.0, "heartbeat_timeout_s": 2.0, "shutdown_grace_s": 2.0, "max_restarts": 3,
            "restart_window_s": 60.0, "restart_backoff_s": (0.0,)}
    return SupervisorConfig(**{**base, **kw})


def test_barge_in_through_the_real_worker_and_a_restart_keeps_the_epoch(config: SoulxConfig) -> None:
    launch = WorkerLaunch.from_config(config, subscribers=1)
    sup = Supervisor(sup_config(), launch)
    recorder = Recorder(launch.frames)
    voice = Voice(sup.client)
    recorder.start()
    recorder.connected.wait(5)
    sup.start()
    try:
        sup.wait_ready(15)
        sup.client.start_session("s")
        voice.start()
        wait_for(lambda: len(recorder.chunks) >= 3, 10, "speech chunks")
        voice.barge.set()
        wait_for(lambda: sum(c.epoch == 1 for c in recorder.chunks) >= 3, 10, "chunks of the new epoch")
        first_pid = sup.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        wait_for(lambda: sup.stats.restarts == 1 and sup.state == "running", 15, "the restarted worker")
        n = len(recorder.chunks)
        wait_for(lambda: len(recorder.chunks) >= n + 2, 10, "chunks from the restarted worker")
    finally:
        voice.stop.set()
        sup.close()
        recorder.stop.set()
        recorder.join(5)
    chunks = recorder.chunks
    epochs = [c.epoch for c in chunks]
    assert epochs == sorted(epochs), f"an old-epoch chunk followed a new-epoch one: {epochs}"
    assert epochs[0] == 0 and epochs[-1] == 1 and set(epochs) == {0, 1}  # the restarted worker kept epoch 1
    old = [c for c in chunks if c.epoch == 0]
    assert any(np.abs(c.audio).max() > 0.1 for c in old)
    first_new = next(c for c in chunks if c.epoch == 1)
    assert not first_new.audio.any(), "the first chunk after the interrupt carries audio from before it"
    np.testing.assert_array_equal(first_new.frames, silent_reference(config, first_new.first_frame, 5))
    before_kill = chunks[: chunks.index(first_new) + 3]
    assert [c.first_frame for c in before_kill] == list(range(0, 5 * len(before_kill), 5))  # no index reused or skipped


# --- supervisor health checks ---------------------------------------------------------------------


def test_a_health_check_reason_restarts_the_worker(config: SoulxConfig) -> None:
    calls: list[int] = []
    first: list[int] = []

    def memory(pid: int) -> str | None:
        calls.append(pid)
        if not first:
            first.append(pid)
        return "engine RSS 9000 MB above supervisor.memory_limit_mb=8000" if pid == first[0] else None

    def broken(pid: int) -> str | None:
        raise RuntimeError("psutil went away")

    states: list[tuple[str, str]] = []
    launch = WorkerLaunch.from_config(config, argv=(sys.executable, str(FAKE_WORKER), "deaf"))
    sup = Supervisor(sup_config(shutdown_grace_s=0.2), launch, on_state=lambda s, d: states.append((s, d)),
                     health_checks=(broken, memory))
    sup.start()
    try:
        sup.wait_ready(10)
        wait_for(lambda: sup.stats.restarts == 1 and sup.state == "running", 10, "the health restart")
        second = sup.pid
        time.sleep(1.5)  # healthy now: checked again, no further restart
    finally:
        sup.close()
    assert sup.stats.restarts == 1 and second != first[0]
    assert calls.count(first[0]) == 1 and calls.count(second) >= 1  # about once per second
    restarting = [d for s, d in states if s == "restarting"]
    assert len(restarting) == 1 and "memory_limit_mb=8000" in restarting[0]
