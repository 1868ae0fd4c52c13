"""The push token: generated into a 0600 file, never logged, compared in constant time."""
from __future__ import annotations

import logging
import stat
from pathlib import Path

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


def test_set_push_token_on_the_command_line_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18: `--set push.token=...` put the token in the process's command line (ps shows it to everyone)."""
    from soulx_live import cli

    code = cli.main(["status", "--set", "push.token=a-very-secret-token-123", "--timeout", "0.1"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert "push.token_file" in err and "SOULX_PUSH__TOKEN" in err and "refused" in err
    assert "a-very-secret-token-123" not in err


def test_token_from_a_file_or_the_environment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from push_testkit import FakeHandler

    from soulx_live.config import load_config
    from soulx_live.push.client import PushClient, PushError
    from soulx_live.push.server import PushServer

    secret = "token-from-a-file-0123456789"
    path = tmp_path / "push.token"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    base = make_config()
    config = base.model_copy(update={"push": base.push.model_copy(update={"token_file": path})})
    with caplog.at_level(logging.DEBUG), PushServer(config, FakeHandler()) as server:
        assert server.token == secret and not token_path(config).exists()
        with PushClient(config) as client:  # the client reads the same file
            assert client.status()["state"] == "running"
        with PushClient(config, token="wrong") as client, pytest.raises(PushError, match=str(path)):
            client.status()  # the 401 names the file, not the token
    assert path.read_text().strip() == secret  # the user's file is not deleted at close
    assert secret not in caplog.text
    env = load_config(env={"SOULX_PUSH__TOKEN": secret})
    assert resolve_token(env) == secret and load_token(env) == secret


@pytest.mark.parametrize(("content", "words"), [(None, "cannot be read"), ("", "is empty")])
def test_a_bad_token_file_is_a_clear_error(tmp_path: Path, content: str | None, words: str) -> None:
    from soulx_live.push.token import TokenFileError

    path = tmp_path / "t"
    if content is not None:
        path.write_text(content)
    base = make_config()
    config = base.model_copy(update={"push": base.push.model_copy(update={"token_file": path})})
    with pytest.raises(TokenFileError, match=words):
        resolve_token(config)


def test_token_and_token_file_together_are_refused() -> None:
    from soulx_live.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="push.token or push.token_file, not both"):
        load_config(env={"SOULX_PUSH__TOKEN": "x" * 20}, overrides={"push.token_file": "/tmp/t"})
