"""The ZeroMQ push server with a fake handler: round trips, events, and every bad input answered
with a clear error while the server goes on (real sockets, ipc in a private runtime dir)."""
from __future__ import annotations

import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
import zmq
from push_testkit import FakeHandler, make_config, tone

from soulx_live.push.client import PushClient, PushError, PushUnavailable
from soulx_live.push.messages import (
    ErrorReply,
    InterruptRequest,
    PushPcm,
    ReceiptReply,
    SayRequest,
    StatusRequest,
    encode,
)
from soulx_live.push.server import PushServer
from soulx_live.push.token import token_path
from soulx_live.push.utterances import SpeechEvent, UtteranceTracker
from soulx_live.runtime_dir import runtime_dir

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def served() -> Iterator[tuple[PushServer, FakeHandler, PushClient]]:
    config = make_config()
    handler = FakeHandler()
    server = PushServer(config, handler)
    server.start()
    client = PushClient(config, timeout_s=5)
    try:
        yield server, handler, client
    finally:
        client.close()
        server.close()


def test_round_trip_of_every_request(served: tuple[PushServer, FakeHandler, PushClient]) -> None:
    server, handler, client = served
    r = client.push_pcm((tone(48000, 0.5, channels=2) * 32767).astype(np.int16), 48000, utterance_id="u-1")
    assert r == ReceiptReply(utterance_id="u-1", start_s=0.0, duration_s=0.5)
    assert handler.pcm[0][1].shape == (8000,)
    r2 = client.say("one two three four", voice="anna")
    assert r2.start_s == 0.5 and r2.duration_s == 1.0 and handler.said[0][:2] == ("one two three four", "anna")
    assert client.interrupt() == 1
    assert client.status() == {"state": "running", "queued_s": 1.5, "pushed": 1}
    assert server.zmq_address.startswith("ipc://") and server.http_url is None


def test_socket_and_token_live_in_the_private_runtime_dir(served: tuple[PushServer, FakeHandler, PushClient]) -> None:
    server, _, _ = served
    folder = runtime_dir(server.config.bus)
    assert Path(server.zmq_address[6:]).parent == folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(token_path(server.config).stat().st_mode) == 0o600


def _raw(client: PushClient, frames: list[bytes]) -> ErrorReply:
    reply = client.request_raw(frames)
    assert isinstance(reply, ErrorReply), reply
    return reply


@pytest.mark.parametrize(("header", "body", "code", "words"), [
    ({"type": "PushPcm", "v": 1, "token": "wrong", "sample_rate": 16000}, b"\0\0", "unauthorized", "push.token"),
    ({"type": "PushPcm", "v": 1, "sample_rate": 16000}, b"\0\0", "unauthorized", "push.token"),
    ({"type": "PushPcm", "v": 2, "token": "T", "sample_rate": 16000}, b"\0\0", "version", "version 2"),
    ({"type": "PushPcm", "v": 0, "token": "T", "sample_rate": 16000}, b"\0\0", "version", "version 0"),
    ({"type": "Dance", "v": 1, "token": "T"}, None, "unknown_type", "Dance"),
    ({"type": "PushPcm", "v": 1, "token": "T", "sample_rate": "fast"}, b"\0\0", "malformed", "sample_rate"),
    ({"type": "PushPcm", "v": 1, "token": "T", "format": "mp3"}, b"\0\0", "bad_audio", "s16le, f32le"),
    ({"type": "PushPcm", "v": 1, "token": "T"}, b"\0\0\0", "bad_audio", "whole number"),
    ({"type": "PushPcm", "v": 1, "token": "T"}, b"", "bad_audio", "empty"),
    ({"type": "PushPcm", "v": 1, "token": "T", "format": "f32le"}, np.array([np.nan], "<f4").tobytes(),
     "bad_audio", "NaN"),
    ({"type": "PushPcm", "v": 1, "token": "T"}, b"\0\0" * 16000 * 31, "too_large", "max_packet_s"),
    ({"type": "PushPcm", "v": 1, "token": "T"}, None, "bad_request", "PCM bytes"),
    ({"type": "PushPcm", "v": 1, "token": "T", "utterance_id": "a b/c"}, b"\0\0", "bad_request", "utterance_id"),
    ({"type": "SayRequest", "v": 1, "token": "T", "text": "  "}, None, "bad_request", "empty"),
    ({"type": "SayRequest", "v": 1, "token": "T", "text": "boom"}, None, "bad_request", "cannot say boom"),
])
def test_bad_requests_get_clear_errors_and_nothing_is_done(served: tuple[PushServer, FakeHandler, PushClient],
                                                           header: dict[str, object], body: bytes | None,
                                                           code: str, words: str) -> None:
    server, handler, client = served
    if header.get("token") == "T":
        header = {**header, "token": server.token}
    frames = [msgspec.msgpack.encode(header)] + ([body] if body is not None else [])
    reply = _raw(client, frames)
    assert reply.code == code and words in reply.message
    assert server.token not in reply.message
    assert handler.calls == 0
    assert client.say("still here").utterance_id  # the session goes on


@pytest.mark.parametrize("frames", [[b"\xc1garbage"], [b"[1, 2]"], [msgspec.msgpack.encode([1, 2])], [b""]])
def test_malformed_headers(served: tuple[PushServer, FakeHandler, PushClient], frames: list[bytes]) -> None:
    _, handler, client = served
    assert _raw(client, frames).code == "malformed"
    assert handler.calls == 0 and client.interrupt() == 1


def test_unauthenticated_client_is_refused_for_every_request(served: tuple[PushServer, FakeHandler, PushClient]) -> None:
    server, handler, _ = served
    with PushClient(server.config, token="not-the-token", timeout_s=5) as bad:
        for call in (lambda: bad.say("hi"), bad.interrupt, bad.status,
                     lambda: bad.push_pcm(np.zeros(160, np.int16), 16000)):
            with pytest.raises(PushError, match="unauthorized: .*push.token") as info:
                call()
            assert info.value.code == "unauthorized"
    assert handler.calls == 0


def test_byte_cap_drops_the_message_and_the_server_goes_on() -> None:
    config = make_config(max_packet_s=0.01)  # cap ~ 80 KB
    handler = FakeHandler()
    with PushServer(config, handler) as server:
        with PushClient(config, timeout_s=1) as big, pytest.raises(PushUnavailable, match="no answer"):
            big.push_bytes(b"\0" * (server.max_bytes + 10), format="s16le", sample_rate=16000)
        with PushClient(config, timeout_s=5) as client:
            assert client.push_pcm(np.zeros(160, np.float32), 16000).duration_s == 0.01
    assert len(handler.pcm) == 1


def test_events_reach_subscribers(served: tuple[PushServer, FakeHandler, PushClient]) -> None:
    server, _, client = served
    tracker = UtteranceTracker(16000, server.publish_event)
    client.subscribe()
    tracker.add("x", 0, 1600)
    tracker.add("y", 1600, 1600)

    def play() -> None:
        tracker.on_played(1700)
        tracker.interrupt(2000)

    threading.Thread(target=play).start()
    got = list(client.events(timeout_s=1.0))
    assert got == [SpeechEvent("started", "x", 0.0, 0.0), SpeechEvent("finished", "x", 0.1, 0.1),
                   SpeechEvent("started", "y", 0.1, 0.0), SpeechEvent("interrupted", "y", 0.125, 0.025)]


def test_slow_say_does_not_block_interrupt(served: tuple[PushServer, FakeHandler, PushClient]) -> None:
    server, handler, client = served
    gate = threading.Event()
    original = handler.say

    def slow_say(text: str, **kw: object) -> object:
        gate.wait(5)
        return original(text, **kw)  # type: ignore[arg-type]

    handler.say = slow_say  # type: ignore[method-assign]
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(PushClient(server.config, timeout_s=5).say("slow one")))
    t.start()
    assert client.interrupt() == 1  # answered while the say is still synthesising
    gate.set()
    t.join(5)
    assert isinstance(result[0], ReceiptReply)


def test_tcp_transport_on_loopback() -> None:
    config = make_config(transport="tcp", token="tcp-token-0123456789")
    with socket.socket() as probe:  # a free port for "push" (tcp_port + 4)
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    base = config.bus.model_copy(update={"tcp_port": free - 4})
    config = config.model_copy(update={"bus": base})
    with PushServer(config, FakeHandler()) as server:
        assert server.zmq_address.startswith("tcp://127.0.0.1:")
        with PushClient(config, timeout_s=5) as client:
            assert client.interrupt() == 1


def test_no_daemon_is_a_clear_error() -> None:
    with pytest.raises(PushUnavailable, match="soulx-live run --set audio.source=push"):
        PushClient(make_config())


def test_generated_token_file_is_removed_at_close() -> None:
    config = make_config()
    server = PushServer(config, FakeHandler())
    server.start()
    assert token_path(config).exists()
    server.close()
    assert not token_path(config).exists()


def test_typed_requests_encode_with_version() -> None:
    for msg in (PushPcm(token="t"), SayRequest(token="t", text="x"), InterruptRequest(token="t"), StatusRequest()):
        raw = msgspec.msgpack.decode(encode(msg))
        assert raw["v"] == 1 and raw["type"] == type(msg).__name__
    assert zmq.zmq_version_info() >= (4, 0)


def test_handler_crash_is_a_failed_reply_and_the_server_goes_on(
        served: tuple[PushServer, FakeHandler, PushClient]) -> None:
    _, handler, client = served

    def broken() -> dict[str, object]:
        raise RuntimeError("status backend exploded")

    handler.status = broken  # type: ignore[method-assign]
    with pytest.raises(PushError, match="failed: .*RuntimeError: status backend exploded") as info:
        client.status()
    assert info.value.code == "failed"
    assert client.interrupt() == 1
