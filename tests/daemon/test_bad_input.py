"""A bad audio packet does not end a session: it is counted, logged and played as silence."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.interface import SessionRequest, mono_pcm
from engine.lite import LiteConfig, LiteEngine
from soulx_live.config import load_config
from soulx_live.daemon import Daemon


@pytest.mark.parametrize(
    "packet",
    [np.full(640, np.nan, np.float32), np.full(640, np.inf, np.float32), np.zeros(640, np.int16)],
    ids=["nan", "inf", "int16"],
)
def test_bad_packet_becomes_silence(packet: np.ndarray, tmp_path: Path) -> None:
    daemon = Daemon(load_config(None, env={}, overrides={"bus.runtime_dir": str(tmp_path / "rt")}))
    session = LiteEngine(LiteConfig(width=128, height=128)).start_session(SessionRequest(session_id="s"))
    good = np.zeros(640, np.float32)
    assert daemon._push_or_silence(session, good) == 640
    assert daemon._push_or_silence(session, packet) == 640  # the timeline advances by the packet's length
    assert daemon.counters.bad_audio_packets == 1
    assert session.buffered_samples == 1280
    assert daemon._push_or_silence(session, good) == 640  # and the session goes on
    assert session.buffered_samples == 1920


def test_mono_pcm_names_the_problem() -> None:
    with pytest.raises(ValueError, match="mono samples"):
        mono_pcm(np.zeros((2, 640), np.float32))
    with pytest.raises(TypeError, match="float samples"):
        mono_pcm(np.zeros(640, np.int16))
    assert mono_pcm(np.zeros((640, 1), np.float64)).dtype == np.float32
