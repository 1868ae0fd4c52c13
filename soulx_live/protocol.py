"""Every message that crosses a process boundary: typed, versioned, one file.

Messages are msgspec structs encoded as msgpack maps with a ``type`` tag (the class name) and a schema
version ``v``. Bulk bytes (pixels, PCM, the avatar image) never go inside a struct: they travel as
extra frames of the same ZeroMQ multipart message, described by the struct in front of them.

Sockets (``soulx_live.runtime_dir.endpoint`` turns a name into an address):

============  ==============================  ==============================================================
socket        direction                       carries
============  ==============================  ==============================================================
``ctrl``      daemon PUSH -> engine rank 0    StartSession [+avatar], AudioIn + pcm, PhonemesIn, Interrupt,
                                              StopSession, Shutdown
``events``    engine PUSH -> daemon           Ready, Heartbeat, SessionStarted, EngineError, ShutdownAck
``frames``    engine PUB -> sinks SUB         [b"frames", FrameHeader, rgb24, f32le] | [b"frames", EndOfStream]
                                              | [b"status", EngineStatus]
``cli``       CLI REQ -> daemon REP           StatusRequest/StatusReply, StopRequest/Ack, StudioLinkRequest/Ack
============  ==============================  ==============================================================

Timing: audio samples at ``sample_rate`` are the one clock. Frame ``k`` of a session is shown at sample
``k * sample_rate * fps_den / fps_num``; a FrameHeader's ``audio_t0`` is the first sample of the audio
that plays with its frames. Receivers reject an unknown ``v`` (:class:`ProtocolError`), never crash.

Barge-in: :class:`Interrupt` carries a new *epoch* (0 at start, +1 per interrupt, never reused while
the daemon runs). The worker drops the audio it has not turned into chunks yet, resets the session
and stamps every later FrameHeader with that epoch; receivers drop chunks of older epochs. Frame
indices keep counting across an interrupt (no index is reused).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Literal, Union

import msgspec

from engine.interface import ChunkSpec

__all__ = [
    "SCHEMA_VERSION",
    "SOCKET_NAMES",
    "TOPIC_FRAMES",
    "TOPIC_STATUS",
    "Ack",
    "AudioIn",
    "EndOfStream",
    "EngineError",
    "EngineStatus",
    "FrameHeader",
    "Heartbeat",
    "Interrupt",
    "Message",
    "PhonemesIn",
    "ProtocolError",
    "Ready",
    "SessionStarted",
    "Shutdown",
    "ShutdownAck",
    "SpecInfo",
    "StartSession",
    "StatusReply",
    "StatusRequest",
    "StopRequest",
    "StopSession",
    "StudioLinkRequest",
    "decode",
    "encode",
]

SCHEMA_VERSION = 1
SOCKET_NAMES = ("ctrl", "events", "frames", "cli")  # tcp ports are tcp_port + this index
TOPIC_FRAMES = b"frames"
TOPIC_STATUS = b"status"

# "stalled": the worker is alive but has sent no heartbeat (or made no chunk with work waiting) for a few heartbeat
# intervals; it is replaced once supervisor.heartbeat_timeout_s passes, and runs on if it recovers first
EngineState = Literal["starting", "ready", "running", "degraded", "stalled", "restarting", "failed", "stopped"]


class ProtocolError(ValueError):
    """Bytes that are not a message this process understands. ``reason`` says which way they failed."""

    def __init__(self, reason: Literal["malformed", "unknown_type", "version"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Msg(msgspec.Struct, tag=True, tag_field="type", kw_only=True, frozen=True):
    v: int = SCHEMA_VERSION


# --- frames bus -----------------------------------------------------------------------------------


class FrameHeader(_Msg):
    """Describes the pixel and audio frames that follow it: ``n*h*w*3`` bytes rgb24, then
    ``audio_samples`` float32 little-endian mono samples starting at session sample ``audio_t0``, then, when
    ``alpha`` is set, ``n*h*w`` bytes of person matte (one uint8 per pixel, 255 = person)."""

    session_id: str
    seq: int  # chunk counter of the session; a gap means chunks were dropped
    first_frame: int
    n: int
    h: int
    w: int
    fps_num: int
    fps_den: int
    sample_rate: int
    audio_t0: int
    audio_samples: int
    pix_fmt: Literal["rgb24"] = "rgb24"
    audio_fmt: Literal["f32le"] = "f32le"
    epoch: int = 0  # bumped when the timeline is cut (barge-in); receivers flush older chunks
    sent_mono_ns: int = 0  # time.monotonic_ns() at publish: bus latency/staleness on the same host
    alpha: bool = False  # a fifth part carries the frames' mattes (sinks.*.alpha)

    @property
    def pixel_bytes(self) -> int:
        return self.n * self.h * self.w * 3

    @property
    def audio_bytes(self) -> int:
        return self.audio_samples * 4

    @property
    def alpha_bytes(self) -> int:
        return self.n * self.h * self.w if self.alpha else 0


class EndOfStream(_Msg):
    """The session's last chunk has been published; ``last_frame`` is its final frame index (-1: none)."""

    session_id: str
    last_frame: int


class EngineStatus(_Msg):
    """Engine state as seen by the daemon, broadcast to sinks (e.g. to show a slate while restarting)."""

    state: EngineState
    detail: str = ""
    session_id: str | None = None
    chunks_done: int = 0


# --- engine control and events --------------------------------------------------------------------


class SpecInfo(_Msg):
    """Wire form of :class:`engine.interface.ChunkSpec` (msgpack has no fractions)."""

    fps_num: int
    fps_den: int
    sample_rate: int
    frames_per_chunk: int
    height: int
    width: int

    @classmethod
    def from_spec(cls, spec: ChunkSpec) -> SpecInfo:
        fps = Fraction(spec.fps)
        return cls(fps_num=fps.numerator, fps_den=fps.denominator, sample_rate=spec.sample_rate,
                   frames_per_chunk=spec.frames_per_chunk, height=spec.height, width=spec.width)

    def to_spec(self) -> ChunkSpec:
        return ChunkSpec(Fraction(self.fps_num, self.fps_den), self.sample_rate, self.frames_per_chunk, self.height, self.width)


class Ready(_Msg):
    engine_id: str
    world_size: int
    model: str
    spec: SpecInfo
    attn_backend: str = ""
    config_hash: str = ""


class Heartbeat(_Msg):
    """Sent by the engine loop itself (after every step and while idle), so it proves progress."""

    mono_ns: int
    chunks_done: int
    last_step_ms: float = 0.0
    queue_depth: int = 0
    cuda_mem_mb: int = 0
    # drift self-corrections of this worker's session so far (FlashTalk): chunks generated again, and chunks
    # only re-anchored (no time for a second attempt)
    regenerated: int = 0
    re_anchored: int = 0
    # the session's audio timeline (AudioIn ``t0`` samples): ``rendered_t`` is where the audio this worker has
    # not finished with starts (everything before it is in a published chunk or was dropped here; -1: no session
    # audio yet); ``lost`` the spans (t0, n_samples) this worker dropped since its last heartbeat (engine behind)
    session_id: str = ""
    rendered_t: int = -1
    lost: list[tuple[int, int]] = []


class StartSession(_Msg):
    """Followed by one frame with the avatar image file bytes when ``avatar_sha256`` is set."""

    session_id: str
    seed: int = 0
    prompt: str = ""
    avatar_sha256: str | None = None
    first_frame: int = 0  # a replacing session (new avatar) continues the frame timeline here


class SessionStarted(_Msg):
    session_id: str
    first_frame: int = 0


class AudioIn(_Msg):
    """Followed by one frame of ``n_samples`` float32 little-endian mono PCM starting at sample ``t0``."""

    session_id: str
    seq: int
    t0: int
    n_samples: int
    sample_rate: int
    audio_fmt: Literal["f32le"] = "f32le"
    replay: bool = False  # audio a dead worker took but never rendered, sent again to its successor


class PhonemesIn(_Msg):
    """Phoneme timings for audio of the session: ``(start_sample, end_sample, phoneme)`` on the session
    timeline (the same sample positions as AudioIn's ``t0``); phoneme text is espeak/IPA-like. Engines
    whose sessions have ``push_phonemes`` use them, others ignore them."""

    session_id: str
    spans: list[tuple[int, int, str]]


class Interrupt(_Msg):
    """Barge-in: drop all audio not yet turned into chunks, reset the session to its idle pose and
    publish every later chunk with ``epoch``. It cuts whatever session is active (``session_id`` is
    informational; "" when none was); with no session the epoch is just adopted. An epoch not above
    the worker's current one is ignored."""

    session_id: str
    epoch: int


class StopSession(_Msg):
    session_id: str


class Shutdown(_Msg):
    reason: str = ""


class ShutdownAck(_Msg):
    pass


class EngineError(_Msg):
    kind: str
    message: str
    fatal: bool = False
    chunk_seq: int | None = None


# --- CLI <-> daemon -------------------------------------------------------------------------------


class StatusRequest(_Msg):
    pass


class StatusReply(_Msg):
    state: EngineState
    engine: str = ""
    session_id: str | None = None
    chunks_done: int = 0
    restarts: int = 0
    uptime_s: float = 0.0
    detail: str = ""
    sinks: dict[str, str] = {}
    metrics: dict[str, float] = {}  # soulx_live.metrics snapshot (name -> value) for `soulx-live status`
    studio_url: str = ""  # the Studio page (no login code: `soulx-live studio` prints one), "" when off


class StopRequest(_Msg):
    pass


class StudioLinkRequest(_Msg):
    """A fresh one-time login link for the Studio page (answered with an Ack carrying it; ipc only)."""


class Ack(_Msg):
    ok: bool = True
    message: str = ""


Message = Union[
    FrameHeader, EndOfStream, EngineStatus, SpecInfo, Ready, Heartbeat, StartSession, SessionStarted, AudioIn,
    PhonemesIn, Interrupt, StopSession, Shutdown, ShutdownAck, EngineError, StatusRequest, StatusReply, StopRequest,
    StudioLinkRequest, Ack,
]

MAX_MESSAGE_BYTES = 4 << 20  # the largest encoded message accepted (the biggest real one is a few KB)
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)
_TYPES = frozenset(cls.__name__ for cls in Message.__args__)


def encode(msg: Message) -> bytes:
    """Serialize one message (its ``v`` is whatever it was built with, SCHEMA_VERSION by default)."""
    return _encoder.encode(msg)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Parse one message; :class:`ProtocolError` for malformed bytes (also oversized or nested too deeply), an
    unknown type or another version. Never anything else, whatever the bytes: sockets take input from outside."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("malformed", f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES} "
                                         "(control messages are small; audio and frames travel in their own frames)")
    try:
        msg = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _diagnose(data, exc) from None
    except RecursionError:
        raise ProtocolError("malformed", "message nested too deeply") from None
    if msg.v != SCHEMA_VERSION:
        raise _version_error(msg.v, type(msg).__name__)
    return msg


def _version_error(seen: object, type_name: object) -> ProtocolError:
    return ProtocolError("version", f"{type_name} has schema version {seen!r}; this build speaks version {SCHEMA_VERSION} "
                                    "(run the same soulx-live version on both ends)")


def _diagnose(data: bytes | bytearray | memoryview, exc: Exception) -> ProtocolError:
    """Why typed decoding failed: look at the raw map for the version and type before blaming the fields."""
    try:
        raw = msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return ProtocolError("malformed", f"not a msgpack message ({len(data)} bytes): {exc}")
    except RecursionError:
        return ProtocolError("malformed", "message nested too deeply")
    if not isinstance(raw, dict) or "type" not in raw:
        return ProtocolError("malformed", f"not a tagged message map: {type(raw).__name__}")
    if raw.get("v", SCHEMA_VERSION) != SCHEMA_VERSION:
        return _version_error(raw.get("v"), raw["type"])
    if raw["type"] not in _TYPES:
        return ProtocolError("unknown_type", f"unknown message type {raw['type']!r}")
    return ProtocolError("malformed", f"invalid {raw['type']}: {exc}")
