"""The laptop's end of the remote link: one DEALER socket, owned by the daemon's engine thread.

``IMMEDIATE`` keeps messages from queueing for a connection that is not up (or never passes the CURVE
handshake), so a Hello is sent once per try, not replayed in a burst when the link comes back. The link is down
when nothing (chunks, pongs) has been heard for ``remote.link_timeout_s``; the driver then opens a fresh socket
and says Hello again.
"""
from __future__ import annotations

import logging
import time
from collections import Counter

import zmq

from soulx_live.config import RemoteConfig
from soulx_live.log_safe import RateLimitedLog
from soulx_live.remote import wire as w
from soulx_live.remote.security import ClientSecurity, split_address

__all__ = ["Received", "RemoteLink"]

log = logging.getLogger(__name__)

PING_EVERY_S = 0.25
QUEUE_MESSAGES = 64

Received = tuple[w.WireMessage, list[bytes], float]  # message, payload frames, arrival (time.monotonic())


class RemoteLink:
    """Not thread-safe: one thread (the engine thread) uses it."""

    def __init__(self, cfg: RemoteConfig) -> None:
        assert cfg.address is not None
        self.cfg = cfg
        host, port = split_address(cfg.address)
        self.security = ClientSecurity(cfg, host)
        self.url = f"tcp://{'[' + host + ']' if ':' in host else host}:{port}"
        self.errors: Counter[str] = Counter()  # bad messages from the server, by wire error name
        self.rtt_s = 0.0
        self.last_heard = time.monotonic()
        self.bytes_down = 0
        self._sock: zmq.Socket | None = None
        self._ping_due = 0.0
        self._rlog = RateLimitedLog(log)

    def open(self) -> None:
        """A fresh socket (the old one, if any, is dropped with whatever it had queued)."""
        self.close()
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, QUEUE_MESSAGES)
        sock.setsockopt(zmq.RCVHWM, QUEUE_MESSAGES)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, w.MAX_VIDEO_BYTES + (1 << 20))
        self.security.apply(sock)
        sock.connect(self.url)
        self._sock = sock
        self.last_heard = time.monotonic()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def send(self, msg: w.WireMessage, *payload: bytes) -> bool:
        """Queue one message; False when the link cannot take it now (not connected, or its queue is full)."""
        if self._sock is None:
            return False
        try:
            self._sock.send_multipart([w.encode(msg), *payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def ping(self) -> None:
        now = time.monotonic()
        if now >= self._ping_due:
            self._ping_due = now + PING_EVERY_S
            self.send(w.Ping(sent_ns=time.monotonic_ns()))

    def receive(self, timeout_ms: int) -> list[Received]:
        """Every valid message that arrived within ``timeout_ms`` (bad ones counted and logged)."""
        out: list[Received] = []
        sock = self._sock
        if sock is None or not sock.poll(timeout_ms, zmq.POLLIN):
            return out
        while True:
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return out
            now = time.monotonic()
            self.last_heard = now
            self.bytes_down += sum(len(f) for f in frames)
            try:
                msg, payload = w.parse(frames, "down")
            except w.WireError as exc:
                self.errors[exc.name] += 1
                self._rlog.warning(exc.name, "dropped a bad message from the server (%s): %s", exc.name, str(exc)[:200])
                continue
            if isinstance(msg, w.Pong):
                self.rtt_s = (time.monotonic_ns() - msg.echo_ns) / 1e9
                continue
            out.append((msg, payload, now))

    @property
    def silent_s(self) -> float:
        return time.monotonic() - self.last_heard
