"""``soulx-live say "text"``: make the running daemon's avatar say something.

Sends the text to the daemon's push API (ZeroMQ, token from ``push.token`` or the daemon's token file);
the daemon synthesises it with its TTS and queues it after speech already queued. ``--wait`` prints the
``started`` and ``finished`` (or ``interrupted``) events of this utterance and returns when it is over.
The daemon must run with pushed audio: ``soulx-live run --set audio.source=push``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

NAME = "say"
EXIT_FAILURE = 1
EXIT_NO_DAEMON = 3  # as soulx-live status
HELP = "make the running daemon's avatar say a text (needs audio.source=push)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="what to say")
    parser.add_argument("--voice", default=None, help="TTS voice (default: tts.voice of the daemon)")
    parser.add_argument("--wait", action="store_true", help="print the started/finished events and wait for the end")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="how long to wait for the daemon's answer (and, with --wait, between events)")


def run(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    config = load(args, {})
    from soulx_live.push.client import PushClient, PushError, PushUnavailable

    try:
        client = PushClient(config, timeout_s=args.timeout)
    except PushUnavailable as exc:
        return _fail(exc, EXIT_NO_DAEMON)
    with client:
        if args.wait:
            client.subscribe()
        try:
            receipt = client.say(args.text, args.voice)
        except PushUnavailable as exc:
            return _fail(exc, EXIT_NO_DAEMON)
        except PushError as exc:
            return _fail(exc, EXIT_FAILURE)
        print(f"queued {receipt.utterance_id}: {receipt.duration_s:.2f} s at {receipt.start_s:.2f} s")
        if not args.wait:
            return 0
        budget = receipt.duration_s + max(args.timeout, 1.0) + max(0.0, receipt.start_s)
        for event in client.events(timeout_s=budget):
            if event.utterance_id != receipt.utterance_id:
                continue
            print(f"{event.kind} {event.utterance_id} at {event.position_s:.2f} s (played {event.played_s:.2f} s)")
            if event.kind in ("finished", "interrupted"):
                return 0
        return _fail(f"no 'finished' event for {receipt.utterance_id} within {budget:.0f} s", EXIT_FAILURE)


def _fail(problem: object, code: int) -> int:
    sys.stderr.write(f"soulx-live say: {problem}\n")
    return code
