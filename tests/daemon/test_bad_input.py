"""A bad audio packet does not end a session: it is counted, logged and played as silence."""
from __future__ import annotations

import numpy as np
import pytest

from engine.interface import SessionRequest, mono_pcm
from engine.lite import LiteConfig, LiteEngine
from soulx_live.live.intake import clean_pcm
from soulx_live.live.session import Counters


@pytest.mark.parametrize(
    "packet",
    [np.full(640, np.nan, np.float32), np.full(640, np.inf, np.float32), np.zeros(640, np.int16)],
    ids=["nan", "inf", "int16"],
)
def test_bad_packet_becomes_silence(packet: np.ndarray) -> None:
    """What both engine drivers push for each packet taken from the intake ring."""
    counters = Counters()
    session = LiteEngine(LiteConfig(width=128, height=128)).start_session(SessionRequest(session_id="s"))
    good = np.zeros(640, np.float32)
    session.push_audio(clean_pcm(good, counters))
    cleaned = clean_pcm(packet, counters)
    assert cleaned.shape == (640,) and cleaned.dtype == np.float32 and not cleaned.any()
    session.push_audio(cleaned)  # the timeline advances by the packet's length
    assert counters.bad_audio_packets == 1
    assert session.buffered_samples == 1280
    session.push_audio(clean_pcm(good, counters))  # and the session goes on
    assert session.buffered_samples == 1920 and counters.bad_audio_packets == 1


def test_mono_pcm_names_the_problem() -> None:
    with pytest.raises(ValueError, match="mono samples"):
        mono_pcm(np.zeros((2, 640), np.float32))
    with pytest.raises(TypeError, match="float samples"):
        mono_pcm(np.zeros(640, np.int16))
    assert mono_pcm(np.zeros((640, 1), np.float64)).dtype == np.float32
