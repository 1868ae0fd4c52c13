"""The per-user folder that holds the daemon's ipc:// sockets, and socket addresses.

Anyone who can connect to a socket can feed the engine or read the avatar stream, so the folder must
be private: owned by this user, mode 0700, not a symlink. An existing folder that fails this is refused
(never "fixed" silently: it may be someone else's trap in /tmp); the error says what to run.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .config import BusConfig
from .netaddr import is_loopback_host
from .protocol import SOCKET_NAMES

__all__ = ["PUSH_SOCKET_NAMES", "RuntimeDirError", "endpoint", "remove_socket_files", "runtime_dir"]

log = logging.getLogger(__name__)

# The push API's sockets (soulx_live.push): tcp ports follow the bus sockets, tcp_port + len(SOCKET_NAMES) + index.
PUSH_SOCKET_NAMES = ("push", "push-events")

_UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, including the terminating NUL


class RuntimeDirError(RuntimeError):
    """The runtime folder is missing, unsafe or unusable; the message says how to fix it."""


def _default_dir() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "soulx-live"
    return Path("/tmp") / f"soulx-live-{os.getuid()}"


def runtime_dir(bus: BusConfig | None = None) -> Path:
    """Create (mode 0700) or check the runtime folder and return it.

    ``bus.runtime_dir`` when set, else ``$XDG_RUNTIME_DIR/soulx-live``, else ``/tmp/soulx-live-$UID``.
    Raises :class:`RuntimeDirError` if it is not a real folder owned by this user with no group/other access.
    """
    path = bus.runtime_dir if bus is not None and bus.runtime_dir is not None else _default_dir()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise RuntimeDirError(f"cannot create the runtime folder {path}: {exc.strerror or exc}; "
                              "set bus.runtime_dir (SOULX_BUS__RUNTIME_DIR) to a folder you own") from exc
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(f"runtime folder {path} is not a plain folder (a symlink or a file); "
                              f"remove it (rm {path}) or set bus.runtime_dir to another folder")
    if info.st_uid != os.getuid():
        raise RuntimeDirError(f"runtime folder {path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); "
                              "set bus.runtime_dir (SOULX_BUS__RUNTIME_DIR) to a folder you own")
    if info.st_mode & 0o077:
        raise RuntimeDirError(f"runtime folder {path} is open to other users (mode {stat.S_IMODE(info.st_mode):o}); "
                              f"run: chmod 700 {path}")
    return path


def endpoint(name: str, bus: BusConfig) -> str:
    """The ZeroMQ address of socket ``name`` (one of :data:`soulx_live.protocol.SOCKET_NAMES` or
    :data:`PUSH_SOCKET_NAMES`).

    ipc: ``ipc://<runtime dir>/<name>.ipc`` (creates/checks the folder). tcp: ``tcp://<tcp_host>:<port>``
    with ``port = tcp_port + index of name``; a host other than loopback is logged as a warning, as the
    sockets carry no authentication yet.
    """
    names = SOCKET_NAMES + PUSH_SOCKET_NAMES
    if name not in names:
        raise ValueError(f"unknown socket {name!r}; known sockets: {', '.join(names)}")
    if bus.transport == "tcp":
        if not is_loopback_host(bus.tcp_host) and name != "push":  # push requests carry a token; events do not
            log.warning("bus socket %s listens on %s, reachable from other machines without authentication",
                        name, bus.tcp_host)
        return f"tcp://{bus.tcp_host}:{bus.tcp_port + names.index(name)}"
    address = runtime_dir(bus) / f"{name}.ipc"
    if len(os.fsencode(address)) > _UNIX_PATH_MAX:
        raise RuntimeDirError(f"socket path {address} is longer than the {_UNIX_PATH_MAX} bytes Unix sockets allow; "
                              "set bus.runtime_dir to a shorter folder")
    return f"ipc://{address}"


def remove_socket_files(bus: BusConfig) -> list[str]:
    """After a clean exit: remove this daemon's ipc socket files (ZeroMQ closes its listeners asynchronously and a
    process that exits right after leaves them behind, so the next ``status`` would wait for a daemon that is
    gone). Only called once every socket of the run is closed; returns the names removed."""
    if bus.transport != "ipc":
        return []
    removed = []
    for name in SOCKET_NAMES + PUSH_SOCKET_NAMES:
        path = Path(endpoint(name, bus)[len("ipc://"):])
        try:
            path.unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove the socket file %s: %s", path, exc)
    return removed
