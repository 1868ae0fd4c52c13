"""HTTP + WebSocket push endpoint on one port (aiohttp), served from its own thread and event loop.

Routes (all need ``Authorization: Bearer <token>``; ``/v1/events`` also takes ``?token=``):

- ``POST /v1/audio``: a WAV body, or raw PCM with ``?rate=24000&format=s16le|f32le&channels=1|2``;
  optional ``&utterance_id=``. -> ``{"type": "ReceiptReply", "utterance_id", "start_s", "duration_s"}``
- ``POST /v1/say``: ``{"text": "...", "voice": null}`` -> ReceiptReply
- ``POST /v1/interrupt`` -> ``{"type": "InterruptedReply", "epoch"}``; ``GET /v1/status`` -> StatusReply
- ``GET /v1/events``: WebSocket. The server sends speech events as JSON text
  (``{"type": "SpeechEventMsg", "kind", "utterance_id", "position_s", "played_s"}``). The client may send
  ``{"type": "format", "format": "s16le", "rate": 24000, "channels": 1}`` and then binary PCM frames,
  and ``{"type": "say"|"interrupt"|"status", ...}``; each gets a JSON reply on the same socket.

Errors: ``{"type": "ErrorReply", "code", "message"}`` with 400 (bad input), 401 (token), 408 (the body did not
arrive in time), 413 (too large), 429 (too much audio queued), 500 (daemon failure). Bodies over the byte cap
are refused from Content-Length before they are read. A client gets ``push.http_timeout_s`` to send its
request headers and again its body, then the connection is closed (slow clients cannot hold sockets).
Nothing from the network reaches the log unquoted (:mod:`soulx_live.push.log_safe`), and failed requests
are logged once per kind and interval with a count of the repeats.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from soulx_live.log_safe import RateLimitedLog, quoted
from soulx_live.loop_thread import start_loop_thread
from soulx_live.netaddr import is_loopback_host

from .core import HTTP_STATUS, PushCore
from .messages import (
    MAX_JSON_BYTES,
    ErrorReply,
    MessageError,
    Reply,
    SpeechEventMsg,
    json_object,
    request_from_json,
)
from .pcm import PcmError, PcmSpec, check_spec, parse_wav

__all__ = ["PushHttpServer"]

log = logging.getLogger(__name__)
# aiohttp's own per-connection errors (unparsable request lines, ...): summarised, rate-limited, no traceback
# below DEBUG. One filter for the process: these are rare, and tests start servers one after another.
_server_log = logging.getLogger(f"{__name__}.server")
_server_log.addFilter(RateLimitedLog(_server_log))

_JSON_CHARSETS = frozenset({None, "utf-8", "utf8", "us-ascii", "ascii"})  # JSON is UTF-8 (RFC 8259)
_SAY_READ_BYTES = 16 * MAX_JSON_BYTES
_LINGER_S = 2.0  # after an early answer (413, 408), read and drop the rest of a body this long, then close
_WS_TYPES = {"say": "SayRequest", "interrupt": "InterruptRequest", "status": "StatusRequest"}
_QUEUE_MAX = 256


def _response(reply: Reply) -> web.Response:
    status = HTTP_STATUS.get(reply.code, 400) if isinstance(reply, ErrorReply) else 200
    return web.Response(body=msgspec.json.encode(reply), status=status, content_type="application/json")


def _error(code: str, message: str) -> web.Response:
    return _response(ErrorReply(code=code, message=message))


class PushHttpServer:
    """``timeout_s``: time a client has to send its request headers, and again its body."""

    def __init__(self, core: PushCore, host: str, port: int, max_bytes: int, *, timeout_s: float = 10.0) -> None:
        self.core = core
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._clients: set[asyncio.Queue[str | None]] = set()

    # -- lifecycle (any thread) ------------------------------------------------------------------

    def start(self) -> str:
        """Bind and serve; returns ``http://host:port`` (the bound port when ``port`` is 0)."""
        if not is_loopback_host(self.host):
            log.warning("push HTTP listens on %s: reachable from other machines, protected by the token only and "
                        "unencrypted; keep it on 127.0.0.1 or put TLS in front", self.host)
        try:
            self._thread = start_loop_thread("push-http", self._setup, self._cleanup, self._set_loop)
        except Exception as exc:
            raise RuntimeError(f"push HTTP cannot listen on {self.host}:{self.port}: {exc}; "
                               "set push.http_port to a free port (or 0 for any)") from exc
        return self.url  # type: ignore[return-value]

    def _set_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def _cleanup(self) -> None:
        await self._runner.cleanup()  # type: ignore[union-attr]

    def attach(self, loop: asyncio.AbstractEventLoop, url: str) -> None:
        """Serve through another aiohttp server on ``loop`` (the Studio's, sharing its port) instead of binding:
        that server passes every ``/v1/...`` request to :meth:`dispatch`."""
        self._loop, self.url = loop, url

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """One request of the push API, as the Studio's server hands it over (token checked here as always)."""
        routes = {("POST", "/v1/audio"): self._audio, ("POST", "/v1/say"): self._say,
                  ("POST", "/v1/interrupt"): self._interrupt, ("GET", "/v1/status"): self._status,
                  ("GET", "/v1/events"): self._events}
        handler = routes.get((request.method, request.path))
        if handler is None:
            raise web.HTTPNotFound()
        if request.content_length is not None and request.content_length > self.max_bytes:
            return self._reject("too_large", f"the body is {request.content_length} bytes; at most {self.max_bytes}")
        return await self._auth(request, handler)

    @property
    def attached(self) -> bool:
        return self._thread is None and self._loop is not None

    def detach(self) -> None:
        """Stop serving through the other server: event streams end."""
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            def stop() -> None:
                for q in list(self._clients):
                    q.put_nowait(None)
            try:
                loop.call_soon_threadsafe(stop)
            except RuntimeError:
                pass

    def close(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            if self._thread is None:
                self.detach()
            return

        def stop() -> None:
            for q in list(self._clients):
                q.put_nowait(None)
            loop.call_later(0.05, loop.stop)

        loop.call_soon_threadsafe(stop)
        self._thread.join(timeout=5)
        self._thread = None

    def publish(self, event: SpeechEventMsg) -> None:
        """Fan an event out to every WebSocket client (called from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        text = msgspec.json.encode(event).decode()
        try:
            loop.call_soon_threadsafe(self._fanout, text)
        except RuntimeError:  # loop closed meanwhile
            pass

    # -- inside the loop -------------------------------------------------------------------------

    async def _setup(self) -> None:
        app = web.Application(client_max_size=self.max_bytes, middlewares=[self._auth])
        app.router.add_post("/v1/audio", self._audio)
        app.router.add_post("/v1/say", self._say)
        app.router.add_post("/v1/interrupt", self._interrupt)
        app.router.add_get("/v1/status", self._status)
        app.router.add_get("/v1/events", self._events)
        # keepalive_timeout also bounds the wait for a request's headers: aiohttp closes a connection whose
        # next request is not complete by then (it has no separate header timeout)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=_server_log,
                                     keepalive_timeout=self.timeout_s,
                                     lingering_time=min(_LINGER_S, self.timeout_s))
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}"

    def _fanout(self, text: str) -> None:
        for q in list(self._clients):
            if q.full():
                self.core.limited.warning("ws-slow", "a push WebSocket client is not reading events; dropping one")
                continue
            q.put_nowait(text)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        given = None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[7:].strip()
        elif request.path == "/v1/events":
            given = request.query.get("token")
        if not self.core.authorized(given):
            self.core.limited.warning("unauthorized", "push HTTP %s %s rejected: missing or wrong token",
                                      quoted(request.method, 16), quoted(request.path))
            return _response(self.core.unauthorized())
        if request.content_length is not None and request.content_length > self.max_bytes:
            return self._reject("too_large", f"the body is {request.content_length} bytes; at most {self.max_bytes} "
                                             f"(push.max_packet_s={self.core.max_packet_s:g} s of audio per request)")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return self._reject("too_large", f"the body is larger than {self.max_bytes} bytes; split the audio")
        except _BodyTimeout:
            return self._reject("timeout", f"the request body did not arrive within push.http_timeout_s="
                                           f"{self.timeout_s:g} s; send it at once", close=True)
        except (ConnectionError, asyncio.CancelledError, web.HTTPException):
            raise  # the client left (dropped quietly), or aiohttp's own answer (404, 405) stands
        except Exception as exc:  # noqa: BLE001 - any other failure is a named 500, logged once per kind
            self.core.limited.warning("failed", "push HTTP %s %s failed", quoted(request.method, 16),
                                      quoted(request.path), exc=exc)
            return _error("failed", f"the daemon failed on this request ({type(exc).__name__}); see its log")

    def _reject(self, code: str, message: str, *, close: bool = False) -> web.Response:
        resp = _response(self.core.reject(code, message))
        if close:
            resp.force_close()
        return resp

    async def _body(self, request: web.Request) -> bytes:
        """The whole body, or :class:`_BodyTimeout` once ``timeout_s`` has passed (a slow-loris body)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await request.read()
        except TimeoutError:
            raise _BodyTimeout from None

    async def _run(self, fn: Any, *args: Any) -> Reply:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _audio(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        q = request.query
        try:
            if request.content_type in ("audio/wav", "audio/x-wav", "audio/wave") or body[:4] == b"RIFF":
                spec, data = parse_wav(body)
            else:
                if "rate" not in q:
                    return _error("bad_audio", "raw PCM needs ?rate=<Hz> (and format=s16le|f32le, channels=1|2), "
                                               "or send a WAV file")
                spec = PcmSpec(q.get("format", "s16le"), int(q["rate"]), int(q.get("channels", "1")))
                data = memoryview(body)
        except PcmError as exc:
            return self._reject(exc.code, str(exc))
        except ValueError:
            return self._reject("bad_audio", "rate and channels must be integers, e.g. ?rate=24000&channels=1")
        return _response(await self._run(self.core.push_pcm, spec, data, q.get("utterance_id")))

    async def _say(self, request: web.Request) -> web.Response:
        # far too large is refused unread; up to _SAY_READ_BYTES is read so json_object names what is wrong
        if request.content_length is not None and request.content_length > _SAY_READ_BYTES:
            return self._reject("too_large", f"the body is {request.content_length} bytes; a say request is at most "
                                             f"{MAX_JSON_BYTES} (split long text into several requests)")
        charset = request.charset.lower() if request.charset else None
        if charset not in _JSON_CHARSETS:
            return self._reject("malformed", f"Content-Type charset {quoted(charset, 40)} is not supported: JSON is "
                                             "UTF-8; send Content-Type: application/json (charset=utf-8 or none)")
        try:
            raw: object = json_object(await self._body(request))
        except MessageError as exc:
            return self._reject(exc.code, str(exc))
        reply = self._from_json(raw, "SayRequest")
        if isinstance(reply, ErrorReply):
            return _response(reply)
        return _response(await self._run(self._handle, reply))

    async def _interrupt(self, request: web.Request) -> web.Response:
        return _response(await self._run(self._handle, self._from_json({}, "InterruptRequest")))

    async def _status(self, request: web.Request) -> web.Response:
        return _response(await self._run(self._handle, self._from_json({}, "StatusRequest")))

    def _handle(self, req: Any) -> Reply:
        return self.core.handle(req, None, authenticated=True)

    def _from_json(self, raw: object, type_name: str) -> Any:
        if not isinstance(raw, dict):
            return ErrorReply(code="malformed", message="the body must be a JSON object")
        try:
            return request_from_json({**raw, "type": type_name})
        except MessageError as exc:
            return self.core.reject(exc.code, str(exc))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=self.max_bytes, heartbeat=20)
        await ws.prepare(request)
        queue: asyncio.Queue[str | None] = asyncio.Queue(_QUEUE_MAX)
        self._clients.add(queue)
        sender = asyncio.create_task(self._pump(ws, queue))
        spec: PcmSpec | None = None
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    spec, reply = await self._ws_text(msg.data, spec)
                elif msg.type == WSMsgType.BINARY:
                    if spec is None:
                        reply = ErrorReply(code="bad_request", message='send {"type": "format", "format": "s16le", '
                                                                       '"rate": 24000, "channels": 1} before PCM frames')
                    else:
                        reply = await self._run(self.core.push_pcm, spec, msg.data, None)
                else:
                    break
                if reply is not None:
                    _offer(queue, msgspec.json.encode(reply).decode())
        finally:
            self._clients.discard(queue)
            _offer(queue, None)
            await sender
        return ws

    async def _ws_text(self, text: str, spec: PcmSpec | None) -> tuple[PcmSpec | None, Reply | None]:
        try:
            raw = json_object(text)
        except MessageError as exc:
            return spec, self.core.reject(exc.code, str(exc))
        if "type" not in raw:
            return spec, ErrorReply(code="malformed", message='a command is a JSON object with a "type": '
                                                              'format, say, interrupt or status')
        if raw["type"] == "format":
            try:
                new = PcmSpec(str(raw.get("format", "s16le")), int(raw["rate"]), int(raw.get("channels", 1)))
                check_spec(new)
            except (KeyError, TypeError, ValueError) as exc:
                msg = str(exc) if isinstance(exc, PcmError) else 'format needs "rate" (Hz) and integer "channels"'
                return spec, self.core.reject("bad_audio", msg)
            return new, None
        raw = {**raw, "type": _WS_TYPES.get(raw["type"], raw["type"])}
        if raw["type"] == "PushPcm":
            return spec, ErrorReply(code="bad_request", message="send PCM as binary frames after a format message")
        try:
            req = request_from_json(raw)
        except MessageError as exc:
            return spec, self.core.reject(exc.code, str(exc))
        return spec, await self._run(self._handle, req)

    async def _pump(self, ws: web.WebSocketResponse, queue: asyncio.Queue[str | None]) -> None:
        while True:
            text = await queue.get()
            if text is None:
                if not ws.closed:
                    await ws.close()
                return
            try:
                await ws.send_str(text)
            except ConnectionError:
                return


def _offer(queue: asyncio.Queue[str | None], item: str | None) -> None:
    if item is None:
        while queue.full():
            queue.get_nowait()
    if not queue.full():
        queue.put_nowait(item)


class _BodyTimeout(Exception):
    """The request body did not arrive within ``push.http_timeout_s``."""
