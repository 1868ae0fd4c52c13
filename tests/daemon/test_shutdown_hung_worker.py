"""Ctrl-C with a hung worker: the staged close ends within its bound and no process of the worker's group outlives
the daemon (a SIGSTOPped worker ignores Shutdown and SIGTERM; before, it stayed behind re-parented, forever)."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from live_support import DaemonThread, ProbeSink, live_config, short_tmp, wait_for, write_tone  # noqa: E402

from soulx_live.daemon import Daemon  # noqa: E402

GRACE_S = 3.0
EXIT_MARGIN_S = 3.0  # the join of the daemon's threads (2 s) and process exit


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.timeout(60)
def test_stop_with_a_stopped_worker_kills_its_group_within_the_grace() -> None:
    with short_tmp() as root:
        speech = write_tone(root / "speech.wav", 30.0)
        # a heartbeat timeout far beyond the test: the supervisor itself never notices the hang
        config = live_config(root, **{"audio.file": str(speech), "audio.realtime": True,
                                      "supervisor.heartbeat_timeout_s": 120.0, "supervisor.shutdown_grace_s": GRACE_S})
        probe = ProbeSink()
        daemon = Daemon(config, sink_factory=lambda _: [probe])
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: len(probe.speech_writes()) >= 3, 20, "speech frames")
            pid = daemon.worker_pid
            assert pid is not None
            group = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.5)
        finally:
            t_stop = time.monotonic()
            daemon.request_stop("test: Ctrl-C")  # what the first SIGINT does
            runner.thread.join(GRACE_S + 10 + EXIT_MARGIN_S)
            took = time.monotonic() - t_stop
    assert not runner.thread.is_alive(), "the daemon did not exit"
    survivors = [p for p in group if not _gone(p)]
    for p in survivors:  # never leave one behind, even when the test fails
        os.kill(p, signal.SIGKILL)
    assert survivors == [], f"processes of the worker's group outlived the daemon: {survivors}"
    assert took <= GRACE_S + EXIT_MARGIN_S, f"the daemon took {took:.1f} s to exit (grace {GRACE_S} s)"
    assert runner.result in ([0], [1])
