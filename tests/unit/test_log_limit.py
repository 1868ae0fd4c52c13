"""Rate-limited warnings: the first of a kind is logged, repeats within the interval are counted and summarised."""
from __future__ import annotations

import logging

import pytest

from soulx_live import protocol
from soulx_live.log_limit import RateLimitedLog


def test_one_line_per_kind_per_interval_with_a_count_of_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t.limit"), interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t.limit"):
        assert limited.warning("a", "bad %s", "x")
        assert not any(limited.warning("a", "bad %s", "x") for _ in range(99))
        assert limited.warning("b", "other")  # another kind is not held back
        now[0] = 10.5
        assert limited.warning("a", "bad %s", "y")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad x", "other", "bad y (and 99 more like it in the last 10 s)"]
    assert limited.counts == {"a": 101, "b": 1}


def test_decode_refuses_deep_nesting_and_oversize_with_a_protocol_error() -> None:
    with pytest.raises(protocol.ProtocolError, match="nested too deeply"):
        protocol.decode(b"\x91" * 200_000 + b"\xc0")
    with pytest.raises(protocol.ProtocolError, match="exceeds"):
        protocol.decode(b"\x00" * (protocol.MAX_MESSAGE_BYTES + 1))
