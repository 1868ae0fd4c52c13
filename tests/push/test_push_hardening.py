"""Attacks a hostile local client tried on the push API (issue 18, items 4-6), replayed against the real
ZeroMQ + aiohttp servers on 127.0.0.1: forged log lines, 500s from odd bodies, slow clients, a flood of
failures in the log, unbounded queued audio. Each asserts what the client and the log say is true."""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

aiohttp = pytest.importorskip("aiohttp", reason='the HTTP push API needs the [http] extra: pip install -e ".[http]"')
import msgspec
import zmq
from attack_kit import RawReply, port_of, post, raw_request, wait_closed
from push_testkit import FakeHandler, make_config

from soulx_live.audio.push_source import PushSource
from soulx_live.push.client import PushClient, PushError
from soulx_live.push.server import PushServer
from soulx_live.push_bridge import PushBridge, make_tracker

pytestmark = pytest.mark.timeout(30)

FORGED = "04:00:00.000 INFO daemon FAKE: x"


def _serve(config: Any, handler: Any) -> Iterator[PushServer]:
    server = PushServer(config, handler)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def served() -> Iterator[tuple[PushServer, FakeHandler]]:
    handler = FakeHandler()
    config = make_config(http=True, max_packet_s=2.0)
    config = config.model_copy(update={"push": config.push.model_copy(update={"http_timeout_s": 1.0})})
    for server in _serve(config, handler):
        yield server, handler


def _log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every line the log handler wrote (a record with a newline in it makes two lines)."""
    return caplog.text.splitlines()


def _assert_no_forged_line(caplog: pytest.LogCaptureFixture) -> None:
    lines = _log_lines(caplog)
    forged = [line for line in lines if line.startswith(FORGED[:12]) or line.lstrip().startswith("FAKE")]
    assert not forged, f"a client wrote its own log line: {forged}"
    assert all(r.exc_info is None for r in caplog.records), "a client's bad request logged a traceback"
    assert all("\n" not in r.getMessage() for r in caplog.records if r.name.startswith("soulx_live"))


# -- 4. log forging ------------------------------------------------------------------------------------


def test_a_path_with_a_newline_cannot_forge_a_log_line(served: tuple[PushServer, FakeHandler],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    server, handler = served
    port = port_of(server.http_url)
    encoded = FORGED.replace(" ", "%20").encode()
    with caplog.at_level(logging.INFO):
        # exactly the attack: no token, a percent-encoded newline in the path, decoded by the server
        reply = raw_request(port, b"GET /v1/status%0a" + encoded + b" HTTP/1.1\r\nHost: 127.0.0.1")
        # the same with raw spaces (the request line does not parse: aiohttp's own error log)
        bad_line = raw_request(port, b"GET /v1/status%0a" + FORGED.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1")
        # and in a header, a query and a JSON field that reach the log through error messages
        with_token = post(port, b"/v1/audio?rate=16000&format=s16le%0a" + encoded, b"\0\0", server.token)
    assert reply.status == 401 and reply.json()["code"] == "unauthorized"
    assert bad_line.status == 400 and with_token.status == 400
    _assert_no_forged_line(caplog)
    # what the log says is still true: the rejected path is there, quoted, newline escaped
    assert "'/v1/status\\n04:00:00.000 INFO daemon FAKE: x'" in caplog.text
    assert handler.calls == 0


def test_zmq_fields_echoed_in_errors_are_quoted(caplog: pytest.LogCaptureFixture) -> None:
    for server in _serve(make_config(), FakeHandler()):
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REQ)
        sock.linger = 0
        sock.rcvtimeo = 5000
        try:
            sock.connect(server.zmq_address)
            with caplog.at_level(logging.INFO):
                sock.send(msgspec.msgpack.encode({"type": f"PushPcm\n{FORGED}", "v": 2, "token": server.token}))
                reply = msgspec.msgpack.decode(sock.recv())
        finally:
            sock.close()
            ctx.term()
    assert reply["code"] == "version"
    _assert_no_forged_line(caplog)
    assert "\\n04:00:00.000" in caplog.text


# -- 5. named 400s instead of 500s -------------------------------------------------------------------


@pytest.mark.parametrize(("body", "content_type", "words"), [
    (b'{"text": "\xff\xfe hi"}', b"application/json", "not UTF-8"),
    (b'{"text": "hi"}', b"application/json; charset=klingon", "charset 'klingon'"),
    (b'{"text": "hi"}', b"application/json; charset=latin-1", "charset=utf-8"),
    (b"[" * 100_000 + b"]" * 100_000, b"application/json", "nests deeper than 16"),
    (b'{"text": ' * 50_000 + b'"x"' + b"}" * 50_000, b"application/json", "nests deeper than 16"),
])
def test_odd_bodies_are_named_400s(served: tuple[PushServer, FakeHandler], body: bytes, content_type: bytes,
                                   words: str, caplog: pytest.LogCaptureFixture) -> None:
    server, handler = served
    with caplog.at_level(logging.INFO):
        reply = post(port_of(server.http_url), b"/v1/say", body, server.token, content_type)
    assert reply.status == 400, reply
    got = reply.json()
    assert (got["type"], got["code"]) == ("ErrorReply", "malformed") and words in got["message"]
    assert handler.calls == 0 and "Traceback" not in caplog.text and "aiohttp" not in caplog.text
    ok = post(port_of(server.http_url), b"/v1/say", b'{"text": "still here"}', server.token)
    assert ok.status == 200 and handler.said[0][0] == "still here"
    assert post(port_of(server.http_url), b"/v1/nope", b"", server.token).status == 404  # not turned into a 500


def test_deep_json_on_the_websocket_and_msgpack_on_zmq_are_named(served: tuple[PushServer, FakeHandler]) -> None:
    server, _ = served

    async def ws() -> list[dict]:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.http_url}/v1/events?token={server.token}") as w:
            await w.send_str("[" * 50_000 + "]" * 50_000)
            first = json.loads((await w.receive(timeout=5)).data)
            await w.send_str('{"type": "status"}')  # the socket is still served
            return [first, json.loads((await w.receive(timeout=5)).data)]

    deep, status = asyncio.run(ws())
    assert deep["code"] == "malformed" and "nests deeper" in deep["message"] and status["type"] == "StatusReply"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.linger, sock.rcvtimeo = 0, 5000
    try:
        sock.connect(server.zmq_address)
        sock.send(b"\x91" * 100_000 + b"\xc0")  # a msgpack array nested 100k deep
        reply = msgspec.msgpack.decode(sock.recv())
    finally:
        sock.close()
        ctx.term()
    assert reply["code"] == "malformed" and "nests too deep" in reply["message"]


# -- 6. slow clients -------------------------------------------------------------------------------


def _trickle(socks: list[socket.socket], until: float) -> dict[int, tuple[float, bytes]]:
    """Send one byte per client every 0.2 s until each is closed by the server or ``until`` passes."""
    closed: dict[int, tuple[float, bytes]] = {}
    got: dict[int, bytes] = {i: b"" for i in range(len(socks))}
    while len(closed) < len(socks) and time.monotonic() < until:
        for i, conn in enumerate(socks):
            if i in closed:
                continue
            try:
                conn.send(b"x")
                conn.setblocking(False)
                try:
                    chunk = conn.recv(65536)
                except BlockingIOError:
                    continue
                got[i] += chunk
                if not chunk:
                    closed[i] = (time.monotonic(), got[i])
            except (BrokenPipeError, ConnectionResetError):
                closed[i] = (time.monotonic(), got[i])
        time.sleep(0.2)
    return closed


def test_slow_clients_are_dropped_within_the_timeout_and_others_are_served(
        served: tuple[PushServer, FakeHandler]) -> None:
    server, handler = served
    port, timeout_s = port_of(server.http_url), 1.0
    bound = timeout_s + 2.0 + 1.0  # header/body timeout + lingering after the 408 + scheduling slack
    socks: list[socket.socket] = []
    try:
        t0 = time.monotonic()
        for i in range(16):
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(conn)
            if i % 2:  # slow headers: a request line, then one header byte at a time
                conn.sendall(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            else:  # complete headers, then a body that never finishes
                conn.sendall(b"POST /v1/say HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                             + server.token.encode() + b"\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n{\"text\": \"")
        # a normal client is served meanwhile
        normal = raw_request(port, b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                             + server.token.encode())
        assert normal.status == 200
        closed = _trickle(socks, t0 + bound + 2.0)
    finally:
        for conn in socks:
            conn.close()
    assert len(closed) == len(socks), f"{len(socks) - len(closed)} slow clients still connected after {bound + 2} s"
    late = {i: round(t - t0, 2) for i, (t, _) in closed.items() if t - t0 > bound}
    assert not late, f"slow clients closed after the bound of {bound} s: {late}"
    for i, (_, got) in closed.items():
        if i % 2 == 0:  # the slow body is told why
            assert b" 408 " in got.split(b"\r\n", 1)[0] and b'"code":"timeout"' in got and b"http_timeout_s" in got
    assert handler.calls == 0


def test_an_idle_connection_is_closed_too(served: tuple[PushServer, FakeHandler]) -> None:
    server, _ = served
    with socket.create_connection(("127.0.0.1", port_of(server.http_url)), timeout=5) as conn:
        t0 = time.monotonic()
        when, got = wait_closed(conn, t0 + 5.0)
    assert when - t0 < 1.0 + 1.0 and got == b""


# -- 6. rate-limited failure logs ---------------------------------------------------------------------


def test_a_flood_of_failures_is_one_line_per_kind(served: tuple[PushServer, FakeHandler],
                                                  caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server, handler = served
    port = port_of(server.http_url)
    server.core.limited.interval_s = 1.0
    monkeypatch.setattr(handler, "interrupt", lambda: 1 / 0)  # a daemon failure on every interrupt
    with caplog.at_level(logging.INFO):
        for _ in range(20):
            assert raw_request(port, b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1").status == 401
            assert post(port, b"/v1/say", b"{not json", server.token).status == 400
            assert post(port, b"/v1/interrupt", b"", server.token).status == 500
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3, [r.getMessage() for r in warnings]
    assert "Traceback" not in caplog.text and all(r.exc_info is None for r in caplog.records)
    failed = next(r.getMessage() for r in warnings if "failed" in r.getMessage())
    assert "ZeroDivisionError" in failed  # the one line still says what went wrong
    time.sleep(1.1)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert raw_request(port, b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1").status == 401
    assert "[19 more 'unauthorized' in the last 1 s not logged]" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="soulx_live.push"):
        server.core.limited.interval_s = 0.0
        assert post(port, b"/v1/interrupt", b"", server.token).status == 500
    assert "Traceback" in caplog.text  # at DEBUG the traceback is there


# -- 6. the queued-audio cap (both transports, the daemon's real PushBridge) --------------------------


@pytest.fixture
def bridged() -> Iterator[tuple[PushServer, PushSource]]:
    config = make_config(http=True, max_packet_s=2.0)
    config = config.model_copy(update={"push": config.push.model_copy(update={"max_queued_s": 5.0})})
    source = PushSource(sample_rate=16000, block_samples=640)  # nothing plays: the queue only grows
    bridge = PushBridge(config, source, make_tracker(16000, lambda e: None), interrupt=lambda: 1,
                        push_phonemes=lambda spans: None, status=lambda: {"state": "running"})
    for server in _serve(config, bridge):
        yield server, source


def test_queued_audio_is_capped_with_a_named_429(bridged: tuple[PushServer, PushSource]) -> None:
    server, source = bridged
    port = port_of(server.http_url)
    pcm = np.zeros(32000, "<i2").tobytes()  # 2 s at 16 kHz
    replies: list[RawReply] = [post(port, b"/v1/audio?rate=16000", pcm, server.token, b"application/octet-stream")
                               for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 429]
    body = replies[2].json()
    assert body["code"] == "queue_full"
    assert "4.0 s of pushed audio are queued" in body["message"] and "push.max_queued_s=5" in body["message"]
    assert source.queued_samples == 64000  # the refused push was not queued
    with PushClient(server.config, server.token) as client:
        client.push_pcm(np.zeros(16000, np.float32), 16000)  # 1 s still fits: 5 s queued now
        with pytest.raises(PushError, match=r"queue_full: .*5\.0 s of pushed audio are queued"):
            client.push_pcm(np.zeros(1600, np.float32), 16000)
    assert source.queued_samples == 80000
    source.clear()
    assert post(port, b"/v1/audio?rate=16000", pcm, server.token, b"application/octet-stream").status == 200
