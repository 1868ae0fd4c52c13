"""``soulx-live say``: sends to the daemon's push API, --wait prints the events, no daemon -> clear error."""
from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import pytest
from push_testkit import FakeHandler, make_config

from soulx_live.commands import say
from soulx_live.config import SoulxConfig
from soulx_live.push.handler import PushReceipt
from soulx_live.push.server import PushServer
from soulx_live.push.utterances import UtteranceTracker

pytestmark = pytest.mark.timeout(20)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    say.add_arguments(parser)
    return parser.parse_args(list(argv))


def _loader(config: SoulxConfig) -> Any:
    return lambda args, overrides: config


class PlayingHandler(FakeHandler):
    """Plays each said utterance at once (0.05 s later) so the tracker emits its events."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker: UtteranceTracker | None = None

    def say(self, text: str, *, voice: str | None, utterance_id: str) -> PushReceipt:
        receipt = super().say(text, voice=voice, utterance_id=utterance_id)
        tracker = self.tracker
        assert tracker is not None
        tracker.add(receipt.utterance_id, receipt.start_sample, receipt.n_samples)

        def play() -> None:
            time.sleep(0.2)
            tracker.on_played(receipt.start_sample + 1)
            tracker.on_played(receipt.start_sample + receipt.n_samples)

        threading.Thread(target=play, daemon=True).start()
        return receipt


def test_say_and_wait_prints_started_and_finished(capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config()
    handler = PlayingHandler()
    with PushServer(config, handler) as server:
        handler.tracker = UtteranceTracker(16000, server.publish_event)
        code = say.run(_args("one two three four", "--voice", "anna", "--wait", "--timeout", "5"), _loader(config))
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert handler.said[0][:2] == ("one two three four", "anna")
    assert out[0].startswith("queued ") and "1.00 s" in out[0]
    assert out[1].startswith("started ") and out[2].startswith("finished ") and "played 1.00 s" in out[2]


def test_say_without_wait_returns_after_the_receipt(capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config()
    handler = FakeHandler()
    with PushServer(config, handler):
        assert say.run(_args("hello"), _loader(config)) == 0
    assert handler.said and capsys.readouterr().out.startswith("queued ")


def test_refused_text_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config()
    with PushServer(config, FakeHandler()):
        assert say.run(_args("boom"), _loader(config)) == 1
    assert "cannot say boom" in capsys.readouterr().err


def test_no_daemon_names_the_run_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert say.run(_args("hello"), _loader(make_config())) == 3
    assert "soulx-live run --set audio.source=push" in capsys.readouterr().err


def test_command_module_shape() -> None:
    assert say.NAME == "say" and say.HELP
