"""The Studio's HTTP server (aiohttp, its own thread and event loop): the page, its JSON API, one WebSocket.

Routes (all but ``/login`` need the session cookie or ``Authorization: Bearer``; refused: 401, and an HTML page
that says how to log in for a browser):

- ``GET /login?code=...`` trades the one-time code for the cookie (303 to ``/``); a spent or wrong code: 403.
- ``GET /`` the page; ``GET /static/<file>`` its script and style (shipped in the package).
- ``GET /api/state``, ``GET /api/health``; ``POST /api/say``, ``/api/interrupt``, ``/api/avatar`` (the image as
  the body), ``/api/sinks/<name>``, ``/api/audio``, ``/api/obs/scene``; ``GET /api/obs/scenes``.
- ``GET /api/live`` (WebSocket): preview chunks (binary), health every ``HEALTH_EVERY_S`` and speech events (JSON).

A POST whose ``Origin`` is not this server is refused (403): the cookie is ``SameSite=Strict`` already, this is
the second lock.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import WSMsgType, web

from soulx_live.log_safe import RateLimitedLog, quoted
from soulx_live.loop_thread import start_loop_thread
from soulx_live.netaddr import is_loopback_host
from soulx_live.studio.auth import COOKIE, LOGIN_PATH, StudioAuth
from soulx_live.studio.controls import StudioControls, StudioError

__all__ = ["StudioServer"]

log = logging.getLogger(__name__)
_server_log = logging.getLogger(f"{__name__}.server")
_server_log.addFilter(RateLimitedLog(_server_log))

HEALTH_EVERY_S = 0.5
SESSION_S = 7 * 24 * 3600
CLIENT_QUEUE = 32  # messages waiting per page; a page that falls behind loses the oldest preview chunks
_STATIC = {"studio.js": "application/javascript", "studio.css": "text/css"}

_REFUSED_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>soulx-live Studio: not logged in</title>
</head><body style="font-family:sans-serif;max-width:40em;margin:3em auto"><h1 id="refused">Not logged in</h1>
<p>{why}</p><p>Open the one-time link that <code>soulx-live run</code> printed when it started. It works once;
<code>soulx-live studio</code> prints a new one.</p></body></html>"""


def _static(name: str) -> bytes:
    return resources.files("soulx_live.studio").joinpath("static", name).read_bytes()


class _Client:
    """One page's WebSocket: a bounded queue of messages (bytes: preview; str: JSON)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | str | None] = asyncio.Queue(CLIENT_QUEUE)

    def offer(self, item: bytes | str | None) -> None:
        while self.queue.full():
            self.queue.get_nowait()  # drop the oldest: a live preview prefers fresh to complete
        self.queue.put_nowait(item)


class StudioServer:
    """Serves the Studio on ``host:port`` (0: any free port); ``start()`` returns the base URL."""

    def __init__(self, host: str, port: int, auth: StudioAuth, controls: StudioControls,
                 state: Callable[[], dict[str, Any]], health: Callable[[], dict[str, Any]],
                 extra_routes: Callable[[web.Application], None] | None = None) -> None:
        self.host, self.port = host, port
        self.auth = auth
        self.controls = controls
        self._state = state
        self._health = health
        self._extra_routes = extra_routes
        self.url: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._clients: set[_Client] = set()
        self.refused = 0
        self._limited = RateLimitedLog(log)  # a flood of refused requests is one line per kind and interval
        self.push_http: Any = None  # the push API's HTTP side when it shares this port (PushHttpServer)

    # -- lifecycle (any thread) ------------------------------------------------------------------

    def start(self) -> str:
        if not is_loopback_host(self.host):
            log.warning("the Studio listens on %s: other machines can reach the login page (unencrypted); keep "
                        "studio.host=127.0.0.1 or put TLS in front", self.host)
        try:
            self._thread = start_loop_thread("studio-http", self._setup, self._cleanup, self._set_loop)
        except Exception as exc:
            raise OSError(f"the Studio cannot listen on {self.host}:{self.port}: {exc}; "
                          "set studio.port to a free port (0: any)") from exc
        return self.url  # type: ignore[return-value]

    def _set_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def _cleanup(self) -> None:
        self._pump_task.cancel()
        await asyncio.gather(self._pump_task, return_exceptions=True)
        await self._runner.cleanup()  # type: ignore[union-attr]

    def close(self) -> None:
        loop = self.loop
        if loop is None or self._thread is None:
            return

        def stop() -> None:
            for client in list(self._clients):
                client.offer(None)
            loop.call_later(0.05, loop.stop)

        loop.call_soon_threadsafe(stop)
        self._thread.join(5)
        self._thread = None

    def mount_push(self, http: Any) -> str:
        """Serve the push API's HTTP routes (``/v1/...``) here: same port, its own token (any thread)."""
        assert self.loop is not None and self.url is not None
        http.attach(self.loop, self.url)
        self.push_http = http
        return self.url

    # -- to the pages (any thread) ---------------------------------------------------------------

    def watching(self) -> bool:
        return bool(self._clients)

    def send(self, item: bytes | str) -> None:
        loop = self.loop
        if loop is None or loop.is_closed() or not self._clients:
            return
        try:
            loop.call_soon_threadsafe(self._fanout, item)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def send_json(self, obj: dict[str, Any]) -> None:
        self.send(json.dumps(obj))

    def _fanout(self, item: bytes | str) -> None:
        for client in list(self._clients):
            client.offer(item)

    # -- the app ---------------------------------------------------------------------------------

    async def _setup(self) -> None:
        from soulx_live.push.pcm import byte_cap

        config = self.controls.config
        size = max(int(config.studio.max_upload_mb * 2**20), byte_cap(config.push.max_packet_s)) + 4096
        app = web.Application(client_max_size=size, middlewares=[self._guard])
        r = app.router
        r.add_get(LOGIN_PATH, self._login)
        r.add_get("/", self._index)
        r.add_get("/static/{name}", self._static)
        r.add_get("/api/state", self._json_get(self._state))
        r.add_get("/api/health", self._json_get(self._health))
        r.add_get("/api/obs/scenes", self._json_get(self.controls.obs_scenes))
        r.add_post("/api/say", self._json_post(lambda b: self.controls.say(str(b.get("text", "")), b.get("voice"),
                                                                           _int_or_none(b.get("rate")))))
        r.add_post("/api/interrupt", self._json_post(lambda b: self.controls.interrupt()))
        r.add_post("/api/sinks/{name}", self._sink)
        r.add_post("/api/audio", self._json_post(lambda b: self.controls.set_audio(str(b.get("source", "none")),
                                                                                  b.get("device"))))
        r.add_post("/api/obs/scene", self._json_post(lambda b: self.controls.obs_scene(str(b.get("scene", "")))))
        r.add_post("/api/avatar", self._avatar)
        r.add_get("/api/live", self._live)
        r.add_route("*", "/v1/{tail:.*}", self._push)
        if self._extra_routes is not None:
            self._extra_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=_server_log)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        port = self._runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}"
        self._pump_task = asyncio.get_running_loop().create_task(self._health_pump())

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        path = request.path
        if path == LOGIN_PATH or path.startswith("/v1/"):  # the push API checks its own token
            return await handler(request)
        if path == "/favicon.ico":  # browsers ask on their own; no icon, and no refusal in the log for it
            return web.Response(status=204)
        if not self.auth.allowed(request.cookies.get(COOKIE), request.headers.get("Authorization")):
            self.refused += 1
            self._limited.warning("unauthorized", "studio: refused %s %s (not logged in)", quoted(request.method, 16),
                                  quoted(path))
            if path.startswith("/api/"):
                return web.json_response({"code": "unauthorized", "message": "not logged in: open the one-time link "
                                          "soulx-live run printed, or run soulx-live studio for a new one"}, status=401)
            return web.Response(text=_REFUSED_HTML.format(why="This page needs the login link."), status=401,
                                content_type="text/html")
        origin = request.headers.get("Origin")  # a browser names the page that sent the request
        if ((request.method == "POST" or path == "/api/live") and origin is not None
                and origin != f"{request.scheme}://{request.host}"):
            return web.json_response({"code": "forbidden", "message": "cross-site request refused"}, status=403)
        try:
            return await handler(request)
        except StudioError as exc:
            return web.json_response({"code": exc.code, "message": exc.message}, status=exc.status)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        if not self.auth.redeem(request.query.get("code")):
            self.refused += 1
            self._limited.warning("login", "studio: refused a login with a spent or wrong one-time code")
            return web.Response(text=_REFUSED_HTML.format(why="This login link was already used or is wrong."),
                                status=403, content_type="text/html")
        log.info("studio: a browser logged in")
        resp = web.HTTPSeeOther("/")
        # kept across browser restarts while this daemon runs (the secret dies with the daemon)
        resp.set_cookie(COOKIE, self.auth.secret, httponly=True, samesite="Strict", path="/", max_age=SESSION_S)
        raise resp

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=_static("index.html"), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), content_type=_STATIC[name], headers={"Cache-Control": "no-store"})

    def _json_get(self, fn: Callable[[], dict[str, Any]]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return web.json_response(await asyncio.get_running_loop().run_in_executor(None, fn))
        return handle

    def _json_post(self, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            body = await _json_body(request)
            return web.json_response(await asyncio.get_running_loop().run_in_executor(None, fn, body))
        return handle

    async def _sink(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        name, enabled = request.match_info["name"], bool(body.get("enabled", True))
        return web.json_response(self.controls.set_sink(name, enabled))

    async def _avatar(self, request: web.Request) -> web.Response:
        data = await request.read()
        name = request.headers.get("X-Filename", "upload")
        reply = await asyncio.get_running_loop().run_in_executor(None, self.controls.set_avatar, data, name)
        return web.json_response(reply)

    async def _push(self, request: web.Request) -> web.StreamResponse:
        http = self.push_http
        if http is None or not http.attached:
            return web.json_response({"code": "unavailable", "message": "the push API is not running here: it needs "
                                      "audio.source=push and push.http_enabled=true"}, status=503)
        return await http.dispatch(request)

    async def _live(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        client = _Client()
        self._clients.add(client)
        sender = asyncio.create_task(self._pump(ws, client))
        try:
            async for msg in ws:  # the page only listens; anything it sends is read and dropped
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            self._clients.discard(client)
            client.offer(None)
            await sender
        return ws

    async def _pump(self, ws: web.WebSocketResponse, client: _Client) -> None:
        while True:
            item = await client.queue.get()
            if item is None:
                if not ws.closed:
                    await ws.close()
                return
            try:
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_str(item)
            except (ConnectionError, RuntimeError):
                return

    async def _health_pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            if not self._clients:
                continue
            try:
                figures = await loop.run_in_executor(None, self._health)
            except Exception:
                log.debug("studio: health sample failed", exc_info=True)
                continue
            self._fanout(json.dumps({"type": "health", **figures}))


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = json.loads(await request.text())
    except (ValueError, UnicodeDecodeError):
        raise StudioError("malformed", "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise StudioError("malformed", "the request body must be a JSON object")
    return body


def _int_or_none(value: object) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StudioError("bad_rate", f"rate must be a whole number of words per minute, got {quoted(value, 20)}") from None
