"""One request path for every transport: authenticate, validate, convert, call the handler, answer.

Every failure becomes an :class:`~soulx_live.push.messages.ErrorReply` with a code and a message that
says what to send instead; nothing reaches the handler unless the token matched and the input is valid.
Failures are logged through one :class:`~soulx_live.push.log_safe.RateLimitedLog` per core: one line per
kind of failure and interval (with the count of repeats held back), client text quoted, no traceback
below DEBUG.
"""
from __future__ import annotations

import logging
import re
import uuid

from soulx_live.log_safe import RateLimitedLog, quoted

from .handler import PushHandler, PushReceipt, QueueFullError
from .messages import (
    ErrorReply,
    InterruptedReply,
    InterruptRequest,
    PushPcm,
    ReceiptReply,
    Reply,
    Request,
    SayRequest,
    StatusReply,
    StatusRequest,
)
from .pcm import PcmError, PcmSpec, decode_pcm
from .token import token_matches

__all__ = ["ENGINE_RATE", "MAX_TEXT_CHARS", "PushCore", "error"]

log = logging.getLogger(__name__)

ENGINE_RATE = 16000
MAX_TEXT_CHARS = 5000
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

HTTP_STATUS = {"unauthorized": 401, "timeout": 408, "too_large": 413, "queue_full": 429, "failed": 500}


def error(code: str, message: str) -> ErrorReply:
    return ErrorReply(code=code, message=message)


class PushCore:
    """``handle(request, pcm_bytes)`` -> Reply. Thread-safe as long as the handler is."""

    def __init__(self, handler: PushHandler, token: str, *, max_packet_s: float, token_hint: str) -> None:
        self.handler = handler
        self.sample_rate = int(getattr(handler, "sample_rate", ENGINE_RATE))
        self.max_packet_s = max_packet_s
        self._token = token
        self.token_hint = token_hint  # where the token is (for 401 messages); never the token itself
        self.rejected = 0
        self.limited = RateLimitedLog(log)  # shared by both transports: a flood of one kind is one line

    def authorized(self, given: str | None) -> bool:
        return token_matches(given, self._token)

    def unauthorized(self) -> ErrorReply:
        self.rejected += 1
        return error("unauthorized", f"missing or wrong push token; {self.token_hint}")

    def handle(self, req: Request, pcm: bytes | memoryview | None = None, *, authenticated: bool = False) -> Reply:
        if not authenticated and not self.authorized(req.token):
            return self.unauthorized()
        try:
            if isinstance(req, PushPcm):
                if pcm is None:
                    return self.reject("bad_request", "PushPcm needs the PCM bytes as the frame after the header")
                spec = PcmSpec(req.format, req.sample_rate, req.channels)
                return self.push_pcm(spec, pcm, req.utterance_id)
            if isinstance(req, SayRequest):
                return self.say(req.text, req.voice, req.utterance_id)
            if isinstance(req, InterruptRequest):
                return InterruptedReply(epoch=int(self.handler.interrupt()))
            if isinstance(req, StatusRequest):
                return StatusReply(status=_jsonable(self.handler.status()))
        except Exception as exc:  # noqa: BLE001 - any handler failure is a named 500 "failed", never a dead thread
            self.limited.warning(f"failed:{type(req).__name__}", "push request %s failed", type(req).__name__,
                                 exc=exc)
            detail = f"{type(exc).__name__}: {exc}"[:300]
            return error("failed", f"the daemon failed on {type(req).__name__} ({detail}); see its log")
        return self.reject("unknown_type", f"unknown request {type(req).__name__}")

    def push_pcm(self, spec: PcmSpec, data: bytes | memoryview, utterance_id: str | None) -> Reply:
        uid = self._uid(utterance_id)
        if isinstance(uid, ErrorReply):
            return uid
        try:
            pcm = decode_pcm(data, spec, out_rate=self.sample_rate, max_packet_s=self.max_packet_s)
        except PcmError as exc:
            return self.reject(exc.code, str(exc))
        return self._call(lambda: self.handler.push_pcm(pcm, utterance_id=uid))

    def say(self, text: str, voice: str | None, utterance_id: str | None) -> Reply:
        uid = self._uid(utterance_id)
        if isinstance(uid, ErrorReply):
            return uid
        if not isinstance(text, str) or not text.strip():
            return self.reject("bad_request", "nothing to say: 'text' is empty")
        if len(text) > MAX_TEXT_CHARS:
            return self.reject("too_large", f"text is {len(text)} characters; at most {MAX_TEXT_CHARS} per request "
                                             "(split it into sentences)")
        return self._call(lambda: self.handler.say(text, voice=voice, utterance_id=uid))

    def _call(self, fn: object) -> Reply:
        try:
            receipt: PushReceipt = fn()  # type: ignore[operator]
        except QueueFullError as exc:
            return self.reject("queue_full", str(exc))
        except (ValueError, TypeError) as exc:
            return self.reject("bad_request", str(exc))
        return ReceiptReply(utterance_id=receipt.utterance_id, start_s=receipt.start_sample / self.sample_rate,
                            duration_s=receipt.n_samples / self.sample_rate)

    def _uid(self, given: str | None) -> str | ErrorReply:
        if given is None or given == "":
            return uuid.uuid4().hex[:12]
        if not _ID.match(given):
            return self.reject("bad_request", "utterance_id must be 1-64 characters of A-Z a-z 0-9 . _ : -")
        return given

    def reject(self, code: str, message: str) -> ErrorReply:
        """Count, log (rate-limited, quoted: the message may echo the client's input) and answer."""
        self.rejected += 1
        self.limited.warning(f"rejected:{code}", "push request rejected (%s): %s", code, quoted(message, 300))
        return error(code, message)


def _jsonable(value: object) -> dict[str, object]:
    """Status values as JSON/msgpack-safe types (numbers, strings, bools, None, lists, dicts)."""
    def conv(v: object) -> object:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if hasattr(v, "item"):
            return conv(v.item())  # type: ignore[attr-defined]
        return str(v)
    return conv(dict(value)) if isinstance(value, dict) else {"value": conv(value)}  # type: ignore[return-value]
