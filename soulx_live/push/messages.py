"""Push API messages on the ZeroMQ transport: typed, versioned msgspec structs (msgpack maps).

A request is a multipart message ``[header]`` or, for :class:`PushPcm`, ``[header, pcm bytes]``; the
reply is one :class:`Reply` frame. Events on ``push-events`` are ``[b"speech", SpeechEventMsg]``.
Every map has a ``type`` tag and a version ``v``; another ``v`` is refused with an error reply naming it.
The HTTP/WebSocket transport uses the same field names in JSON.
"""
from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

__all__ = [
    "EVENTS_TOPIC",
    "PUSH_VERSION",
    "ErrorCode",
    "ErrorReply",
    "InterruptRequest",
    "InterruptedReply",
    "MessageError",
    "PcmFormat",
    "PushPcm",
    "ReceiptReply",
    "Reply",
    "Request",
    "SayRequest",
    "SpeechEventMsg",
    "StatusReply",
    "StatusRequest",
    "decode_reply",
    "decode_request",
    "encode",
    "json_object",
]

PUSH_VERSION = 1
EVENTS_TOPIC = b"speech"

PcmFormat = Literal["s16le", "f32le"]
ErrorCode = Literal["unauthorized", "malformed", "version", "unknown_type", "bad_audio", "too_large",
                    "bad_request", "queue_full", "timeout", "failed"]

MAX_JSON_BYTES = 65536  # a command is a small flat object; say's text is at most 5000 characters
MAX_JSON_DEPTH = 16  # requests are flat; the cap is checked before decoding, so no nesting reaches a decoder


class _Msg(msgspec.Struct, tag=True, tag_field="type", kw_only=True, frozen=True):
    v: int = PUSH_VERSION


class _Req(_Msg, kw_only=True):
    token: str = ""


class PushPcm(_Req, kw_only=True):
    """Raw PCM in the next frame: interleaved ``format`` samples, ``channels`` (1-2), any ``sample_rate``."""

    format: str = "s16le"
    sample_rate: int = 16000
    channels: int = 1
    utterance_id: str | None = None


class SayRequest(_Req, kw_only=True):
    text: str
    voice: str | None = None
    utterance_id: str | None = None


class InterruptRequest(_Req, kw_only=True):
    pass


class StatusRequest(_Req, kw_only=True):
    pass


Request = PushPcm | SayRequest | InterruptRequest | StatusRequest


class ReceiptReply(_Msg, kw_only=True):
    """The utterance was queued: where it sits on the session timeline."""

    utterance_id: str
    start_s: float
    duration_s: float


class InterruptedReply(_Msg, kw_only=True):
    epoch: int


class StatusReply(_Msg, kw_only=True):
    status: dict[str, Any]


class ErrorReply(_Msg, kw_only=True):
    code: str
    message: str


Reply = ReceiptReply | InterruptedReply | StatusReply | ErrorReply


class SpeechEventMsg(_Msg, kw_only=True):
    kind: str  # started | finished | interrupted | lost
    utterance_id: str
    position_s: float
    played_s: float


class MessageError(ValueError):
    """Bytes that are not a request this build understands; ``code`` is the ErrorReply code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


_encoder = msgspec.msgpack.Encoder()
_req_decoder = msgspec.msgpack.Decoder(Request)
_reply_decoder = msgspec.msgpack.Decoder(Reply | SpeechEventMsg)
_REQUEST_TYPES = frozenset(cls.__name__ for cls in Request.__args__)


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def check_map(raw: object, types: frozenset[str] = _REQUEST_TYPES) -> None:
    """Raise :class:`MessageError` for a map with another version or an unknown type (JSON or msgpack)."""
    if not isinstance(raw, dict) or "type" not in raw:
        raise MessageError("malformed", f"a request is a map with a 'type' field (one of {', '.join(sorted(types))})")
    if raw.get("v", PUSH_VERSION) != PUSH_VERSION:
        raise MessageError("version", f"{raw['type']} has push message version {raw.get('v')!r}; this daemon speaks "
                                      f"version {PUSH_VERSION} (update the client or the daemon)")
    if raw["type"] not in types:
        raise MessageError("unknown_type", f"unknown request type {raw['type']!r}; known: {', '.join(sorted(types))}")


def decode_request(data: bytes | bytearray | memoryview) -> Request:
    """Parse one request header; :class:`MessageError` says what is wrong with it."""
    try:
        msg = _req_decoder.decode(data)
    except RecursionError:  # a request is a flat map; deep nesting is garbage, not a daemon failure
        raise MessageError("malformed", f"the msgpack header ({len(data)} bytes) nests too deep; a request is a "
                                        "flat map like {'type': 'SayRequest', 'text': '...'}") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        try:
            raw = msgspec.msgpack.decode(data)
        except RecursionError:
            raise MessageError("malformed", f"the msgpack header ({len(data)} bytes) nests too deep; a request is "
                                            "a flat map like {'type': 'SayRequest', 'text': '...'}") from None
        except msgspec.DecodeError:
            raise MessageError("malformed", f"not a msgpack request ({len(data)} bytes): {exc}") from None
        check_map(raw)
        raise MessageError("malformed", f"invalid {raw['type']}: {exc}") from None
    if msg.v != PUSH_VERSION:
        check_map({"type": type(msg).__name__, "v": msg.v})
    return msg


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")
_HINT = 'send one flat JSON object, e.g. {"text": "hello"}'


def json_depth(data: bytes, stop_above: int) -> int:
    """How deep ``data``'s arrays/objects nest (brackets inside strings do not count); counting stops once
    past ``stop_above``, so garbage costs no more than the body's length."""
    depth = deepest = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', data)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


def json_object(data: bytes | str) -> dict[str, Any]:
    """One JSON object from the network (UTF-8 bytes or text), size and nesting capped before decoding;
    :class:`MessageError` names what is wrong and what to send instead."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    # nesting first (on a bounded prefix: cheap whatever the size), so a nesting attack is named as such
    if json_depth(raw[:MAX_JSON_BYTES], MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise MessageError("malformed", f"the JSON nests deeper than {MAX_JSON_DEPTH} levels; {_HINT}")
    if len(raw) > MAX_JSON_BYTES:
        raise MessageError("too_large", f"the JSON is {len(raw)} bytes; at most {MAX_JSON_BYTES} "
                                        "(split long text into several say requests)")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError("malformed", f"the body is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                                        f"{exc.start}); encode the JSON as UTF-8 and {_HINT}") from None
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:  # the depth check makes this unreachable; kept so no input becomes a 500
        raise MessageError("malformed", f"the JSON nests too deep; {_HINT}") from None
    except msgspec.DecodeError as exc:
        raise MessageError("malformed", f"not JSON ({exc}); {_HINT}") from None
    if not isinstance(value, dict):
        raise MessageError("malformed", f"the body must be a JSON object, not {type(value).__name__}; {_HINT}")
    return value


def request_from_json(raw: object) -> Request:
    """A request from a decoded JSON object (HTTP/WebSocket), checked like :func:`decode_request`."""
    check_map(raw)
    try:
        return msgspec.convert(raw, Request)
    except msgspec.ValidationError as exc:
        raise MessageError("malformed", f"invalid {raw['type']}: {exc}") from None  # type: ignore[index]


def decode_reply(data: bytes | bytearray | memoryview) -> Reply | SpeechEventMsg:
    msg = _reply_decoder.decode(data)
    if msg.v != PUSH_VERSION:
        raise MessageError("version", f"the daemon answered with push message version {msg.v}; this client speaks "
                                      f"version {PUSH_VERSION} (run the same soulx-live version on both ends)")
    return msg
