"""Recovery of the live daemon from a dead or hung worker, as the user sees it (issue 18, item 3).

Each test starts the real daemon and its real worker (lite engine unless said), plays a file in real time whose
samples are all distinct (seeded noise, so an offset, a gap or a repeat shows), does the fault, and checks what
reached the sink against what went in:

- kill -9 mid-speech with the default supervisor settings: every input sample comes out, once, in order, after
  the held frames (the restarted worker resumes the timeline where its predecessor stopped rendering), the first
  restart is immediate, and nothing is reported lost;
- audio beyond ``supervisor.replay_max_s`` is lost and said to be: the reported spans are exactly what is missing;
- a hung (SIGSTOPped) worker with the defaults: status says "stalled" within two heartbeat intervals and the sinks'
  hold names it; it is replaced after ``heartbeat_timeout_s`` and still nothing is lost;
- a worker whose start-up (session start, first chunk) takes longer than ``heartbeat_timeout_s`` is not restarted.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon_fakes import write_audio
from live_support import (
    SR,
    DaemonThread,
    ProbeSink,
    Write,
    assert_contiguous,
    live_config,
    short_tmp,
    wait_for,
)

from soulx_live.config import SoulxConfig, SupervisorConfig
from soulx_live.daemon import Daemon
from soulx_live.worker_launch import heartbeat_interval_s

pytestmark = pytest.mark.timeout(60)

DEFAULTS = SupervisorConfig()
QUANT = 1.5 / 32768  # the file is 16-bit PCM: what comes out matches what went in to this much


def noise(seconds: float, seed: int = 18) -> np.ndarray:
    """Speech-loud (rms ~0.29), every sample different: a shifted, missing or repeated stretch cannot match."""
    return np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * SR)).astype(np.float32)


def defaults(**overrides: object) -> dict[str, object]:
    """The shipped supervisor settings (live_config's are fast test ones), but a short init timeout and grace."""
    keys = ("startup_timeout_s", "heartbeat_timeout_s", "restart_backoff_s", "replay_max_s", "max_restarts")
    out: dict[str, object] = {f"supervisor.{k}": getattr(DEFAULTS, k) for k in keys}
    out["supervisor.restart_backoff_s"] = list(DEFAULTS.restart_backoff_s)
    return {**out, **overrides}


def speech_daemon(root: Path, pcm: np.ndarray, **overrides: object) -> tuple[Daemon, ProbeSink, list[tuple[int, int]]]:
    wav = write_audio(root / "speech.wav", pcm[None], SR)
    config: SoulxConfig = live_config(root, **{"audio.file": str(wav), "audio.realtime": True, **overrides})
    probe = ProbeSink()
    daemon = Daemon(config, sink_factory=lambda _: [probe])
    lost: list[tuple[int, int]] = []
    daemon.push.audio_lost = lambda start, n: lost.append((start, n))  # type: ignore[attr-defined]
    return daemon, probe, lost


def played_audio(writes: list[Write]) -> np.ndarray:
    """The engine's audio as the sink got it, held (silent) frames left out."""
    parts = [w.audio for w in writes if w.rms > 0.0]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def assert_same_audio(out: np.ndarray, ref: np.ndarray) -> None:
    """``out`` is ``ref`` sample for sample, then at most the last chunk's silent padding."""
    assert out.shape[0] >= ref.shape[0], f"{(ref.shape[0] - out.shape[0]) / SR:.2f} s of the input never came out"
    diff = np.abs(out[:ref.shape[0]] - ref)
    first_bad = int(np.argmax(diff > QUANT)) if (diff > QUANT).any() else -1
    assert first_bad < 0, f"the output leaves the input at {first_bad / SR:.3f} s (a gap, a repeat or a shift)"
    assert not np.any(out[ref.shape[0]:]), f"{(out.shape[0] - ref.shape[0]) / SR:.2f} s more audio than went in"


def run_to_end(runner: DaemonThread, timeout_s: float) -> int:
    runner.thread.join(timeout_s)
    assert not runner.thread.is_alive(), "the daemon did not end with its file"
    if runner.error:
        raise runner.error[0]
    return runner.result[0]


def test_kill_9_mid_speech_loses_nothing_and_the_timeline_resumes_where_it_stopped() -> None:
    ref = noise(6.0)
    with short_tmp() as root:
        daemon, probe, lost = speech_daemon(root, ref, **defaults())
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: len(probe.speech_writes()) >= 10, 15, "two seconds of speech")
            pid = daemon.worker_pid
            assert pid is not None
            before, t_kill = len(probe.snapshot()), time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: daemon.status().restarts == 1 and daemon.status().state == "running", 10, "the restart")
            wait_for(lambda: speech_back(probe.snapshot()[before:]) is not None, 10, "speech again")
            back = speech_back(probe.snapshot()[before:])
            assert back is not None
            back_s = back - t_kill
            status = daemon.status()
        finally:
            code = run_to_end(runner, 30)
    writes = probe.snapshot()
    print(f"kill -9: speech back after {back_s:.2f} s, {sum(w.n for w in writes if w.rms == 0)} held frames, "
          f"lost {lost}, status {status.state} restarts {status.restarts}")
    assert code == 0 and status.restarts == 1
    assert any(w.rms == 0.0 for w in writes[before:]), "no held frames covered the outage"
    assert_contiguous(writes)
    assert_same_audio(played_audio(writes), ref)
    assert lost == [] and "audio_dropped_samples=0" in status.detail
    # restart 1 is immediate: the outage is the worker's start-up (0.4 s here) and the replay, not a backoff
    assert back_s < 2.0, f"speech came back {back_s:.2f} s after the kill"


def speech_back(writes: list[Write]) -> float | None:
    """When speech reached the sink again after the first held frame of ``writes`` (None: not yet)."""
    held = next((i for i, w in enumerate(writes) if w.rms == 0.0), None)
    if held is None:
        return None
    return next((w.mono for w in writes[held:] if w.rms > 0.0), None)


def test_audio_beyond_replay_max_s_is_lost_and_reported_exactly() -> None:
    ref = noise(5.0)
    with short_tmp() as root:
        # a 1 s backoff makes the outage longer than the 0.2 s kept for the next worker
        daemon, probe, lost = speech_daemon(root, ref, **defaults(**{"supervisor.restart_backoff_s": [1.0],
                                                                      "supervisor.replay_max_s": 0.2}))
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: len(probe.speech_writes()) >= 5, 15, "a second of speech")
            pid = daemon.worker_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: daemon.status().restarts == 1 and daemon.status().state == "running", 10, "the restart")
            wait_for(lambda: bool(lost), 5, "the loss to be reported")
            status = daemon.status()
        finally:
            run_to_end(runner, 30)
    total = sum(n for _, n in lost)
    print(f"lost spans {lost} ({total / SR:.2f} s)")
    assert total >= 0.5 * SR, "a 1 s outage with 0.2 s kept must lose most of it"
    assert f"audio_dropped_samples={total}" in status.detail
    # what came out is exactly the input without the reported spans: the report is the truth, no more, no less
    keep = np.ones(ref.shape[0], bool)
    for start, n in lost:
        keep[start:start + n] = False
    assert_same_audio(played_audio(probe.snapshot()), ref[keep])


def test_sigstop_says_stalled_at_once_then_the_worker_is_replaced_with_nothing_lost() -> None:
    ref = noise(16.0)
    interval = heartbeat_interval_s(DEFAULTS)
    with short_tmp() as root:
        daemon, probe, lost = speech_daemon(root, ref, **defaults())
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: len(probe.speech_writes()) >= 10, 15, "two seconds of speech")
            pid = daemon.worker_pid
            assert pid is not None
            t_stop = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            stalled_s = wait_for(lambda: daemon.driver.view().state == "stalled", 2 * interval + 1.5, "'stalled'")
            said = daemon.status()
            wait_for(lambda: any(h.startswith("engine stalled") for h in probe.holds), 2, "the hold to name it")
            wait_for(lambda: daemon.status().restarts == 1 and daemon.status().state == "running",
                     DEFAULTS.heartbeat_timeout_s + 5, "the replacement")
            replaced_s = time.monotonic() - t_stop
        finally:
            run_to_end(runner, 40)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)  # ours, whatever happened above
                except ProcessLookupError:
                    pass
    print(f"SIGSTOP: stalled after {stalled_s:.2f} s, replaced after {replaced_s:.2f} s, lost {lost}")
    assert replaced_s <= DEFAULTS.heartbeat_timeout_s + 3
    assert_contiguous(probe.snapshot())
    assert_same_audio(played_audio(probe.snapshot()), ref)  # the 10 s hang is within replay_max_s: all replayed
    assert lost == []
    assert said.state == "stalled", f"status said {said.state!r} {said.detail!r} while the worker was stopped"


@pytest.mark.timeout(180)  # a torch worker start on a loaded 2-core runner
def test_a_slow_start_up_is_not_a_hang_with_a_1_s_heartbeat_timeout() -> None:
    pytest.importorskip("torch")
    ref = noise(8.0)
    with short_tmp() as root:
        daemon, probe, lost = speech_daemon(root, ref, **{
            "engine.kind": "flashtalk", "engine.flashtalk.preset": "tiny-random", "engine.drift.enabled": False,
            "supervisor.init_timeout_s": 120.0, "supervisor.heartbeat_timeout_s": 1.0})
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: len(probe.speech_writes()) >= 3, 150, "speech frames from the first worker")
            status = daemon.status()
        finally:
            runner.stop(60)
    print(f"tiny-random, heartbeat_timeout_s=1: {status.state}, {status.restarts} restarts, lost {lost}")
    assert status.restarts == 0, f"a healthy worker was restarted at start-up: {status.detail}"
