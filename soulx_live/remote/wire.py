"""The messages of the remote link, and how every one of them is checked on arrival.

One ZeroMQ multipart message per wire message: ``[header, *payload]`` (the server's ROUTER sees the client's
routing id in front). The header is a msgspec struct (msgpack map with a ``type`` tag and the schema version
``v``); bulk bytes (PCM, H.264 packets) follow as extra frames that the header describes.

=================  ===========  ===================================================================
message            direction    payload frames
=================  ===========  ===================================================================
Hello              up           none: open (or resume) a session at the client's barge-in epoch
Welcome / Refused  down         none: the chunk spec and the codecs / why not
AudioUp            up           16-bit PCM (``n_samples`` little-endian int16, mono)
Interrupt          up           none: barge-in, the client's new epoch
KeyframeRequest    up           none: the decoder lost its reference (loss, late drop, decode error)
Ping / Pong        both         none: keep-alive and round-trip time
Bye                up           none: the client's input ended; the server drains the session
ChunkDown          down         H.264 packets of ``n`` frames (``packet_sizes``), then 16-bit PCM
EndDown            down         none: the session's last chunk has been sent
StatsRequest/Reply both         none: the server's counters (sessions, refusals, wire errors by name)
=================  ===========  ===================================================================

Anything else is dropped and counted under a name (:data:`ERROR_NAMES`), never raised past :func:`parse`.
"""
from __future__ import annotations

from typing import Literal, Union

import msgspec

__all__ = ["ERROR_NAMES", "MAX_AUDIO_SAMPLES", "WIRE_VERSION", "AudioUp", "Bye", "ChunkDown", "EndDown", "Hello",
           "Interrupt", "KeyframeRequest", "Ping", "Pong", "Refused", "StatsReply", "StatsRequest", "Welcome",
           "WireError", "WireMessage", "encode", "parse"]

WIRE_VERSION = 1
MAX_HEADER_BYTES = 16 << 10  # the largest header (a StatsReply) is a few hundred bytes
MAX_AUDIO_SAMPLES = 96_000  # 2 s at 48 kHz in one message
MAX_VIDEO_BYTES = 16 << 20  # one chunk's H.264 packets (a keyframe at 1080p is well under 1 MB)
MAX_FRAMES = 256  # frames in one chunk
MAX_SIDE = 4096  # pixels
MAX_TEXT = 200  # characters of any free-text field
ERROR_NAMES = ("malformed", "unknown_type", "version", "oversized", "bad_payload", "unexpected")


class WireError(ValueError):
    """A message that is dropped; ``name`` is one of :data:`ERROR_NAMES` (the counter it goes to)."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name = name


class _Msg(msgspec.Struct, tag=True, tag_field="type", kw_only=True, frozen=True):
    v: int = WIRE_VERSION


class Hello(_Msg):
    client: str = ""  # a display name for the server's log
    epoch: int = 0  # the client's current barge-in epoch: chunks come down stamped with it


class Welcome(_Msg):
    session_id: str
    server_id: str  # changes when the server restarts
    fps_num: int
    fps_den: int
    sample_rate: int
    frames_per_chunk: int
    height: int
    width: int
    engine: str = ""
    video_codec: Literal["h264"] = "h264"
    audio_fmt: Literal["s16le"] = "s16le"


class Refused(_Msg):
    reason: str


class AudioUp(_Msg):
    seq: int
    n_samples: int


class Interrupt(_Msg):
    epoch: int


class KeyframeRequest(_Msg):
    reason: str = ""


class Ping(_Msg):
    sent_ns: int


class Pong(_Msg):
    echo_ns: int  # the Ping's sent_ns, for the client's round-trip time


class Bye(_Msg):
    pass


class ChunkDown(_Msg):
    session_id: str
    seq: int  # chunks sent in this session: a gap means the server could not send one
    first_frame: int
    n: int
    epoch: int  # the client's epoch this chunk belongs to
    keyframe: bool  # the first packet is an IDR frame: a decoder can start here
    packet_sizes: list[int]
    audio_t0: int
    audio_samples: int
    media_ns: int  # the chunk's place on the session's media clock (first_frame / fps)
    sent_ns: int = 0  # server monotonic clock at send (only differences are meaningful)
    dropped_samples: int = 0  # session audio the server's engine dropped so far (it fell behind): the frame
    # timeline skips it, so the laptop's fed-audio timeline (speech latency, played position) must too


class EndDown(_Msg):
    session_id: str
    last_frame: int


class StatsRequest(_Msg):
    pass


class StatsReply(_Msg):
    counters: dict[str, int]


WireMessage = Union[Hello, Welcome, Refused, AudioUp, Interrupt, KeyframeRequest, Ping, Pong, Bye, ChunkDown, EndDown,
                    StatsRequest, StatsReply]
UP = (Hello, AudioUp, Interrupt, KeyframeRequest, Ping, Bye, StatsRequest)
DOWN = (Welcome, Refused, ChunkDown, EndDown, Pong, StatsReply)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WireMessage)
_TYPES = frozenset(cls.__name__ for cls in WireMessage.__args__)


def encode(msg: WireMessage) -> bytes:
    return _encoder.encode(msg)


def parse(frames: list[bytes], direction: Literal["up", "down"]) -> tuple[WireMessage, list[bytes]]:
    """The header and its payload frames, checked: schema version, type and direction, field ranges, payload
    sizes against the header. Raises :class:`WireError` (and nothing else) for anything wrong."""
    if not frames:
        raise WireError("malformed", "an empty message")
    header, payload = frames[0], frames[1:]
    if len(header) > MAX_HEADER_BYTES:
        raise WireError("oversized", f"header of {len(header)} bytes (at most {MAX_HEADER_BYTES})")
    msg = _decode(header)
    allowed = UP if direction == "up" else DOWN
    if not isinstance(msg, allowed):
        raise WireError("unexpected", f"{type(msg).__name__} is not sent {direction}")
    _check(msg, payload)
    return msg, payload


def _decode(header: bytes) -> WireMessage:
    try:
        msg = _decoder.decode(header)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _diagnose(header, exc) from None
    except RecursionError:
        raise WireError("malformed", "header nested too deeply") from None
    if msg.v != WIRE_VERSION:
        raise WireError("version", f"schema version {msg.v!r}, this build speaks {WIRE_VERSION} (update both ends)")
    return msg


def _diagnose(header: bytes, exc: Exception) -> WireError:
    try:
        raw = msgspec.msgpack.decode(header)
    except (msgspec.DecodeError, RecursionError):
        return WireError("malformed", f"not a msgpack header ({len(header)} bytes)")
    if not isinstance(raw, dict) or "type" not in raw:
        return WireError("malformed", "not a tagged message map")
    if raw.get("v", WIRE_VERSION) != WIRE_VERSION:
        return WireError("version", f"schema version {raw.get('v')!r}, this build speaks {WIRE_VERSION} (update both ends)")
    if raw["type"] not in _TYPES:
        return WireError("unknown_type", "unknown message type")
    return WireError("malformed", f"invalid {raw['type']}: {exc}")


def _check(msg: WireMessage, payload: list[bytes]) -> None:
    if isinstance(msg, AudioUp):
        _expect_frames(msg, payload, 1)
        if not 0 < msg.n_samples <= MAX_AUDIO_SAMPLES:
            raise WireError("oversized", f"AudioUp of {msg.n_samples} samples (1..{MAX_AUDIO_SAMPLES})")
        if len(payload[0]) != 2 * msg.n_samples:
            raise WireError("bad_payload", f"AudioUp says {msg.n_samples} samples, carries {len(payload[0])} bytes")
    elif isinstance(msg, ChunkDown):
        _check_chunk(msg, payload)
    elif isinstance(msg, Welcome):
        _expect_frames(msg, payload, 0)
        if not (0 < msg.width <= MAX_SIDE and 0 < msg.height <= MAX_SIDE and 0 < msg.frames_per_chunk <= MAX_FRAMES
                and msg.fps_num > 0 and msg.fps_den > 0 and 0 < msg.sample_rate <= 192_000):
            raise WireError("malformed", "Welcome with an impossible chunk spec")
    else:
        _expect_frames(msg, payload, 0)
    for field in ("client", "reason", "session_id", "server_id", "engine"):
        text = getattr(msg, field, None)
        if isinstance(text, str) and len(text) > MAX_TEXT:
            raise WireError("oversized", f"{type(msg).__name__}.{field} of {len(text)} characters")


def _check_chunk(msg: ChunkDown, payload: list[bytes]) -> None:
    _expect_frames(msg, payload, 2)
    if not 0 < msg.n <= MAX_FRAMES or len(msg.packet_sizes) > 4 * MAX_FRAMES:
        raise WireError("oversized", f"ChunkDown of {msg.n} frames, {len(msg.packet_sizes)} packets")
    if min(msg.packet_sizes, default=1) < 0 or sum(msg.packet_sizes) != len(payload[0]):
        raise WireError("bad_payload", "ChunkDown packet sizes do not add up to its video bytes")
    if len(payload[0]) > MAX_VIDEO_BYTES:
        raise WireError("oversized", f"ChunkDown video of {len(payload[0])} bytes")
    if not 0 <= msg.audio_samples <= MAX_AUDIO_SAMPLES or len(payload[1]) != 2 * msg.audio_samples:
        raise WireError("bad_payload", "ChunkDown audio does not match its header")
    if min(msg.first_frame, msg.seq, msg.epoch, msg.dropped_samples) < 0:
        raise WireError("malformed", "ChunkDown with a negative index")


def _expect_frames(msg: WireMessage, payload: list[bytes], count: int) -> None:
    if len(payload) != count:
        raise WireError("bad_payload", f"{type(msg).__name__} with {len(payload)} payload frames, expected {count}")
