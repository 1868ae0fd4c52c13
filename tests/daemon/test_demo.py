"""End to end through the real daemon path: file source -> engine -> ZeroMQ bus (ipc) -> recorder.

Also the shutdown path: the first SIGINT drains and exits 0 with a finished mp4 within the grace
bound, a second SIGINT during the drain exits at once with code 1.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon_fakes import FakeEngine, decoded_lengths, tone, write_audio  # noqa: E402

from plugins.recorder import probe_media  # noqa: E402
from soulx_live import cli  # noqa: E402
from soulx_live.config import load_config  # noqa: E402
from soulx_live.control.client import query_status  # noqa: E402
from soulx_live.daemon import Daemon  # noqa: E402
from soulx_live.errors import DaemonError, DaemonUnavailable  # noqa: E402

CHECKOUT = Path(__file__).resolve().parents[2]
FRAME_S = 1 / 25


def _speech(path: Path, seconds: float) -> Path:
    """Tone bursts (0.3 s on, 0.2 s off) standing in for speech."""
    pcm = tone(seconds, 16000, 300.0)[0]
    gate = (np.arange(pcm.shape[0]) % 8000) < 4800
    return write_audio(path, (pcm * gate)[None], 16000)


def _assert_synced(path: Path, frames: int) -> None:
    info = probe_media(path)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.frames == frames
    assert abs(info.video_s - info.audio_s) <= FRAME_S
    n, _, pts, samples, rate = decoded_lengths(path)
    assert n == frames and all(b > a for a, b in zip(pts, pts[1:]))
    assert abs(samples / rate - frames * FRAME_S) <= FRAME_S


def test_demo_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`soulx-live demo` with a 2.5 s file, real time, lite engine, bus over ipc in a private folder."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    speech = _speech(tmp_path / "speech.wav", 2.5)
    out = tmp_path / "out" / "demo.mp4"
    t0 = time.monotonic()
    code = cli.main(["demo", "-o", str(out), "--audio", str(speech),
                     "--set", "engine.lite.width=160", "--set", "engine.lite.height=160",
                     "--set", f"bus.runtime_dir={tmp_path / 'rt'}"])
    elapsed = time.monotonic() - t0
    assert code == 0
    assert elapsed >= 2.4  # paced in real time, not faster
    _assert_synced(out, 65)  # 2.5 s = 62.5 frames -> 13 chunks of 5 (the last one padded with silence)
    assert probe_media(out).width == 160


def test_daemon_status_while_running(tmp_path: Path) -> None:
    speech = _speech(tmp_path / "speech.wav", 1.5)
    config = load_config(None, env={}, overrides={
        "audio.file": str(speech), "bus.runtime_dir": str(tmp_path / "rt"),
        "sinks.recorder.enabled": True, "sinks.recorder.path": str(tmp_path / "s.mp4"),
    })
    daemon = Daemon(config, engine_factory=lambda _: FakeEngine())
    import threading

    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()))
    thread.start()
    try:
        reply = None
        for _ in range(100):
            try:
                reply = query_status(config.bus, timeout_s=0.5)
            except DaemonUnavailable:
                time.sleep(0.05)
                continue
            # the engine publishes a chunk before the recorder's thread writes it: wait for both
            if reply.state == "running" and reply.chunks_done > 0 and reply.sinks.get("recorder", "").endswith("chunks"):
                break
            time.sleep(0.05)
        assert reply is not None and reply.state == "running" and reply.engine == "lite"
        assert reply.session_id and reply.chunks_done > 0 and "frames=" in reply.detail
        assert reply.sinks.get("recorder", "").endswith("chunks")
        second = Daemon(config, engine_factory=lambda _: FakeEngine())
        with pytest.raises(DaemonError, match="already running"):
            second.run()
    finally:
        thread.join(15)
    assert result == [0]
    _assert_synced(tmp_path / "s.mp4", 40)


def _start_fake_daemon(tmp_path: Path, seconds: float, **env: str) -> tuple[subprocess.Popen[str], Path, Path]:
    speech = _speech(tmp_path / "long.wav", seconds)
    out = tmp_path / "rec.mp4"
    runtime = tmp_path / "rt"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "daemon_fakes.py"), str(speech), str(out), str(runtime)],
        cwd=CHECKOUT, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    return proc, out, runtime


def _wait_running(proc: subprocess.Popen[str], runtime: Path, min_chunks: int = 3, timeout_s: float = 15.0) -> None:
    from soulx_live.config import BusConfig

    bus = BusConfig(runtime_dir=runtime)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            if query_status(bus, timeout_s=0.5).chunks_done >= min_chunks:
                return
        except DaemonUnavailable:
            pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the daemon never reached the running state: " + proc.communicate()[0])


def test_sigint_drains_and_exits_zero(tmp_path: Path) -> None:
    """The real `soulx-live run` (lite engine) in a subprocess, interrupted once."""
    speech = _speech(tmp_path / "long.wav", 20.0)
    out, runtime = tmp_path / "rec.mp4", tmp_path / "rt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "soulx_live", "run", "--audio", str(speech), "--record", str(out),
         "--set", f"bus.runtime_dir={runtime}", "--set", "engine.lite.width=128", "--set", "engine.lite.height=128"],
        cwd=CHECKOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_running(proc, runtime)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=15)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 0, log
    assert elapsed < 10.0, f"drain took {elapsed:.1f} s (grace is 10 s)"
    assert "draining" in log
    info = probe_media(out)  # finished and playable
    assert 0 < info.frames < 20 * 25 and info.frames % 5 == 0
    _assert_synced(out, info.frames)
    assert not (tmp_path / "rec.part.mp4").exists()


def test_second_sigint_forces_exit(tmp_path: Path) -> None:
    # 0.4 s of work per 0.2 s chunk: the engine falls behind, so the drain has seconds of audio left.
    proc, out, runtime = _start_fake_daemon(tmp_path, 30.0, FAKE_STEP_DELAY_S="0.4")
    try:
        _wait_running(proc, runtime, min_chunks=3)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert proc.poll() is None, "the first interrupt must drain, not exit"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 1, log
    assert elapsed < 3.0  # immediate, up to polling and a loaded machine
    assert "second interrupt" in log


def test_drain_is_bounded_by_the_grace_period(tmp_path: Path) -> None:
    proc, out, runtime = _start_fake_daemon(tmp_path, 30.0, FAKE_STEP_DELAY_S="0.4", FAKE_GRACE_S="0.5")
    try:
        _wait_running(proc, runtime, min_chunks=3)
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=15)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 1, log  # not a clean drain: reported
    assert elapsed < 0.5 + 6.0  # grace, then the sinks close what they have
    assert "shutdown_grace_s" in log
    info = probe_media(out)  # what was recorded is still a finished, synced file
    _assert_synced(out, info.frames)
