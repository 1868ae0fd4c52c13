"""``soulx-live serve``: host the engine for a laptop that runs ``soulx-live run --remote HOST:PORT``.

Listens on ``remote.host:remote.port`` (default 127.0.0.1:47900). With a server key pair (``soulx-live keys
--server``) the link is CURVE-encrypted and only the client keys in the allow-list get in; without one only
loopback is allowed (or plaintext with ``remote.insecure_plaintext``, which warns). Ctrl-C stops it.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

NAME = "serve"
HELP = "host the engine for a remote laptop (`run --remote HOST:PORT` there)"

log = logging.getLogger("soulx_live.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to listen on (remote.host; 0.0.0.0: all, needs a server key)")
    parser.add_argument("--port", type=int, help="TCP port (remote.port; 0: any free port, logged)")
    parser.add_argument("--avatar", metavar="IMAGE", type=Path, help="portrait to animate (engine.avatar)")


def run(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    from soulx_live.log import setup_logging

    extra: dict[str, object] = {}
    if args.host is not None:
        extra["remote.host"] = args.host
    if args.port is not None:
        extra["remote.port"] = args.port
    if args.avatar is not None:
        extra["engine.avatar"] = args.avatar.resolve()
    config = load(args, extra)
    setup_logging(level="DEBUG" if args.verbose else config.logging.level, fmt=config.logging.format,
                  process_name="serve")
    from soulx_live.remote.server import RemoteServer

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    RemoteServer(config).serve(stop.is_set, on_listening=lambda ep: print(f"listening on {ep}", flush=True))
    return 0
