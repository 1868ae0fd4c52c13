"""The push token: ``push.token`` from the config, else generated at start into ``<runtime_dir>/push.token``.

The token is never logged; only the file's path is. Comparison is constant-time.
"""
from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from soulx_live.config import SoulxConfig
from soulx_live.runtime_dir import runtime_dir

__all__ = ["TOKEN_FILE", "load_token", "resolve_token", "token_matches", "token_path"]

log = logging.getLogger(__name__)

TOKEN_FILE = "push.token"


def token_path(config: SoulxConfig) -> Path:
    return runtime_dir(config.bus) / TOKEN_FILE


def resolve_token(config: SoulxConfig) -> str:
    """The server's token: ``push.token`` when set, else a fresh one written to :func:`token_path` (0600)."""
    if config.push.token is not None:
        value = config.push.token.get_secret_value()
        if len(value) < 16:
            log.warning("push.token is shorter than 16 characters; use a long random one "
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
    """The client's token: ``push.token``, else the daemon's token file, else None (no daemon has started)."""
    if config.push.token is not None:
        return config.push.token.get_secret_value()
    try:
        return token_path(config).read_text().strip() or None
    except FileNotFoundError:
        return None


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; ``None`` or empty never matches."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))
