"""The engine worker as a real subprocess (lite engine, 64x64), driven over raw ZeroMQ sockets."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pytest
import zmq

from engine.interface import FrameChunk
from soulx_live import protocol as p
from soulx_live.bus import FrameSubscriber
from soulx_live.config import SoulxConfig
from soulx_live.engine_worker import WorkerOptions
from soulx_live.runtime_dir import endpoint

pytestmark = pytest.mark.timeout(30)

SR = 16000
SPF = SR // 25
EVENT_MS = 10_000  # generous: only reached when something is broken


def tiny_config(runtime_dir: Path) -> SoulxConfig:
    return SoulxConfig.model_validate({
        "engine": {"kind": "lite", "lite": {"width": 64, "height": 64, "frames_per_chunk": 5}},
        "bus": {"runtime_dir": str(runtime_dir)},
        "logging": {"level": "WARNING"},
    })


@dataclass
class WorkerRig:
    """A worker subprocess plus the daemon-side sockets (ctrl PUSH, events PULL bound here) and a bus subscriber."""

    proc: subprocess.Popen[bytes]
    ctrl: zmq.Socket
    events: zmq.Socket
    frames: FrameSubscriber

    def send(self, msg: p.Message | bytes, *extra: bytes) -> None:
        self.ctrl.send_multipart([msg if isinstance(msg, bytes) else p.encode(msg), *extra])

    def event(self, kind: type, timeout_ms: int = EVENT_MS) -> p.Message:
        """The next event of type ``kind`` (other types in between are skipped)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while (left := deadline - time.monotonic()) > 0:
            if self.events.poll(int(left * 1000)):
                msg = p.decode(self.events.recv())
                if isinstance(msg, kind):
                    return msg
        raise AssertionError(f"no {kind.__name__} from the worker within {timeout_ms} ms")

    def audio(self, session_id: str, seq: int, pcm: np.ndarray) -> None:
        data = pcm.astype("<f4")
        self.send(p.AudioIn(session_id=session_id, seq=seq, t0=seq * data.shape[0], n_samples=data.shape[0], sample_rate=SR),
                  data.tobytes())


@pytest.fixture
def rig() -> Iterator[WorkerRig]:
    root = Path(tempfile.mkdtemp(prefix="sxwk-"))
    cfg = tiny_config(root / "rt")
    ctx = zmq.Context.instance()
    ctrl, events = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    for sock in (ctrl, events):
        sock.setsockopt(zmq.LINGER, 0)
    ctrl.bind(endpoint("ctrl", cfg.bus))
    events.bind(endpoint("events", cfg.bus))
    frames = FrameSubscriber(endpoint("frames", cfg.bus), hwm_chunks=64)
    options = WorkerOptions(ctrl=endpoint("ctrl", cfg.bus), events=endpoint("events", cfg.bus),
                            frames=endpoint("frames", cfg.bus), parent_pid=os.getpid(), heartbeat_interval_s=0.1,
                            subscribers=1, drain_timeout_s=5.0, hwm_chunks=16)  # a drain bursts chunks
    doc = json.dumps({"config": cfg.model_dump(mode="json"), "options": options.to_json()}).encode()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "soulx_live.worker"], stdin=subprocess.PIPE, env=env,
                            start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(doc)
    proc.stdin.close()
    try:
        yield WorkerRig(proc, ctrl, events, frames)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        frames.close()
        ctrl.close()
        events.close()
        shutil.rmtree(root, ignore_errors=True)


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts: enough energy to open the mouth, deterministic."""
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def start(rig: WorkerRig, session_id: str = "s1") -> p.Ready:
    ready = rig.event(p.Ready)
    rig.send(p.StartSession(session_id=session_id))
    started = rig.event(p.SessionStarted)
    assert started.session_id == session_id
    return ready


def test_ready_handshake_reports_the_spec(rig: WorkerRig) -> None:
    ready = rig.event(p.Ready)
    spec = ready.spec.to_spec()
    assert (spec.width, spec.height, spec.frames_per_chunk, spec.sample_rate, spec.fps) == (64, 64, 5, SR, 25)
    assert ready.model == "lite" and str(rig.proc.pid) in ready.engine_id
    hb = rig.event(p.Heartbeat)  # idle heartbeats come without any request
    assert hb.chunks_done == 0


def test_audio_in_gives_chunks_on_the_bus_and_heartbeats_advance(rig: WorkerRig) -> None:
    start(rig)
    pcm = speech(1.0)
    for seq, block in enumerate(np.split(pcm, 10)):  # 10 packets of 100 ms
        rig.audio("s1", seq, block)
    chunks: list[FrameChunk] = []
    while len(chunks) < 4:  # 1 s = 5 chunks; the last waits for its look-ahead
        got = rig.frames.recv(EVENT_MS)
        assert isinstance(got, FrameChunk), "no chunk on the frame bus"
        chunks.append(got)
    assert [c.first_frame for c in chunks] == [0, 5, 10, 15]
    assert all(c.frames.shape == (5, 64, 64, 3) for c in chunks)
    np.testing.assert_array_equal(chunks[1].audio, pcm[5 * SPF:10 * SPF])  # the audio plays with its frames
    done = [rig.event(p.Heartbeat).chunks_done]
    while done[-1] < 4:  # heartbeats queue up in order: read until the latest count shows
        done.append(rig.event(p.Heartbeat).chunks_done)
    assert done == sorted(done) and done[0] < 4  # counted chunk by chunk, never backwards


def test_bad_control_messages_are_answered_and_the_worker_goes_on(rig: WorkerRig) -> None:
    start(rig)
    rig.send(b"\xc1not msgpack")
    assert rig.event(p.EngineError).kind == "malformed"
    old = msgspec.msgpack.encode({"type": "AudioIn", "v": 99, "session_id": "s1"})
    err = rig.event(p.EngineError) if rig.send(old) is None else None
    assert err is not None and err.kind == "version" and not err.fatal and "99" in err.message
    rig.send(p.Heartbeat(mono_ns=0, chunks_done=0))  # a valid message the worker does not take
    assert rig.event(p.EngineError).kind == "unexpected"
    rig.send(p.AudioIn(session_id="s1", seq=0, t0=0, n_samples=100, sample_rate=SR), b"\x00" * 12)  # short payload
    assert rig.event(p.EngineError).kind == "bad_request"
    rig.audio("other", 0, speech(0.1))
    assert "StartSession" in rig.event(p.EngineError).message
    nan = np.full(SPF, np.nan, np.float32)
    rig.audio("s1", 1, nan)
    assert rig.event(p.EngineError).kind == "bad_audio"
    # still alive and working: good audio still becomes chunks
    rig.audio("s1", 2, speech(0.5))
    got = rig.frames.recv(EVENT_MS)
    assert isinstance(got, FrameChunk) and got.first_frame == 0
    assert rig.proc.poll() is None


def test_shutdown_drains_acks_and_exits_zero(rig: WorkerRig) -> None:
    start(rig)
    rig.audio("s1", 0, speech(0.3))  # 1.5 chunks: the drain pads the second with silence
    rig.send(p.Shutdown(reason="test"))
    rig.event(p.ShutdownAck, timeout_ms=5000)
    assert rig.proc.wait(5) == 0
    got = [rig.frames.recv(2000) for _ in range(3)]
    assert [c.first_frame for c in got if isinstance(c, FrameChunk)] == [0, 5]
    end = next(m for m in got if isinstance(m, p.EndOfStream))
    assert end.session_id == "s1" and end.last_frame == 9


def test_sigterm_is_a_shutdown(rig: WorkerRig) -> None:
    start(rig)
    rig.proc.send_signal(signal.SIGTERM)
    rig.event(p.ShutdownAck, timeout_ms=5000)
    assert rig.proc.wait(5) == 0


def test_bad_engine_config_is_a_fatal_config_error(tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="sxwk-"))
    cfg = tiny_config(root / "rt").model_copy(update={"engine": tiny_config(root / "rt").engine.model_copy(
        update={"lite": tiny_config(root / "rt").engine.lite.model_copy(update={"width": 30})})})
    events = zmq.Context.instance().socket(zmq.PULL)
    events.setsockopt(zmq.LINGER, 0)
    events.bind(endpoint("events", cfg.bus))
    options = WorkerOptions(ctrl=endpoint("ctrl", cfg.bus), events=endpoint("events", cfg.bus),
                            frames=endpoint("frames", cfg.bus))
    doc = json.dumps({"config": cfg.model_dump(mode="json"), "options": options.to_json()})
    try:
        proc = subprocess.run([sys.executable, "-m", "soulx_live.worker"], input=doc.encode(), timeout=20,
                              capture_output=True, check=False)
        assert proc.returncode == 3, proc.stderr.decode()
        assert events.poll(5000)
        err = p.decode(events.recv())
        assert isinstance(err, p.EngineError) and err.fatal and err.kind == "config" and "64x64" in err.message
    finally:
        events.close()
        shutil.rmtree(root, ignore_errors=True)


MIDDLE = """
import json, os, subprocess, sys, time
doc = json.loads(sys.stdin.read())
doc["options"]["parent_pid"] = os.getpid()
proc = subprocess.Popen([sys.executable, "-m", "soulx_live.worker"], stdin=subprocess.PIPE, start_new_session=True)
proc.stdin.write(json.dumps(doc).encode())
proc.stdin.close()
print(proc.pid, flush=True)
time.sleep(60)
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (a re-parented child may never be reaped in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_worker_exits_when_its_parent_dies() -> None:
    root = Path(tempfile.mkdtemp(prefix="sxwk-"))
    cfg = tiny_config(root / "rt")
    events = zmq.Context.instance().socket(zmq.PULL)
    events.setsockopt(zmq.LINGER, 0)
    events.bind(endpoint("events", cfg.bus))
    options = WorkerOptions(ctrl=endpoint("ctrl", cfg.bus), events=endpoint("events", cfg.bus),
                            frames=endpoint("frames", cfg.bus))
    doc = json.dumps({"config": cfg.model_dump(mode="json"), "options": options.to_json()})
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    worker_pid = 0
    try:
        assert middle.stdin is not None and middle.stdout is not None
        middle.stdin.write(doc.encode())
        middle.stdin.close()
        worker_pid = int(middle.stdout.readline())
        assert events.poll(EVENT_MS) and isinstance(p.decode(events.recv()), p.Ready)
        middle.kill()
        middle.wait(5)
        deadline = time.monotonic() + 5
        while running(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(worker_pid), "the worker outlived its parent"
    finally:
        if worker_pid and running(worker_pid):
            os.killpg(worker_pid, signal.SIGKILL)
        if middle.poll() is None:
            middle.kill()
        events.close()
        shutil.rmtree(root, ignore_errors=True)


def test_audio_beyond_max_backlog_s_drops_the_oldest_first() -> None:
    """In process (inproc sockets, the fake engine): the worker, not the bus, bounds its audio backlog."""
    sys.path.insert(0, str(Path(__file__).parent))
    from daemon_fakes import FakeEngine

    from soulx_live.bus import FramePublisher
    from soulx_live.engine_worker import EngineWorker

    ctx = zmq.Context.instance()
    events_in, events_out, ctrl = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    events_in.bind("inproc://backlog-events")
    events_out.connect("inproc://backlog-events")
    publisher = FramePublisher("inproc://backlog-frames", context=ctx)
    sub = FrameSubscriber("inproc://backlog-frames", hwm_chunks=16, context=ctx)
    try:
        assert publisher.wait_for_subscribers(1, 5)
        engine = FakeEngine(width=8, height=8)
        worker = EngineWorker(engine, WorkerOptions(ctrl="", events="", frames="", max_backlog_s=0.5), ctrl,
                              events_out, publisher)
        worker._dispatch([p.encode(p.StartSession(session_id="s"))])
        for seq in range(20):  # 2 s at once, 100 ms packets whose value is their seq
            pcm = np.full(1600, seq / 100, "<f4")
            worker._dispatch([p.encode(p.AudioIn(session_id="s", seq=seq, t0=seq * 1600, n_samples=1600, sample_rate=SR)),
                              pcm.tobytes()])
        assert worker._dropped_samples == 15 * 1600  # 0.5 s kept: the newest five packets
        while worker._can_step():
            worker._step()
        got = sub.recv(5000)
        assert isinstance(got, FrameChunk) and got.audio[0] == pytest.approx(0.15)
    finally:
        for sock in (events_in, events_out, ctrl):
            sock.close(linger=0)
        publisher.close(linger_ms=0)
        sub.close()
