"""HTTP + WebSocket push endpoint on 127.0.0.1 (real aiohttp server and client, fake handler)."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import wave
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

aiohttp = pytest.importorskip("aiohttp", reason='the HTTP push API needs the [http] extra: pip install -e ".[http]" (or ".[all]")')
from push_testkit import FakeHandler, make_config, tone

from soulx_live.push.http import PushHttpServer
from soulx_live.push.server import PushServer
from soulx_live.push.utterances import SpeechEvent

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def served() -> Iterator[tuple[PushServer, FakeHandler]]:
    handler = FakeHandler()
    server = PushServer(make_config(http=True, max_packet_s=2.0), handler)
    server.start()
    try:
        yield server, handler
    finally:
        server.close()


def _call(server: PushServer, method: str, path: str, *, token: str | None = "ok", **kw: Any) -> tuple[int, dict]:
    async def go() -> tuple[int, dict]:
        headers = kw.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {server.token if token == 'ok' else token}"
        async with aiohttp.ClientSession() as s, s.request(method, server.http_url + path, headers=headers,
                                                           **kw) as r:
            return r.status, await r.json()
    return asyncio.run(go())


def _wav(x: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def test_endpoints_round_trip(served: tuple[PushServer, FakeHandler]) -> None:
    server, handler = served
    assert server.http_url.startswith("http://127.0.0.1:")
    pcm = (tone(24000, 0.5) * 32767).astype("<i2").tobytes()
    status, body = _call(server, "POST", "/v1/audio?rate=24000&format=s16le&channels=1&utterance_id=a1", data=pcm)
    assert (status, body["utterance_id"], body["duration_s"]) == (200, "a1", 0.5)
    status, body = _call(server, "POST", "/v1/audio", data=_wav(tone(8000, 0.25), 8000),
                         headers={"Content-Type": "audio/wav"})
    assert status == 200 and body["start_s"] == 0.5 and body["duration_s"] == 0.25
    assert [p.shape for _, p in handler.pcm] == [(8000,), (4000,)]
    status, body = _call(server, "POST", "/v1/say", json={"text": "hello you", "voice": "v1"})
    assert status == 200 and body["type"] == "ReceiptReply" and handler.said[0][:2] == ("hello you", "v1")
    assert _call(server, "POST", "/v1/interrupt") == (200, {"type": "InterruptedReply", "v": 1, "epoch": 1})
    status, body = _call(server, "GET", "/v1/status")
    assert status == 200 and body["status"]["state"] == "running"


@pytest.mark.parametrize(("method", "path", "kw", "status", "code", "words"), [
    ("POST", "/v1/audio?rate=16000&format=mp3", {"data": b"\0\0"}, 400, "bad_audio", "s16le"),
    ("POST", "/v1/audio", {"data": b"\0\0"}, 400, "bad_audio", "?rate="),
    ("POST", "/v1/audio?rate=abc", {"data": b"\0\0"}, 400, "bad_audio", "integers"),
    ("POST", "/v1/audio?rate=16000", {"data": b"\0\0\0"}, 400, "bad_audio", "whole number"),
    ("POST", "/v1/audio?rate=16000", {"data": b""}, 400, "bad_audio", "empty"),
    ("POST", "/v1/audio?rate=16000&format=f32le", {"data": np.array([np.inf], "<f4").tobytes()}, 400, "bad_audio",
     "infinite"),
    ("POST", "/v1/audio?rate=16000", {"data": b"\0\0" * 16000 * 3}, 413, "too_large", "max_packet_s"),
    ("POST", "/v1/audio", {"data": b"RIFF1234WAVEjunk"}, 400, "bad_audio", "WAV"),
    ("POST", "/v1/say", {"data": b"{not json"}, 400, "malformed", "not JSON"),
    ("POST", "/v1/say", {"json": ["a"]}, 400, "malformed", "JSON object"),
    ("POST", "/v1/say", {"json": {"text": ""}}, 400, "bad_request", "empty"),
    ("POST", "/v1/say", {"json": {"text": 5}}, 400, "malformed", "text"),
    ("POST", "/v1/say", {"json": {"text": "hi", "v": 9}}, 400, "version", "version 9"),
])
def test_bad_input_gets_clear_errors(served: tuple[PushServer, FakeHandler], method: str, path: str,
                                     kw: dict[str, Any], status: int, code: str, words: str) -> None:
    server, handler = served
    got_status, body = _call(server, method, path, **kw)
    assert (got_status, body["type"], body["code"]) == (status, "ErrorReply", code)
    assert words in body["message"]
    assert handler.calls == 0
    assert _call(server, "POST", "/v1/interrupt")[0] == 200  # goes on


def test_hard_byte_cap_before_reading(served: tuple[PushServer, FakeHandler]) -> None:
    server, handler = served
    status, body = _call(server, "POST", "/v1/audio?rate=16000", data=b"\0" * (server.max_bytes + 2))
    assert status == 413 and body["code"] == "too_large" and handler.calls == 0


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_unauthenticated_is_401_naming_where_the_token_is(served: tuple[PushServer, FakeHandler],
                                                        token: str | None,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    server, handler = served
    with caplog.at_level(logging.DEBUG):
        for method, path in (("POST", "/v1/say"), ("POST", "/v1/interrupt"), ("GET", "/v1/status"),
                             ("POST", "/v1/audio?rate=16000")):
            status, body = _call(server, method, path, token=token, json={"text": "hi"})
            assert status == 401 and body["code"] == "unauthorized"
            assert "push.token" in body["message"] and server.token not in body["message"]
    assert handler.calls == 0
    assert server.token not in caplog.text


def test_websocket_events_pcm_and_commands(served: tuple[PushServer, FakeHandler]) -> None:
    server, handler = served

    async def go() -> list[dict]:
        got: list[dict] = []
        url = f"{server.http_url}/v1/events?token={server.token}"
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            await ws.send_bytes(b"\0\0" * 160)  # no format yet
            got.append(json.loads((await ws.receive()).data))
            await ws.send_str('{"type": "format", "format": "f32le", "rate": 32000, "channels": 2}')
            await ws.send_bytes(np.zeros((3200, 2), "<f4").tobytes())
            got.append(json.loads((await ws.receive()).data))
            for text in ("{bad", '{"type": "dance"}', '{"type": "format", "rate": 3}',
                         '{"type": "say", "text": "a b c d", "v": 2}',
                         '{"type": "say", "text": "a b c d"}', '{"type": "interrupt"}', '{"type": "status"}'):
                await ws.send_str(text)
                got.append(json.loads((await ws.receive()).data))
            server.publish_event(SpeechEvent("started", "u9", 1.0, 0.0))
            got.append(json.loads((await ws.receive(timeout=5)).data))
        return got

    got = asyncio.run(go())
    assert got[0]["code"] == "bad_request" and "format" in got[0]["message"]
    assert got[1]["type"] == "ReceiptReply" and got[1]["duration_s"] == 0.1
    assert [g.get("code") for g in got[2:6]] == ["malformed", "unknown_type", "bad_audio", "version"]
    assert got[6]["type"] == "ReceiptReply" and got[7]["epoch"] == 1 and got[8]["type"] == "StatusReply"
    assert got[9] == {"type": "SpeechEventMsg", "v": 1, "kind": "started", "utterance_id": "u9",
                      "position_s": 1.0, "played_s": 0.0}
    assert handler.pcm[0][1].shape == (1600,)


def test_websocket_needs_the_token(served: tuple[PushServer, FakeHandler]) -> None:
    server, _ = served

    async def go() -> int:
        async with aiohttp.ClientSession() as s:
            try:
                async with s.ws_connect(f"{server.http_url}/v1/events?token=nope"):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(go()) == 401


def test_non_loopback_host_warns(caplog: pytest.LogCaptureFixture) -> None:
    server = PushServer(make_config(), FakeHandler())
    http = PushHttpServer(server.core, "0.0.0.0", 0, 1024)
    with caplog.at_level(logging.WARNING):
        url = http.start()
    try:
        assert url.startswith("http://0.0.0.0:")
        assert "reachable from other machines" in caplog.text
    finally:
        http.close()
        server._ctx.term()
