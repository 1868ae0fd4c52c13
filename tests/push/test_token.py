"""The push token: generated into a 0600 file, never logged, compared in constant time."""
from __future__ import annotations

import logging
import stat

import pytest
from push_testkit import make_config

from soulx_live.push.token import load_token, resolve_token, token_matches, token_path


def test_generated_token_file_is_private_and_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    config = make_config()
    with caplog.at_level(logging.DEBUG):
        token = resolve_token(config)
    path = token_path(config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token and len(token) >= 40
    assert load_token(config) == token
    assert token not in caplog.text and str(path) in caplog.text
    assert resolve_token(config) != token  # a fresh one per start


def test_configured_token_wins_and_no_file_is_written() -> None:
    config = make_config(token="a-configured-token-123")
    assert resolve_token(config) == "a-configured-token-123"
    assert not token_path(config).exists()
    assert load_token(config) == "a-configured-token-123"
    assert "a-configured-token-123" not in config.to_yaml()


def test_no_token_anywhere_is_none() -> None:
    assert load_token(make_config()) is None


@pytest.mark.parametrize(("given", "ok"), [("secret-token", True), ("secret-tokeN", False), ("", False),
                                           (None, False), ("secret-token ", False), ("ü", False)])
def test_token_matches(given: str | None, ok: bool) -> None:
    assert token_matches(given, "secret-token") is ok
