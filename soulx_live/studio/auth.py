"""Who may use the Studio: a one-time login link printed at start is traded for a session cookie.

The link's code works once (a second visit is refused with a message that says so): a link left in a
terminal's scrollback or a browser history cannot log anyone in later. The session secret lives only in
this process and in the browser's cookie (``HttpOnly``, ``SameSite=Strict``, so another site's page cannot
use it); API clients may send it as ``Authorization: Bearer``. Neither the code nor the secret is ever
logged. Comparisons are constant-time.
"""
from __future__ import annotations

import hmac
import secrets
import threading

__all__ = ["COOKIE", "LOGIN_PATH", "StudioAuth"]

COOKIE = "soulx_studio"
LOGIN_PATH = "/login"


def _same(given: str | None, expected: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


class StudioAuth:
    """The one-time code and the session secret of one daemon run (thread-safe)."""

    def __init__(self) -> None:
        self.secret = secrets.token_urlsafe(32)
        self._code: str | None = secrets.token_urlsafe(24)
        self._lock = threading.Lock()

    def login_path(self) -> str:
        """``/login?code=...`` while the code is unused, else ``/login`` (which then explains itself)."""
        with self._lock:
            return f"{LOGIN_PATH}?code={self._code}" if self._code is not None else LOGIN_PATH

    def new_code(self) -> str:
        """A fresh one-time code (the previous one stops working): for `--open` after the first was used."""
        with self._lock:
            self._code = secrets.token_urlsafe(24)
            return f"{LOGIN_PATH}?code={self._code}"

    def redeem(self, code: str | None) -> bool:
        """True once for the current code; it is spent then."""
        with self._lock:
            if self._code is None or not _same(code, self._code):
                return False
            self._code = None
            return True

    def allowed(self, cookie: str | None, authorization: str | None) -> bool:
        """The session cookie, or ``Authorization: Bearer <secret>``."""
        if _same(cookie, self.secret):
            return True
        if authorization and authorization.startswith("Bearer "):
            return _same(authorization[7:].strip(), self.secret)
        return False
