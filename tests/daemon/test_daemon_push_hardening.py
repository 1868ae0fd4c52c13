"""Issue 18 items 4-6 on the real daemon (lite engine in its worker process, push over ZeroMQ and HTTP on
127.0.0.1): the attacks of a hostile local client, one daemon for all of them (CPU is scarce). After each,
the daemon still serves frames with the pushed speech, and what the client and the log are told is true."""
from __future__ import annotations

import logging
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "push"))
pytest.importorskip("aiohttp", reason='the HTTP push API needs the [http] extra: pip install -e ".[http]"')

from attack_kit import port_of, post, raw_request, wait_closed
from live_support import DaemonThread, ProbeSink, live_config, short_tmp, wait_for

from soulx_live.daemon import Daemon

pytestmark = pytest.mark.timeout(60)

FORGED = "04:00:00.000 INFO daemon FAKE: x"


def test_hostile_local_client_against_the_running_daemon(caplog: pytest.LogCaptureFixture) -> None:
    with short_tmp() as root:
        config = live_config(root, **{"audio.source": "push", "push.enabled": True, "push.http_enabled": True,
                                      "push.http_port": 0, "push.http_timeout_s": 1.0, "push.max_packet_s": 2.0,
                                      "push.max_queued_s": 3.0})
        probe = ProbeSink()
        daemon = Daemon(config, sink_factory=lambda _: [probe])
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: daemon.push.server is not None and daemon.push.server.http_url, 15, "the push server")
            server = daemon.push.server
            port, token = port_of(server.http_url), server.token
            wait_for(lambda: len(probe.snapshot()) >= 3, 15, "idle frames")
            with caplog.at_level(logging.INFO):
                # 4. a forged log line, no token
                forged = raw_request(port, b"GET /v1/status%0a" + FORGED.replace(" ", "%20").encode()
                                     + b" HTTP/1.1\r\nHost: 127.0.0.1")
                # 5. three bodies that were 500s
                odd = [post(port, b"/v1/say", b'{"text": "\xff"}', token),
                       post(port, b"/v1/say", b'{"text": "hi"}', token, b"application/json; charset=klingon"),
                       post(port, b"/v1/say", b"[" * 100_000 + b"]" * 100_000, token)]
                # 6. a slow client holds no socket past the timeout
                with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
                    t0 = time.monotonic()
                    slow.sendall(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    closed_at, _ = wait_closed(slow, t0 + 5.0)
                # 6. queued audio is capped: 2 s + 2 s pushed at once is more than push.max_queued_s=3
                pcm = (0.3 * np.sin(np.arange(2 * 24000) * 2 * np.pi * 440 / 24000) * 32767).astype("<i2").tobytes()
                pushes = [post(port, b"/v1/audio?rate=24000", pcm, token, b"application/octet-stream")
                          for _ in range(2)]
            assert forged.status == 401 and forged.json()["code"] == "unauthorized"
            assert not [line for line in caplog.text.splitlines() if line.startswith("04:00")], "forged log line"
            assert "'/v1/status\\n04:00:00.000 INFO daemon FAKE: x'" in caplog.text
            assert [(r.status, r.json()["code"]) for r in odd] == [(400, "malformed")] * 3
            assert "not UTF-8" in odd[0].json()["message"] and "klingon" in odd[1].json()["message"]
            assert "nests deeper" in odd[2].json()["message"]
            assert closed_at - t0 < 2.0, f"a slow client held its socket {closed_at - t0:.1f} s (timeout 1 s)"
            assert [p.status for p in pushes] == [200, 429]
            full = pushes[1].json()
            assert full["code"] == "queue_full" and "push.max_queued_s=3" in full["message"]
            queued = float(full["message"].split(" s of pushed audio")[0].rsplit(" ", 1)[1])
            assert 0.5 < queued <= 2.0  # what it says is queued is the first push, minus what already played
            assert "Traceback" not in caplog.text
            # the session goes on: the accepted push becomes frames with speech
            wait_for(lambda: len(probe.speech_writes()) >= 3, 10, "frames carrying the pushed audio")
            status = raw_request(port, b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                                 + token.encode())
            assert status.status == 200 and status.json()["status"]["utterances"] == 1
        finally:
            runner.stop()
