"""``soulx-live studio``: a fresh one-time login link for the running daemon's Studio page.

For a browser that lost its session (or another browser): the daemon makes a new code, the previous unused
link stops working, and the link is printed here (stdout), never logged. Asked over the private control socket
(ipc in the 0700 runtime folder), so only the daemon's own user gets one.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

NAME = "studio"
HELP = "print a fresh one-time login link for the running daemon's Studio page"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--open", action="store_true", help="open the link in the default browser")
    parser.add_argument("--timeout", type=float, default=2.0, metavar="S", help="how long to wait for the daemon")


def run(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    config = load(args, {})
    from soulx_live.control.client import request_studio_link

    link = request_studio_link(config.bus, timeout_s=args.timeout)  # DaemonError: one line from the CLI
    print(f"Studio: {link}  (one-time link: it logs one browser in)")
    if args.open:
        import webbrowser

        webbrowser.open(link)
    return 0
