"""The Studio's small parts on their own: the one-time login, the sink gate, the preview message layout."""
from __future__ import annotations

import json
import struct
from fractions import Fraction

import numpy as np
import pytest

from engine.interface import ChunkSpec, FrameChunk
from soulx_live.studio.auth import StudioAuth
from soulx_live.studio.gate import SinkGate
from soulx_live.studio.preview import encode_chunk

SPEC = ChunkSpec(fps=Fraction(25), sample_rate=16000, frames_per_chunk=2, height=8, width=8)


def _chunk(first: int, epoch: int = 0) -> FrameChunk:
    return FrameChunk("s", first // 2, first, np.full((2, 8, 8, 3), 100, np.uint8),
                      np.full(1280, 0.25, np.float32), first * 640, epoch)


def test_login_code_works_once_and_a_new_one_replaces_it() -> None:
    auth = StudioAuth()
    code = auth.login_path().split("code=")[1]
    assert not auth.redeem("wrong") and not auth.redeem(None)
    assert auth.redeem(code)
    assert not auth.redeem(code) and auth.login_path() == "/login"
    fresh = auth.new_code().split("code=")[1]
    older = auth.new_code().split("code=")[1]
    assert not auth.redeem(fresh) and auth.redeem(older)
    assert auth.allowed(auth.secret, None) and auth.allowed(None, f"Bearer {auth.secret}")
    assert not auth.allowed("x" + auth.secret, None) and not auth.allowed(None, "Bearer ") and not auth.allowed(None, None)


class Recording:
    """A sink that records what happens to it (and refuses to be reopened, like real sinks)."""

    def __init__(self, log: list[str], n: int) -> None:
        self.name, self.queue_chunks, self.log, self.n = "rec", 7, log, n
        self.opened = self.closed = False
        self.speaking: list[bool] = []

    def open(self, spec: ChunkSpec) -> None:
        assert not self.opened, "a sink is opened once"
        self.opened = True
        self.log.append(f"open{self.n}")

    def write(self, chunk: FrameChunk) -> None:
        self.log.append(f"write{self.n}:{chunk.first_frame}")

    def hold(self, reason: str) -> None:
        self.log.append(f"hold{self.n}")

    def interrupt(self, epoch: int) -> None:
        self.log.append(f"interrupt{self.n}:{epoch}")

    def on_speech(self, speaking: bool) -> None:
        self.speaking.append(speaking)

    def close(self) -> None:
        self.closed = True
        self.log.append(f"close{self.n}")


def test_gate_closes_and_rebuilds_on_the_sinks_own_calls() -> None:
    log: list[str] = []
    made = [Recording(log, 0)]

    def rebuild() -> Recording:
        made.append(Recording(log, len(made)))
        return made[-1]

    gate = SinkGate(made[0], rebuild)
    assert gate.name == "rec" and gate.queue_chunks == 7
    gate.open(SPEC)
    gate.write(_chunk(0))
    gate.set_enabled(False)
    assert log == ["open0", "write0:0"]  # nothing happens off the sink's thread
    gate.write(_chunk(2))  # applied here: closed, the chunk dropped
    gate.interrupt(1)
    gate.write(_chunk(4))
    assert made[0].closed and gate.state == "disabled" and gate.inner is None
    gate.set_enabled(True)
    gate.write(_chunk(6))
    gate.interrupt(2)
    gate.on_speech(True)
    assert gate.state == "open" and made[1].speaking == [True]
    gate.close()
    assert log == ["open0", "write0:0", "close0", "open1", "write1:6", "interrupt1:2", "close1"]
    assert gate.state == "closed"


def test_gate_without_rebuild_refuses_to_reopen() -> None:
    gate = SinkGate(Recording([], 0), None)
    gate.open(SPEC)
    gate.set_enabled(False)
    with pytest.raises(ValueError, match="cannot be reopened"):
        gate.set_enabled(True)


def test_preview_message_is_the_frames_and_exactly_their_audio() -> None:
    data = encode_chunk(_chunk(4, epoch=3), SPEC, 90)
    n = struct.unpack("<I", data[:4])[0]
    head = json.loads(data[4:4 + n])
    assert head["epoch"] == 3 and head["first_frame"] == 4 and head["fps"] == 25.0 and len(head["sizes"]) == 2
    audio = np.frombuffer(data[4 + n + sum(head["sizes"]):], "<i2")
    assert audio.shape == (1280,) and abs(int(audio[0]) - round(0.25 * 32767)) <= 1


def test_a_sink_switched_on_from_the_page_that_cannot_open_says_why_and_stays_off() -> None:
    class Broken(Recording):
        def open(self, spec: ChunkSpec) -> None:
            raise RuntimeError("no camera device (modprobe v4l2loopback)")

    log: list[str] = []
    gate = SinkGate(None, lambda: Broken(log, 1), name="virtualcam")
    gate.open(SPEC)  # the page switched it on: opened on its thread, fails, reported
    assert gate.state == "failed: no camera device (modprobe v4l2loopback)" and not gate.enabled
    gate.write(_chunk(0))  # its thread goes on, dropping
    assert gate.inner is None
    configured = SinkGate(Broken(log, 2), None)
    with pytest.raises(RuntimeError, match="no camera device"):
        configured.open(SPEC)  # a sink of the config fails as it always did
