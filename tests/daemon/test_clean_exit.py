"""After a clean exit no socket file is left behind, so the next ``status`` says at once that no daemon runs
(before, it found the stale control socket, waited 2 s and asked whether a daemon had crashed)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from live_support import ProbeSink, live_config, short_tmp, write_tone  # noqa: E402

from soulx_live.control.client import query_status  # noqa: E402
from soulx_live.daemon import Daemon  # noqa: E402
from soulx_live.errors import DaemonUnavailable  # noqa: E402


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_no_socket_file_survives_a_clean_exit(isolation: str) -> None:
    with short_tmp() as root:
        speech = write_tone(root / "speech.wav", 1.0)
        config = live_config(root, **{"audio.file": str(speech), "audio.realtime": isolation == "process",
                                      "supervisor.isolation": isolation})
        assert Daemon(config, sink_factory=lambda _: [ProbeSink()]).run() == 0
        left = sorted(p.name for p in (root / "rt").iterdir() if p.suffix == ".ipc")
        with pytest.raises(DaemonUnavailable, match="no control socket at"):  # known at once, without waiting
            query_status(config.bus, timeout_s=2.0)
    assert left == []
