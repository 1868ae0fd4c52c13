"""Wire protocol: every message round-trips; other versions, unknown types and broken bytes are rejected."""
from __future__ import annotations

from fractions import Fraction

import msgspec
import pytest

from engine.interface import ChunkSpec
from soulx_live import protocol as p

SPEC = p.SpecInfo(fps_num=25, fps_den=1, sample_rate=16000, frames_per_chunk=28, height=768, width=448)
HEADER = p.FrameHeader(session_id="s1", seq=3, first_frame=84, n=28, h=768, w=448, fps_num=25, fps_den=1,
                       sample_rate=16000, audio_t0=53760, audio_samples=17920, epoch=1, sent_mono_ns=123)

EXAMPLES: list[p.Message] = [
    HEADER,
    p.EndOfStream(session_id="s1", last_frame=111),
    p.EngineStatus(state="restarting", detail="heartbeat lost", session_id="s1", chunks_done=4),
    SPEC,
    p.Ready(engine_id="e0", world_size=8, model="flashtalk-14b", spec=SPEC, attn_backend="flash3", config_hash="ab12"),
    p.Heartbeat(mono_ns=10**15, chunks_done=9, last_step_ms=812.5, queue_depth=2, cuda_mem_mb=40000),
    p.StartSession(session_id="s1", seed=5, prompt="a person talking", avatar_sha256="f" * 64),
    p.SessionStarted(session_id="s1", first_frame=0),
    p.AudioIn(session_id="s1", seq=12, t0=192000, n_samples=3200, sample_rate=16000),
    p.PhonemesIn(session_id="s1", spans=[(0, 800, "h"), (800, 2400, "@U")]),
    p.Interrupt(session_id="s1", epoch=2),
    p.StopSession(session_id="s1"),
    p.Shutdown(reason="user"),
    p.ShutdownAck(),
    p.EngineError(kind="oom", message="CUDA out of memory", fatal=True, chunk_seq=7),
    p.StatusRequest(),
    p.StatusReply(state="running", engine="lite", session_id="s1", chunks_done=10, restarts=1, uptime_s=3.5,
                  sinks={"recorder": "ok"}),
    p.StopRequest(),
    p.StudioLinkRequest(),
    p.Ack(ok=False, message="no session"),
]


def test_examples_cover_every_message_type() -> None:
    assert {type(m) for m in EXAMPLES} == set(p.Message.__args__)


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: p.Message) -> None:
    data = p.encode(msg)
    assert p.decode(data) == msg
    assert p.decode(memoryview(data)) == msg
    assert msgspec.msgpack.decode(data)["v"] == p.SCHEMA_VERSION  # every message carries its version


def test_header_sizes_and_spec_conversion() -> None:
    assert HEADER.pixel_bytes == 28 * 768 * 448 * 3
    assert HEADER.audio_bytes == 17920 * 4
    spec = ChunkSpec(Fraction(30000, 1001), 30000, 5, 720, 1280)
    assert p.SpecInfo.from_spec(spec).to_spec() == spec


@pytest.mark.parametrize("version", [0, 2, 99])
def test_other_version_is_rejected_naming_both_versions(version: int) -> None:
    data = p.encode(p.EndOfStream(v=version, session_id="s", last_frame=1))
    with pytest.raises(p.ProtocolError) as err:
        p.decode(data)
    assert err.value.reason == "version"
    assert f"version {version}" in str(err.value) and f"version {p.SCHEMA_VERSION}" in str(err.value)


def test_future_version_with_changed_fields_is_still_a_version_error() -> None:
    data = msgspec.msgpack.encode({"type": "FrameHeader", "v": 2, "frames": "a new layout"})
    with pytest.raises(p.ProtocolError) as err:
        p.decode(data)
    assert err.value.reason == "version"


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(p.ProtocolError) as err:
        p.decode(msgspec.msgpack.encode({"type": "Teleport", "v": p.SCHEMA_VERSION}))
    assert err.value.reason == "unknown_type" and "Teleport" in str(err.value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        b"\xff\x00\x13",
        b"hello world",
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"v": 1}),  # no type tag
        msgspec.msgpack.encode({"type": "FrameHeader", "v": 1, "seq": "three"}),
        msgspec.msgpack.encode({"type": "EngineStatus", "v": 1, "state": "exploded"}),
    ],
)
def test_malformed_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(p.ProtocolError) as err:
        p.decode(data)
    assert err.value.reason == "malformed"


def test_every_truncation_of_a_message_is_rejected() -> None:
    data = p.encode(HEADER)
    for cut in range(len(data)):
        with pytest.raises(p.ProtocolError):
            p.decode(data[:cut])


def test_decode_refuses_deep_nesting_and_oversize_with_a_protocol_error() -> None:
    """Sockets take bytes from outside: a ProtocolError (which every receiver handles), never RecursionError."""
    with pytest.raises(p.ProtocolError, match="nested too deeply"):
        p.decode(b"\x91" * 200_000 + b"\xc0")
    with pytest.raises(p.ProtocolError, match="exceeds"):
        p.decode(b"\x00" * (p.MAX_MESSAGE_BYTES + 1))
