"""Python client of the push API over ZeroMQ (used by ``soulx-live say``).

>>> client = PushClient(load_config())          # token: push.token, else <runtime_dir>/push.token
>>> client.say("Hello there")                   # ReceiptReply(utterance_id=..., start_s=..., duration_s=...)
>>> client.push_pcm(pcm_int16, 24000)           # any rate, int16 or float32, mono or (n, 2) stereo
>>> for event in client.events(timeout_s=10): print(event.kind, event.utterance_id)
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self, TypeVar

import numpy as np
import zmq

from soulx_live.config import SoulxConfig
from soulx_live.runtime_dir import endpoint

from . import (
    messages as wire,  # the wire messages, named wire.X: the client builds requests, reads replies
)
from .token import TokenFileError, load_token, token_path
from .utterances import SpeechEvent

__all__ = ["PushClient", "PushError", "PushUnavailable"]

log = logging.getLogger(__name__)

_R = TypeVar("_R")

START_HINT = "start one with: soulx-live run --set audio.source=push"


class PushError(RuntimeError):
    """The daemon refused a request; ``code`` is the ErrorReply code (unauthorized, bad_audio, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class PushUnavailable(PushError):
    """No daemon answers on the push socket."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


class PushClient:
    def __init__(self, config: SoulxConfig, token: str | None = None, *, timeout_s: float = 10.0) -> None:
        self.config = config
        self.address = endpoint("push", config.bus)
        self.events_address = endpoint("push-events", config.bus)
        self.timeout_s = timeout_s
        if self.address.startswith("ipc://") and not Path(self.address[6:]).exists():
            raise PushUnavailable(f"no daemon's push API at {self.address}; {START_HINT}")
        try:
            token = token if token is not None else load_token(config)
        except TokenFileError as exc:
            raise PushUnavailable(str(exc)) from None
        if token is None:
            raise PushUnavailable(f"no push token: {token_path(config)} does not exist and push.token is not set; "
                                  f"is the daemon running? {START_HINT}")
        self._token = token
        self._ctx = zmq.Context()
        self._req: zmq.Socket | None = None
        self._sub: zmq.Socket | None = None

    # -- requests --------------------------------------------------------------------------------

    def push_pcm(self, pcm: np.ndarray, sample_rate: int, *, utterance_id: str | None = None) -> wire.ReceiptReply:
        """Send int16 or float32 PCM, shape ``(n,)`` or ``(n, channels)``, at ``sample_rate``."""
        data = np.asarray(pcm)
        channels = 1 if data.ndim == 1 else int(data.shape[1])
        if data.dtype == np.int16:
            fmt, body = "s16le", data.astype("<i2", copy=False).tobytes()
        elif np.issubdtype(data.dtype, np.floating):
            fmt, body = "f32le", data.astype("<f4", copy=False).tobytes()
        else:
            raise TypeError(f"push_pcm takes int16 or float samples, got {data.dtype}")
        head = wire.PushPcm(token=self._token, format=fmt, sample_rate=int(sample_rate), channels=channels,
                            utterance_id=utterance_id)
        return self._expect(self._request([wire.encode(head), body]), wire.ReceiptReply)

    def push_bytes(self, data: bytes, *, format: str, sample_rate: int, channels: int = 1,
                   utterance_id: str | None = None) -> wire.ReceiptReply:
        head = wire.PushPcm(token=self._token, format=format, sample_rate=sample_rate, channels=channels,
                            utterance_id=utterance_id)
        return self._expect(self._request([wire.encode(head), data]), wire.ReceiptReply)

    def say(self, text: str, voice: str | None = None, *, utterance_id: str | None = None) -> wire.ReceiptReply:
        req = wire.SayRequest(token=self._token, text=text, voice=voice, utterance_id=utterance_id)
        return self._expect(self._request([wire.encode(req)]), wire.ReceiptReply)

    def interrupt(self) -> int:
        request = wire.InterruptRequest(token=self._token)
        reply = self._expect(self._request([wire.encode(request)]), wire.InterruptedReply)
        return reply.epoch

    def status(self) -> dict[str, object]:
        request = wire.StatusRequest(token=self._token)
        reply = self._expect(self._request([wire.encode(request)]), wire.StatusReply)
        return reply.status

    def request_raw(self, frames: list[bytes]) -> wire.Reply:
        """Send frames as they are and return the reply (tests, other languages' reference)."""
        return self._request(frames)

    # -- events ----------------------------------------------------------------------------------

    def subscribe(self) -> None:
        """Connect to the events socket now (call before the request whose events you want)."""
        if self._sub is None:
            sub = self._ctx.socket(zmq.SUB)
            sub.linger = 0
            sub.setsockopt(zmq.SUBSCRIBE, wire.EVENTS_TOPIC)
            sub.connect(self.events_address)
            self._sub = sub
            time.sleep(0.1)  # let the subscription reach the publisher

    def events(self, timeout_s: float) -> Iterator[SpeechEvent]:
        """Speech events as they come; ends after ``timeout_s`` without one."""
        self.subscribe()
        assert self._sub is not None
        while self._sub.poll(int(timeout_s * 1000)):
            _, data = self._sub.recv_multipart()
            msg = wire.decode_reply(data)
            if isinstance(msg, wire.SpeechEventMsg):
                yield SpeechEvent(msg.kind, msg.utterance_id, msg.position_s, msg.played_s)  # type: ignore[arg-type]

    def close(self) -> None:
        for sock in (self._req, self._sub):
            if sock is not None:
                sock.close(linger=0)
        self._req = self._sub = None
        self._ctx.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _request(self, frames: list[bytes]) -> wire.Reply:
        if self._req is None:
            req = self._ctx.socket(zmq.REQ)
            req.linger = 0
            req.connect(self.address)
            self._req = req
        self._req.send_multipart(frames)
        if not self._req.poll(int(self.timeout_s * 1000)):
            self._req.close(linger=0)  # a REQ socket that missed its reply cannot send again
            self._req = None
            raise PushUnavailable(f"no answer from {self.address} within {self.timeout_s:g} s "
                                  f"(is the daemon running with audio.source=push? {START_HINT})")
        return wire.decode_reply(self._req.recv())  # type: ignore[return-value]

    @staticmethod
    def _expect(reply: object, kind: type[_R]) -> _R:
        """``reply`` if it is a ``kind``; the daemon's error (or a malformed answer) as :class:`PushError`."""
        if isinstance(reply, wire.ErrorReply):
            raise PushError(reply.code, reply.message)
        if not isinstance(reply, kind):
            raise PushError("malformed", f"expected {kind.__name__}, the daemon sent {type(reply).__name__}")
        return reply
