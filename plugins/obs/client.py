"""A thin adapter over obsws-python's ``ReqClient`` (obs-websocket v5): timeouts, typed errors, reconnect.

Every request goes through :meth:`ObsConnection.call` with the socket timeout set at connect, so no
call can hang. Failures become :class:`ObsError` with a message that names the fix; the password is
never logged nor put in a message (obsws-python itself logs it at INFO on connect, so its records are
redacted and its tracebacks demoted to DEBUG by :class:`ObswsLogFilter`). After OBS restarts, the next
call fails with ``kind="disconnected"`` and a later :meth:`ObsConnection.ensure_connected` reconnects;
:class:`Backoff` spaces those attempts.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import SecretStr

if TYPE_CHECKING:
    from plugins.settings import ObsConfig

__all__ = ["Backoff", "ObsConnection", "ObsError", "ObsRequester", "ObswsLogFilter", "connect_obsws"]

log = logging.getLogger(__name__)

ErrorKind = Literal["unreachable", "auth", "timeout", "disconnected", "request", "conflict"]

WEBSOCKET_HINT = "Tools → WebSocket Server Settings"


class ObsError(RuntimeError):
    """OBS could not be reached or refused a request; ``str()`` names the fix, never the password."""

    def __init__(self, message: str, *, kind: ErrorKind, code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code  # obs-websocket RequestStatus code for kind="request" (e.g. 600 not found, 601 exists)


class ObsRequester(Protocol):
    """The part of ``obsws_python.ReqClient`` the adapter uses (tests pass a fake)."""

    def send(self, param: str, data: dict[str, Any] | None = None, raw: bool = False) -> Any: ...

    def disconnect(self) -> None: ...


Connector = Callable[[str, int, str, float], ObsRequester]


# -- obsws-python logging ------------------------------------------------------------------------

_PASSWORD_FIELD = re.compile(r"password='.*?'(?=\s+(subs|timeout)=)", re.DOTALL)


class ObswsLogFilter(logging.Filter):
    """Redacts passwords from obsws-python's records and demotes its tracebacks to DEBUG.

    obsws-python logs ``password='...'`` at INFO on every connect and a full traceback at ERROR for
    every refused connection or failed request even when the caller handles it; the adapter reports
    those itself as :class:`ObsError`, so they are only useful when debugging.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add_secret(self, secret: str) -> None:
        if secret:
            with self._lock:
                self._secrets.add(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        message = _PASSWORD_FIELD.sub("password='***'", record.getMessage())
        with self._lock:
            secrets = tuple(self._secrets)
        for secret in secrets:
            message = message.replace(secret, "***")
        record.msg, record.args = message, ()
        if record.levelno >= logging.WARNING:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info, record.exc_text = None, None
        return True


_LOG_FILTER = ObswsLogFilter()
_OBSWS_LOGGERS = ("obsws_python.baseclient.ObsClient", "obsws_python.reqs.ReqClient", "obsws_python.events.EventClient")
for _name in _OBSWS_LOGGERS:
    logging.getLogger(_name).addFilter(_LOG_FILTER)


def connect_obsws(host: str, port: int, password: str, timeout_s: float) -> ObsRequester:
    """Open an obsws-python ``ReqClient`` (the real connector)."""
    import obsws_python

    return obsws_python.ReqClient(host=host, port=port, password=password, timeout=timeout_s)


# -- errors ----------------------------------------------------------------------------------------


def _connect_error(exc: BaseException, host: str, port: int, timeout_s: float, has_password: bool) -> ObsError:
    """Map what obsws-python / websocket-client raise on connect to an ObsError naming the fix."""
    from obsws_python.error import OBSSDKError
    from websocket import WebSocketException, WebSocketTimeoutException

    where = f"ws://{host}:{port}"
    if isinstance(exc, (TimeoutError, WebSocketTimeoutException)):
        return ObsError(f"OBS did not answer at {where} within {timeout_s:g} s: check that OBS Studio is responsive "
                        f"and that sinks.obs.host/port point at it", kind="timeout")
    if isinstance(exc, OBSSDKError):
        if not has_password:
            return ObsError(f"OBS at {where} requires a WebSocket password: set sinks.obs.password to the one shown in "
                            f"{WEBSOCKET_HINT} → Show Connect Info", kind="auth")
        return ObsError(f"OBS at {where} rejected the WebSocket password: set sinks.obs.password to the one shown in "
                        f"{WEBSOCKET_HINT} → Show Connect Info", kind="auth")
    if isinstance(exc, WebSocketException):
        if has_password:  # obs-websocket closes the socket right after a failed identify
            return ObsError(f"OBS at {where} closed the connection while identifying (usually a wrong password): set "
                            f"sinks.obs.password to the one shown in {WEBSOCKET_HINT} → Show Connect Info", kind="auth")
        return ObsError(f"OBS at {where} closed the connection: check {WEBSOCKET_HINT}", kind="disconnected")
    if isinstance(exc, OSError):
        return ObsError(f"OBS is not reachable at {where} ({type(exc).__name__}): start OBS Studio (28 or newer) and tick "
                        f"'Enable WebSocket server' in {WEBSOCKET_HINT}, port {port}", kind="unreachable")
    return ObsError(f"could not connect to OBS at {where}: {type(exc).__name__}", kind="unreachable")


def _call_error(exc: BaseException, request: str, where: str) -> ObsError:
    from obsws_python.error import OBSSDKRequestError, OBSSDKTimeoutError

    if isinstance(exc, OBSSDKRequestError):
        kind: ErrorKind = "conflict" if exc.code == 601 else "request"
        return ObsError(f"OBS refused {request}: {exc}", kind=kind, code=exc.code)
    if isinstance(exc, OBSSDKTimeoutError):
        return ObsError(f"OBS at {where} did not answer {request} in time; it will be retried", kind="timeout")
    return ObsError(f"lost the connection to OBS at {where} during {request} ({type(exc).__name__}); "
                    f"reconnecting when OBS is back", kind="disconnected")


# -- the adapter -----------------------------------------------------------------------------------


class ObsConnection:
    """One obs-websocket connection, reopened on demand. Thread-safe (one request at a time)."""

    def __init__(self, host: str, port: int, password: SecretStr | str | None = None, timeout_s: float = 5.0,
                 *, connector: Connector | None = None) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        secret = password.get_secret_value() if isinstance(password, SecretStr) else (password or "")
        self._password = SecretStr(secret)
        _LOG_FILTER.add_secret(secret)
        self._connector = connector or connect_obsws
        self._client: ObsRequester | None = None
        self._lock = threading.RLock()
        self.connects = 0  # successful connects (a reconnect after an OBS restart counts again)

    @classmethod
    def from_config(cls, cfg: ObsConfig, *, connector: Connector | None = None) -> ObsConnection:
        """From the ``sinks.obs`` settings (:class:`~plugins.settings.ObsConfig`)."""
        return cls(cfg.host, cfg.port, cfg.password, cfg.timeout_s, connector=connector)

    @property
    def where(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None

    def __repr__(self) -> str:
        return f"ObsConnection({self.where}, connected={self.connected})"

    def connect(self) -> None:
        """Connect and identify now (closing any previous connection); raises :class:`ObsError`."""
        with self._lock:
            self.close()
            secret = self._password.get_secret_value()
            try:
                client = self._connector(self.host, self.port, secret, self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a typed ObsError
                raise _connect_error(exc, self.host, self.port, self.timeout_s, bool(secret)) from None
            self._client = client
            self.connects += 1
            log.info("obs: connected to %s", self.where)

    def ensure_connected(self) -> None:
        if self._client is None:
            self.connect()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            if client is not None:
                try:
                    client.disconnect()
                except Exception:
                    log.debug("obs: error while disconnecting", exc_info=True)

    def call(self, request: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request (connecting first if needed); returns ``responseData`` ({} when none).

        A lost connection raises ``ObsError(kind="disconnected")`` and the next call reconnects.
        """
        with self._lock:
            self.ensure_connected()
            client = self._client
            assert client is not None
            try:
                reply = client.send(request, data, raw=True)
            except Exception as exc:  # noqa: BLE001
                error = _call_error(exc, request, self.where)
                if error.kind in ("disconnected", "timeout"):
                    self.close()
                raise error from None
            return dict(reply or {})


class Backoff:
    """Retry delays: ``delays`` in turn, then the last one forever; :meth:`reset` after a success."""

    def __init__(self, delays: Sequence[float] = (0.5, 1.0, 2.0, 5.0)) -> None:
        if not delays:
            raise ValueError("Backoff needs at least one delay")
        self._delays = tuple(delays)
        self._i = 0

    def next(self) -> float:
        delay = self._delays[min(self._i, len(self._delays) - 1)]
        self._i += 1
        return delay

    def reset(self) -> None:
        self._i = 0
