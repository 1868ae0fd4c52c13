"""The push token: ``push.token`` (config file or ``SOULX_PUSH__TOKEN``), else the first line of
``push.token_file``, else generated at start into ``<runtime_dir>/push.token``.

The token is never logged; only the file's path is. Comparison is constant-time. (``--set push.token=`` is
refused by the CLI: a command line is visible to every local user.)
"""
from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from soulx_live.config import SoulxConfig
from soulx_live.runtime_dir import runtime_dir

__all__ = ["TOKEN_FILE", "TokenFileError", "configured_token", "load_token", "resolve_token", "token_matches",
           "token_path"]

log = logging.getLogger(__name__)

TOKEN_FILE = "push.token"


class TokenFileError(RuntimeError):
    """``push.token_file`` cannot be used; the message names the file and the fix (never the token)."""


def token_path(config: SoulxConfig) -> Path:
    return runtime_dir(config.bus) / TOKEN_FILE


def configured_token(config: SoulxConfig) -> str | None:
    """``push.token``, else the first line of ``push.token_file``, else None (generate one)."""
    if config.push.token is not None:
        return config.push.token.get_secret_value()
    path = config.push.token_file
    if path is None:
        return None
    try:
        mode = path.stat().st_mode
        value = path.read_text(encoding="utf-8").splitlines()[0].strip() if path.stat().st_size else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"push.token_file {path} cannot be read ({exc.__class__.__name__}); write the token "
                             "in it (chmod 600) or unset push.token_file") from None
    if not value:
        raise TokenFileError(f"push.token_file {path} is empty; write the token on its first line")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("push.token_file %s is readable by other users (mode %o); chmod 600 it", path,
                    stat.S_IMODE(mode))
    return value


def resolve_token(config: SoulxConfig) -> str:
    """The server's token: the configured one (:func:`configured_token`), else a fresh one written to
    :func:`token_path` (0600)."""
    value = configured_token(config)
    if value is not None:
        if len(value) < 16:
            log.warning("the push token is shorter than 16 characters; use a long random one "
                        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return value
    value = secrets.token_urlsafe(32)
    path = token_path(config)
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, value.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, path)
    log.info("push token written to %s", path)
    return value


def load_token(config: SoulxConfig) -> str | None:
    """The client's token: the configured one, else the daemon's token file, else None (no daemon has started)."""
    value = configured_token(config)
    if value is not None:
        return value
    try:
        return token_path(config).read_text().strip() or None
    except FileNotFoundError:
        return None


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; ``None`` or empty never matches."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))
