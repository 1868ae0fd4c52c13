"""``soulx-live interrupt``: barge-in on the running daemon from a terminal or a script.

Asks the daemon over its control socket to stop what the avatar is saying now: queued speech is
dropped, the engine session is reset and the sinks drop every chunk of the old epoch, so the voice stops
within a few frames and the avatar goes back to idle. Prints the new epoch. Works for any audio source
(pushed speech, a script, a file, a microphone).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

NAME = "interrupt"
HELP = "barge-in: stop what the running daemon's avatar is saying now"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=2.0, metavar="S", help="how long to wait for the daemon")


def run(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    config = load(args, {})
    from soulx_live.control.client import request_interrupt

    epoch = request_interrupt(config.bus, timeout_s=args.timeout)  # DaemonUnavailable: one line from the CLI
    print(f"interrupted: epoch {epoch}")
    return 0
