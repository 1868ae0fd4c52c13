"""The push server: ZeroMQ ``push`` (ROUTER, REQ clients) + ``push-events`` (PUB), and HTTP when enabled.

One thread owns the ZeroMQ sockets. It decodes and authenticates each request itself (cheap; a wrong
token or a malformed header is answered at once), then hands valid ones to a small worker pool (PCM
conversion, TTS) whose replies come back over an inproc socket, so a slow ``say`` never blocks an
``interrupt``. A request above the byte cap is dropped by ZeroMQ (``MAXMSGSIZE``) before it is read;
that client times out, the others go on.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import zmq

from soulx_live.config import SoulxConfig
from soulx_live.runtime_dir import endpoint

from .core import PushCore
from .handler import PushHandler
from .messages import (
    EVENTS_TOPIC,
    MessageError,
    Reply,
    SpeechEventMsg,
    decode_request,
    encode,
)
from .pcm import byte_cap
from .token import resolve_token, token_path
from .utterances import SpeechEvent

__all__ = ["PushServer"]

log = logging.getLogger(__name__)


class PushServer:
    """``start()`` binds and serves; ``close()`` stops. ``publish_event`` may be called from any thread."""

    def __init__(self, config: SoulxConfig, handler: PushHandler, *, http_mount: Any = None) -> None:
        """``http_mount(http) -> url``: serve the HTTP API through another server (the Studio's, on its port)."""
        self.config = config
        self._http_mount = http_mount
        self.token = resolve_token(config)
        if config.push.token is not None:
            hint = "send the push.token of the daemon's config"
        elif config.push.token_file is not None:
            hint = f"send the token in the daemon's push.token_file ({config.push.token_file})"
        else:
            hint = f"the daemon wrote it at start to {token_path(config)} (readable by its user only)"
        self.core = PushCore(handler, self.token, max_packet_s=config.push.max_packet_s, token_hint=hint)
        self.zmq_address = endpoint("push", config.bus)
        self.events_address = endpoint("push-events", config.bus)
        self.http_url: str | None = None
        self.max_bytes = byte_cap(config.push.max_packet_s)
        self._ctx = zmq.Context()
        self._pub_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="push-worker")
        self._local = threading.local()
        self._worker_socks: list[zmq.Socket] = []
        self._reply_addr = f"inproc://push-replies-{id(self)}"
        self._http: object = None
        self._router: zmq.Socket | None = None
        self._pub: zmq.Socket | None = None
        self._replies: zmq.Socket | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        router = self._ctx.socket(zmq.ROUTER)
        router.linger = 0
        router.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)
        router.bind(self.zmq_address)
        pub = self._ctx.socket(zmq.PUB)
        pub.linger = 0
        pub.bind(self.events_address)
        replies = self._ctx.socket(zmq.PULL)
        replies.linger = 0
        replies.bind(self._reply_addr)
        self._router, self._pub, self._replies = router, pub, replies
        if self.config.bus.transport == "tcp":  # ephemeral ports (tcp_port 0 is not allowed, but keep it exact)
            self.zmq_address = router.getsockopt_string(zmq.LAST_ENDPOINT)
            self.events_address = pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._thread = threading.Thread(target=self._loop, name="push-zmq", daemon=True)
        self._thread.start()
        if self.config.push.http_enabled:
            from .http import PushHttpServer

            push = self.config.push
            http = PushHttpServer(self.core, push.http_host, push.http_port, self.max_bytes, timeout_s=push.http_timeout_s)
            self.http_url = self._http_mount(http) if self._http_mount is not None else http.start()
            self._http = http
        log.info("push API listening on %s (events %s)%s", self.zmq_address, self.events_address,
                 f", HTTP {self.http_url}" if self.http_url else "")

    def close(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.close()  # type: ignore[attr-defined]
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for sock in self._worker_socks:
            sock.close(linger=0)
        with self._pub_lock:
            for sock in (self._router, self._pub, self._replies):
                if sock is not None:
                    sock.close(linger=0)
            self._router = self._pub = self._replies = None
        self._ctx.term()
        self._remove_token_file()

    def _remove_token_file(self) -> None:
        """A generated token dies with the server (a later client then hears "no daemon", not a timeout)."""
        if self.config.push.token is not None or self.config.push.token_file is not None:
            return
        path = token_path(self.config)
        try:
            if path.read_text().strip() == self.token:  # not a newer daemon's
                path.unlink()
        except OSError:
            pass

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- events ----------------------------------------------------------------------------------

    def publish_event(self, event: SpeechEvent) -> None:
        """Send a speech event to ZeroMQ subscribers and WebSocket clients."""
        msg = SpeechEventMsg(**dataclasses.asdict(event))
        with self._pub_lock:
            if self._pub is not None and not self._stop.is_set():
                self._pub.send_multipart([EVENTS_TOPIC, encode(msg)])
        if self._http is not None:
            self._http.publish(msg)  # type: ignore[attr-defined]

    # -- the socket thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._router is not None and self._replies is not None
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._replies, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                ready = dict(poller.poll(100))
                if self._replies in ready:
                    while True:
                        try:
                            self._router.send_multipart(self._replies.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                if self._router in ready:
                    self._on_request(self._router.recv_multipart(copy=False))
            except zmq.ContextTerminated:
                return
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the socket thread
                self.core.limited.warning("zmq-loop", "push server: request handling failed; going on", exc=exc)

    def _on_request(self, frames: list[zmq.Frame]) -> None:
        try:
            split = next(i for i, f in enumerate(frames) if len(f) == 0)
        except StopIteration:
            self.core.limited.warning("no-envelope", "push: dropping a message without an envelope "
                                                     "(use a REQ or DEALER socket)")
            return
        envelope = [f.bytes for f in frames[:split + 1]]
        body = frames[split + 1:]
        if not body:
            self._send(envelope, self.core.reject("malformed", "empty request: send a header frame"))
            return
        try:
            req = decode_request(body[0].buffer)
        except MessageError as exc:
            self._send(envelope, self.core.reject(exc.code, str(exc)))
            return
        if not self.core.authorized(req.token):
            self.core.limited.warning("unauthorized", "push request %s rejected: missing or wrong token",
                                      type(req).__name__)
            self._send(envelope, self.core.unauthorized())
            return
        if len(body) > 2:
            self._send(envelope, self.core.reject("malformed", f"{len(body)} frames; send [header] or "
                                                               "[header, pcm bytes]"))
            return
        pcm = body[1].buffer if len(body) == 2 else None
        self._pool.submit(self._work, envelope, req, pcm)

    def _work(self, envelope: list[bytes], req: object, pcm: memoryview | None) -> None:
        reply = self.core.handle(req, pcm, authenticated=True)  # type: ignore[arg-type]
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._ctx.socket(zmq.PUSH)
            sock.linger = 0
            sock.connect(self._reply_addr)
            self._local.sock = sock
            self._worker_socks.append(sock)
        sock.send_multipart([*envelope, encode(reply)])

    def _send(self, envelope: list[bytes], reply: Reply) -> None:
        assert self._router is not None
        self._router.send_multipart([*envelope, encode(reply)])
