"""CURVE key pairs for the remote link, and the server's allow-list of client public keys.

A key pair is two ZeroMQ certificate files (``zmq.auth`` format): ``NAME.key`` (public) and ``NAME.key_secret``
(public + secret). Both are written mode 0600 inside a 0700 folder; a secret file readable by others is
refused when loaded. Only public keys (Z85 text, 40 characters) are ever shown or logged.
"""
from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

from soulx_live.errors import DaemonError

__all__ = [
    "KeyPair",
    "add_allowed_key",
    "allowed_keys",
    "create_key_pair",
    "default_keys_dir",
    "load_key_pair",
    "public_key_text",
]

log = logging.getLogger(__name__)

Z85_KEY_CHARS = 40


class KeyPair:
    """A CURVE key pair (Z85 bytes); ``secret`` is None for a public-only certificate."""

    def __init__(self, public: bytes, secret: bytes | None, path: Path) -> None:
        self.public = public
        self.secret = secret
        self.path = path

    def __repr__(self) -> str:  # never the secret
        return f"KeyPair(public={self.public.decode()!r}, path={str(self.path)!r})"


def default_keys_dir() -> Path:
    """``$XDG_CONFIG_HOME/soulx-live/keys`` (default ``~/.config/soulx-live/keys``)."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "soulx-live" / "keys"


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def create_key_pair(keys_dir: Path, name: str, *, overwrite: bool = False) -> KeyPair:
    """Write ``NAME.key`` and ``NAME.key_secret`` (mode 0600) in ``keys_dir``; refuses to replace a pair."""
    import zmq.auth

    _private_dir(keys_dir)
    public_file, secret_file = keys_dir / f"{name}.key", keys_dir / f"{name}.key_secret"
    if secret_file.exists() and not overwrite:
        raise DaemonError(f"a key pair already exists at {secret_file}; keep it, or pass --force to replace it "
                          "(clients or servers that trust the old public key must be given the new one)")
    old = os.umask(0o077)  # the files never exist with wider permissions, not even for a moment
    try:
        zmq.auth.create_certificates(str(keys_dir), name)
    finally:
        os.umask(old)
    for path in (public_file, secret_file):
        os.chmod(path, 0o600)
    return load_key_pair(secret_file)


def load_key_pair(path: Path) -> KeyPair:
    """Load a certificate file; a secret file must be a plain file readable by its owner only."""
    import zmq.auth

    if not path.is_file():
        raise DaemonError(f"key file not found: {path} (create one with `soulx-live keys`)")
    if path.name.endswith("_secret"):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise DaemonError(f"secret key {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise DaemonError(f"cannot read key file {path}: {exc}") from None
    if public is None or len(public) != Z85_KEY_CHARS:
        raise DaemonError(f"key file {path} holds no valid public key")
    return KeyPair(public, secret, path)


def public_key_text(value: str) -> bytes:
    """A public key given as Z85 text or as the path of a ``.key`` file -> Z85 bytes."""
    text = value.strip()
    if len(text) == Z85_KEY_CHARS and not Path(text).exists():
        _check_z85(text)
        return text.encode("ascii")
    return load_key_pair(Path(text).expanduser()).public


def _check_z85(text: str) -> None:
    from zmq.utils import z85

    try:
        if len(text) != Z85_KEY_CHARS:
            raise ValueError("length")
        z85.decode(text.encode("ascii"))
    except (ValueError, KeyError, UnicodeEncodeError):
        raise DaemonError(f"not a Z85 public key: {len(text)} characters (give the 40-character text "
                          "`soulx-live keys` printed, or the path of its .key file)") from None


def add_allowed_key(allowed_dir: Path, public: bytes, name: str) -> Path:
    """Put a client public key into the server's allow-list folder (mode 0600)."""
    import zmq.auth

    _check_z85(public.decode("ascii"))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise DaemonError(f"key name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    _private_dir(allowed_dir)
    path = allowed_dir / f"{name}.key"
    old = os.umask(0o077)
    try:
        with open(path, "w", encoding="ascii") as out:
            out.write("#   ZeroMQ CURVE public key of an allowed soulx-live client\n"
                      f"metadata\ncurve\n    public-key = \"{public.decode('ascii')}\"\n")
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    zmq.auth.load_certificate(str(path))  # what the server will read back
    return path


def allowed_keys(allowed_dir: Path) -> frozenset[bytes]:
    """The Z85 public keys in every ``*.key`` file of the allow-list folder (a bad file is skipped, logged)."""
    import zmq.auth

    keys: set[bytes] = set()
    if not allowed_dir.is_dir():
        return frozenset()
    for path in sorted(allowed_dir.glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(str(path))
        except (ValueError, OSError) as exc:
            log.warning("allow-list: skipped %s (%s)", path.name, exc)
            continue
        if public is not None:
            keys.add(bytes(public))
    return frozenset(keys)
