"""The remote link's message checks: every kind of bad input is a named WireError, never another exception."""
from __future__ import annotations

import msgspec
import pytest

from soulx_live.remote import wire as w


def _up(msg: w.WireMessage, *payload: bytes) -> list[bytes]:
    return [w.encode(msg), *payload]


def test_valid_messages_round_trip() -> None:
    msg, payload = w.parse(_up(w.AudioUp(seq=3, n_samples=4), b"\x00" * 8), "up")
    assert isinstance(msg, w.AudioUp) and msg.n_samples == 4 and payload == [b"\x00" * 8]
    chunk = w.ChunkDown(session_id="s", seq=0, first_frame=0, n=2, epoch=0, keyframe=True, packet_sizes=[3, 2],
                        audio_t0=0, audio_samples=2, media_ns=0)
    msg, payload = w.parse([w.encode(chunk), b"abcde", b"\x00" * 4], "down")
    assert isinstance(msg, w.ChunkDown) and msg.packet_sizes == [3, 2]


@pytest.mark.parametrize("frames, name", [
    ([], "malformed"),
    ([b"\xc1garbage"], "malformed"),
    ([msgspec.msgpack.encode([1, 2, 3])], "malformed"),
    ([msgspec.msgpack.encode({"type": "Launch", "v": 1})], "unknown_type"),
    ([msgspec.msgpack.encode({"type": "Hello", "v": 99})], "version"),
    ([msgspec.msgpack.encode({"type": "AudioUp", "v": 1, "seq": "x", "n_samples": 1})], "malformed"),
    ([b"\x00" * (w.MAX_HEADER_BYTES + 1)], "oversized"),
    (_up(w.AudioUp(seq=0, n_samples=4), b"\x00" * 6), "bad_payload"),
    (_up(w.AudioUp(seq=0, n_samples=4)), "bad_payload"),
    (_up(w.AudioUp(seq=0, n_samples=w.MAX_AUDIO_SAMPLES + 1), b"\x00" * 2 * (w.MAX_AUDIO_SAMPLES + 1)), "oversized"),
    (_up(w.AudioUp(seq=0, n_samples=0), b""), "oversized"),
    (_up(w.Hello(client="x" * 1000)), "oversized"),
    (_up(w.Ping(sent_ns=1), b"extra"), "bad_payload"),
    (_up(w.Welcome(session_id="s", server_id="x", fps_num=25, fps_den=1, sample_rate=16000, frames_per_chunk=5,
                   height=64, width=64)), "unexpected"),  # a down-only message sent up
])
def test_bad_input_is_a_named_error(frames: list[bytes], name: str) -> None:
    with pytest.raises(w.WireError) as info:
        w.parse(frames, "up")
    assert info.value.name == name
    assert info.value.name in w.ERROR_NAMES


@pytest.mark.parametrize("change, name", [
    ({"packet_sizes": [3, 3]}, "bad_payload"),
    ({"packet_sizes": [-1, 6]}, "bad_payload"),
    ({"audio_samples": 3}, "bad_payload"),
    ({"n": 0}, "oversized"),
    ({"n": 100_000}, "oversized"),
    ({"first_frame": -5}, "malformed"),
])
def test_bad_chunks_from_a_server(change: dict[str, object], name: str) -> None:
    fields = dict(session_id="s", seq=0, first_frame=0, n=2, epoch=0, keyframe=True, packet_sizes=[3, 2],
                  audio_t0=0, audio_samples=2, media_ns=0)
    fields.update(change)
    with pytest.raises(w.WireError) as info:
        w.parse([w.encode(w.ChunkDown(**fields)), b"abcde", b"\x00" * 4], "down")
    assert info.value.name == name
