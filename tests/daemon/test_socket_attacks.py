"""The daemon survives any bytes on its ZeroMQ sockets: the attacks that used to end it, then a bounded fuzz.

A real daemon (lite engine in its supervised worker, real-time speech, a probe sink) is attacked as a hostile local
client would: a 2-frame message on the control socket (REP: used to break its state), ~200 KB of nested msgpack on
the control and the events socket (used to raise RecursionError and kill the control thread or the supervisor),
then random multipart messages (sizes, frame counts, nesting) on both for a fixed time. Afterwards the daemon still
answers ``status``, still makes frames, and its worker was never restarted.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

sys.path.insert(0, str(Path(__file__).parent))

from live_support import DaemonThread, ProbeSink, live_config, short_tmp, wait_for, write_tone  # noqa: E402

from soulx_live import protocol  # noqa: E402
from soulx_live.control.client import query_status  # noqa: E402
from soulx_live.daemon import Daemon  # noqa: E402
from soulx_live.runtime_dir import endpoint  # noqa: E402

NESTED = b"\x91" * 200_000 + b"\xc0"  # a msgpack array holding an array ... 200k deep, ~200 KB
FUZZ_S = 4.0
TIMEOUT_MS = 2000


def _request(address: str, frames: list[bytes]) -> list[bytes] | None:
    """One REQ round trip; the reply's frames, or None when none came in time."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send_multipart(frames)
        return sock.recv_multipart() if sock.poll(TIMEOUT_MS) else None
    finally:
        sock.close()


def _push(address: str, frames: list[bytes]) -> None:
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 500)
    try:
        sock.connect(address)
        sock.send_multipart(frames)
    finally:
        sock.close()


def _random_message(rng: np.random.Generator) -> list[bytes]:
    """1-4 frames of random bytes, random msgpack-looking prefixes, or deep nesting; at most ~64 KB each."""
    frames = []
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.integers(0, 4)
        if kind == 0:
            frames.append(rng.bytes(int(rng.integers(0, 65536))))
        elif kind == 1:
            frames.append(b"\x91" * int(rng.integers(1, 65536)) + b"\xc0")
        elif kind == 2:
            frames.append(bytes([0x80 | int(rng.integers(0, 16))]) + rng.bytes(int(rng.integers(0, 64))))
        else:
            frames.append(protocol.encode(protocol.StatusRequest())[: int(rng.integers(0, 8))])
    return frames


def _alive(daemon: Daemon, probe: ProbeSink, config: object) -> None:
    """The daemon answers status over its socket and frames keep reaching the sink."""
    before = len(probe.snapshot())
    reply = query_status(config.bus, timeout_s=3.0)  # type: ignore[attr-defined]
    assert reply.state == "running", reply
    wait_for(lambda: len(probe.snapshot()) > before + 2, 5, "frames after the attack")


@pytest.mark.timeout(90)
def test_attacks_and_fuzz_on_every_zmq_socket_leave_the_daemon_serving() -> None:
    with short_tmp() as root:
        speech = write_tone(root / "speech.wav", 60.0)
        config = live_config(root, **{"audio.file": str(speech), "audio.realtime": True,
                                      "supervisor.heartbeat_timeout_s": 5.0})
        probe = ProbeSink()
        daemon = Daemon(config, sink_factory=lambda _: [probe])
        runner = DaemonThread(daemon).start()
        cli, events = endpoint("cli", config.bus), endpoint("events", config.bus)
        try:
            wait_for(lambda: len(probe.snapshot()) >= 5, 20, "frames before the attack")
            two = _request(cli, [protocol.encode(protocol.StatusRequest()), b"extra"])
            assert two is not None and isinstance(protocol.decode(two[0]), protocol.Ack)  # refused, still answering
            nested = _request(cli, [NESTED])
            assert nested is not None and "nested too deeply" in protocol.decode(nested[0]).message  # type: ignore[union-attr]
            _push(events, [NESTED])
            _push(events, [b"a", b"b"])
            _alive(daemon, probe, config)
            rng = np.random.default_rng(7)
            end, sent = time.monotonic() + FUZZ_S, 0
            while time.monotonic() < end:
                message = _random_message(rng)
                if sent % 2:
                    _push(events, message)
                else:
                    assert _request(cli, message) is not None, f"the control socket stopped answering after {sent}"
                sent += 1
            _alive(daemon, probe, config)
            status = daemon.status()
        finally:
            code = runner.stop()
    assert sent > 20
    assert status.restarts == 0, "the attack restarted the engine worker"
    assert code == 0


@pytest.mark.timeout(90)
def test_fuzz_on_the_push_socket_leaves_the_push_api_serving() -> None:
    """The push API's ZeroMQ socket (ROUTER, REQ clients) under the same bounded fuzz: every request that reaches
    it is answered, and afterwards a real client still gets its status and pushes audio."""
    from soulx_live.push.client import PushClient

    with short_tmp() as root:
        config = live_config(root, **{"audio.source": "push", "push.enabled": True})
        probe = ProbeSink()
        daemon = Daemon(config, sink_factory=lambda _: [probe])
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: daemon.push.server is not None and len(probe.snapshot()) >= 2, 20, "the push server")
            push = endpoint("push", config.bus)
            rng = np.random.default_rng(11)
            end, sent, answered = time.monotonic() + FUZZ_S, 0, 0
            while time.monotonic() < end:
                answered += _request(push, _random_message(rng)) is not None
                sent += 1
            assert _request(push, [NESTED]) is not None
            with PushClient(config) as client:
                receipt = client.push_pcm(np.zeros(1600, np.int16), 16000)
            _alive(daemon, probe, config)
        finally:
            code = runner.stop()
    assert sent > 20 and answered == sent, f"{sent - answered} of {sent} fuzz requests got no answer"
    assert receipt is not None and code == 0
