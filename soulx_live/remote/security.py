"""How each end of the remote link is secured.

CURVE (libzmq's encryption and authentication) whenever keys are configured: the server proves its identity with
its key pair and lets in only client public keys found in its allow-list folder (checked through a ZAP handler,
``zmq.auth.ThreadAuthenticator``, on every connection, so adding a key needs no restart); the client must know the
server's public key. Without keys the link is plaintext, which is allowed on loopback only: a non-loopback
address needs ``remote.insecure_plaintext: true`` and is then used with a warning.

Refusals are counted and logged with a short fingerprint of the public key (public keys are not secret; secret
keys never reach a log).
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import zmq

from soulx_live.config import RemoteConfig
from soulx_live.errors import DaemonError
from soulx_live.log_safe import RateLimitedLog
from soulx_live.netaddr import is_loopback_host
from soulx_live.remote.keys import (
    allowed_keys,
    default_keys_dir,
    load_key_pair,
    public_key_text,
)

__all__ = ["ClientSecurity", "ServerSecurity", "fingerprint", "keys_dir", "split_address"]

log = logging.getLogger(__name__)
SERVER_KEY_NAME = "server"
CLIENT_KEY_NAME = "client"


def keys_dir(cfg: RemoteConfig) -> Path:
    return cfg.keys_dir if cfg.keys_dir is not None else default_keys_dir()


def fingerprint(public_z85: bytes) -> str:
    """The first 8 characters of a Z85 public key: enough to tell keys apart in a log."""
    return public_z85[:8].decode("ascii", "replace")


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port); a clear error otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DaemonError(f"remote address {address!r} is not HOST:PORT (e.g. gpu-box.lan:47900)")
    return host.strip("[]"), int(port)


class _AllowList:
    """The ZAP credentials callback: is this client public key in the allow-list folder right now?"""

    def __init__(self, folder: Path, refusals: Counter[str]) -> None:
        self.folder = folder
        self.refusals = refusals
        self._log = RateLimitedLog(log)

    def callback(self, domain: str, key: bytes) -> bool:
        if bytes(key) in allowed_keys(self.folder):
            return True
        self.refusals["unknown_client_key"] += 1
        self._log.warning("unknown_client_key", "refused a client: public key %s... is not in the allow-list %s "
                          "(add it with `soulx-live keys --allow=KEY`) [%d refused so far]",
                          fingerprint(bytes(key)), self.folder, self.refusals["unknown_client_key"])
        return False


@dataclass
class ServerSecurity:
    """Secures the server's socket; ``refusals`` counts refused clients by reason."""

    cfg: RemoteConfig
    refusals: Counter[str]

    def __post_init__(self) -> None:
        self.curve = False
        self._auth = None
        self._lock = threading.Lock()

    def apply(self, ctx: zmq.Context, sock: zmq.Socket) -> str:
        """Configure ``sock`` before it binds; a description of the mode for the log."""
        cfg = self.cfg
        secret_file = keys_dir(cfg) / f"{SERVER_KEY_NAME}.key_secret"
        if secret_file.exists():
            from zmq.auth.thread import ThreadAuthenticator

            pair = load_key_pair(secret_file)
            allowed = cfg.allowed_clients_dir or keys_dir(cfg) / "allowed"
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("soulx_live.remote.zap"))
            auth.start()
            auth.configure_curve_callback("*", credentials_provider=_AllowList(allowed, self.refusals))
            self._auth = auth
            sock.curve_secretkey = pair.secret
            sock.curve_publickey = pair.public
            sock.curve_server = True
            self.curve = True
            count = len(allowed_keys(allowed))
            if count == 0:
                log.warning("no client key is allowed yet (%s is empty): every client will be refused; add one with "
                            "`soulx-live keys --allow=CLIENT_PUBLIC_KEY`", allowed)
            return (f"CURVE, server key {pair.public.decode()} , {count} allowed client key(s) in {allowed}")
        if is_loopback_host(cfg.host):
            return "plaintext on loopback (no server key; `soulx-live keys --server` to create one)"
        if not cfg.insecure_plaintext:
            raise DaemonError(f"refusing to listen on {cfg.host} without encryption: create a server key pair "
                              f"(`soulx-live keys --server`, written to {keys_dir(cfg)}), or listen on 127.0.0.1, or set "
                              "remote.insecure_plaintext=true on a network you trust completely")
        log.warning("INSECURE: listening on %s in plaintext without authentication (remote.insecure_plaintext); "
                    "anyone who can reach this port can drive the engine and see its video", cfg.host)
        return "plaintext (INSECURE, remote.insecure_plaintext)"

    def close(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


class ClientSecurity:
    """Secures the laptop's socket towards ``host``."""

    def __init__(self, cfg: RemoteConfig, host: str) -> None:
        self.cfg = cfg
        self.host = host
        self.server_key: bytes | None = None
        self.pair = None
        if cfg.server_public_key:
            self.server_key = public_key_text(cfg.server_public_key)
            self.pair = load_key_pair(keys_dir(cfg) / f"{CLIENT_KEY_NAME}.key_secret")
        elif not is_loopback_host(host):
            if not cfg.insecure_plaintext:
                raise DaemonError(f"refusing plaintext to {host}: give the server's public key "
                                  "(--server-key=KEY, printed by `soulx-live keys --server` on the server), or set "
                                  "remote.insecure_plaintext=true on a network you trust completely")
            log.warning("INSECURE: plaintext link to %s (remote.insecure_plaintext): audio and video travel "
                        "unencrypted and unauthenticated", host)

    def apply(self, sock: zmq.Socket) -> None:
        if self.server_key is not None and self.pair is not None:
            sock.curve_secretkey = self.pair.secret
            sock.curve_publickey = self.pair.public
            sock.curve_serverkey = self.server_key

    def describe(self) -> str:
        if self.server_key is None:
            return "plaintext"
        return f"CURVE (server {fingerprint(self.server_key)}..., client {fingerprint(self.pair.public)}...)"
