"""soulx_live.push.log_safe: network text quoted for the log, failure lines rate-limited with a count."""
from __future__ import annotations

import logging

import pytest

from soulx_live.log_safe import RateLimitedLog, quoted


@pytest.mark.parametrize(("value", "expected"), [
    ("a\nb", "'a\\nb'"), ("\x1b[31mred", "'\\x1b[31mred'"), ("x\u2028y\r", "'x\\u2028y\\r'"),
    (b"\xff\n", "'\\\\xff\\n'"), ("é", "'é'"), ("z" * 300, "'" + "z" * 200 + "'...(+100 more)"),
])
def test_quoted_escapes_and_caps(value: object, expected: str) -> None:
    assert quoted(value) == expected


def test_rate_limited_log_counts_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.limited"), interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.limited"):
        for _ in range(5):
            limited.warning("a", "kind a %s", quoted("x\ny"))
        limited.warning("b", "kind b")
        now[0] = 10.0
        limited.warning("a", "kind a again")
    assert [r.getMessage() for r in caplog.records] == [
        "kind a 'x\\ny'", "kind b", "kind a again [4 more 'a' in the last 10 s not logged]"]
