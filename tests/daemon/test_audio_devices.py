"""Live audio capture against a REAL PulseAudio server with a null sink (no sound card needed).

The server runs with a private runtime dir under tmp_path; a known signal is played into the null
sink with ``pacat`` and captured from its ``.monitor`` through :class:`DeviceSource` (PortAudio ->
ALSA pulse plugin). Skips with the reason when pulseaudio/pactl/pacat or libportaudio are missing
(install: ``apt-get install pulseaudio pulseaudio-utils libportaudio2`` and ``pip install sounddevice``).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.extras import MissingExtraError, require

SINK = "avsink"
RATE = 16000
BLOCK = 640


def _missing() -> str | None:
    for tool in ("pulseaudio", "pactl", "pacat"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install pulseaudio pulseaudio-utils)"
    try:
        require("sounddevice", "audio")
    except MissingExtraError as exc:
        return f"{exc} (and apt-get install libportaudio2)"
    return None


pytestmark = [pytest.mark.system("pulseaudio"), pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]


class PulseServer:
    """A private ``pulseaudio`` with one 48 kHz stereo null sink; restartable."""

    def __init__(self, root: Path) -> None:
        self.run_dir = root / "run"
        self.run_dir.mkdir(mode=0o700, parents=True)
        (root / "home").mkdir()
        client_conf = root / "client.conf"
        client_conf.write_text("autospawn = no\n")
        self.socket = self.run_dir / "native"
        self.env = {
            "XDG_RUNTIME_DIR": str(self.run_dir),
            "HOME": str(root / "home"),
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_CLIENTCONFIG": str(client_conf),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
                "--use-pid-file=no", "--log-target=stderr", "--log-level=error",
                f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
                f"--load=module-null-sink sink_name={SINK} rate=48000 channels=2",
            ],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.pactl("info").returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("pulseaudio did not come up within 10 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None
        if self.socket.exists():
            self.socket.unlink()

    def pactl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pactl", *args], check=False, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=5)

    def play(self, pcm48k_stereo: np.ndarray) -> subprocess.Popen[bytes]:
        """Play float32 interleaved stereo at 48 kHz into the null sink (returns the running pacat)."""
        proc = subprocess.Popen(
            ["pacat", "--playback", f"--device={SINK}", "--format=float32le", "--rate=48000", "--channels=2",
             "--latency-msec=50"],
            env={**os.environ, **self.env},
            stdin=subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(np.ascontiguousarray(pcm48k_stereo, dtype="<f4").tobytes())
        proc.stdin.close()
        return proc


@pytest.fixture
def pulse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    server = PulseServer(tmp_path)
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PULSE_SOURCE", raising=False)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class Collector:
    """Runs ``source.blocks()`` on a thread, keeping every block with its arrival time."""

    def __init__(self, source: object) -> None:
        self.source = source
        self.blocks: list[np.ndarray] = []
        self.times: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for block in self.source.blocks():  # type: ignore[attr-defined]
            self.blocks.append(np.array(block, copy=True))
            self.times.append(time.monotonic())

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.blocks) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.blocks) >= n, f"only {len(self.blocks)} blocks after {timeout} s"

    def audio(self, start: int = 0) -> np.ndarray:
        return np.concatenate(self.blocks[start:]) if len(self.blocks) > start else np.zeros(0, np.float32)

    def stop(self) -> None:
        self.source.stop()  # type: ignore[attr-defined]
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


def _probe(seconds: float = 1.5) -> np.ndarray:
    """A 16 kHz mono probe: chirp 200 -> 3000 Hz then a noise burst (sharp correlation peak)."""
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * RATE)) / RATE
    chirp = 0.4 * np.sin(2 * np.pi * (200 * t + (3000 - 200) / (2 * seconds) * t**2))
    from scipy.signal import butter, sosfilt

    # Band-limited noise: the device chain (and any 44.1 kHz hop) legitimately filters near 8 kHz.
    noise = 0.3 * sosfilt(butter(8, 4000, fs=RATE, output="sos"), rng.standard_normal(int(0.3 * RATE)))
    return np.concatenate([chirp, noise]).astype(np.float32)


def _to_48k_stereo(x16: np.ndarray) -> np.ndarray:
    from scipy.signal import resample_poly

    x48 = resample_poly(x16, 3, 1).astype(np.float32)
    return np.stack([x48, x48], axis=1)


def _ncc_peak(captured: np.ndarray, played: np.ndarray, up: int = 4) -> tuple[float, int]:
    """Peak normalized cross-correlation and the lag (16 kHz samples into ``captured``).

    Both signals are upsampled ``up`` times first: the capture starts at an arbitrary phase of the
    device clock, so the best alignment is usually *between* two 16 kHz samples, and an integer-lag
    correlation would understate a perfect capture (by ~3 % at the chirp's 3 kHz top)."""
    from scipy.signal import correlate, resample_poly

    cap = resample_poly(captured.astype(np.float64), up, 1)
    ref = resample_poly(played.astype(np.float64), up, 1)
    corr = correlate(cap, ref, mode="valid", method="fft")
    csum = np.concatenate([[0.0], np.cumsum(cap**2)])
    energy = csum[ref.shape[0] :] - csum[: cap.shape[0] - ref.shape[0] + 1]
    ncc = corr / (np.sqrt(np.maximum(energy, 1e-12)) * np.linalg.norm(ref))
    best = int(np.argmax(ncc))
    return float(ncc[best]), best // up


def _loopback_source(**kwargs: object):
    from soulx_live.audio.device_source import DeviceSource
    from soulx_live.audio.loopback import find_monitor_source

    target = find_monitor_source(None)
    assert target.env == {"PULSE_SOURCE": f"{SINK}.monitor"}
    return DeviceSource(target.device, env=target.env, name=target.description, sample_rate=RATE,
                        block_samples=BLOCK, **kwargs)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("device_rate", "min_ncc"), [(None, 0.98), (48000, 0.98)], ids=["default-rate", "48k"])
def test_loopback_capture_correlates_with_played_signal(pulse: PulseServer, device_rate: int | None, min_ncc: float) -> None:
    """ALSA's "pulse" device defaults to 44.1 kHz (PulseAudio resamples the 48 kHz sink, then we
    resample 44.1k -> 16k: a non-integer ratio); at 48 kHz only our 3:1 resampler is in the chain."""
    # Everything heavy (scipy imports) before capture starts: a GIL stall while the stream runs leaves
    # a standing backlog in the ALSA buffer, i.e. extra latency (measured: ~0.55 s).
    probe = _probe()
    played = _to_48k_stereo(probe)
    source = _loopback_source(device_rate=device_rate)
    assert source.realtime and source.duration_s == float("inf")
    col = Collector(source)
    try:
        col.wait_for(8, timeout=10)  # capture really flowing (0.3 s) before anything is played
        start = len(col.blocks)
        player = pulse.play(played)
        assert player.wait(timeout=10) == 0
        col.wait_for(start + int(2.4 * RATE / BLOCK), timeout=10)
    finally:
        col.stop()
    captured = col.audio(start)
    assert all(b.dtype == np.float32 and b.shape == (BLOCK,) for b in col.blocks)
    ncc, lag = _ncc_peak(captured, probe)
    logging.getLogger(__name__).warning("loopback ncc=%.4f lag=%d samples (%.1f ms)", ncc, lag, 1000 * lag / RATE)
    print(f"loopback capture: normalized cross-correlation {ncc:.4f}, lag {lag} samples ({1000 * lag / RATE:.1f} ms)")
    assert ncc > min_ncc, f"captured audio does not match what was played (ncc={ncc:.3f}, lag={lag})"
    assert lag / RATE < 0.3, f"capture latency {lag / RATE:.2f} s (play -> block) is too high"
    # Real-time pace: 16 kHz blocks arrive about as fast as they last.
    span = col.times[-1] - col.times[0]
    assert 0.7 < (len(col.times) - 1) * BLOCK / RATE / span < 1.4


@pytest.mark.timeout(30)
def test_device_loss_gives_silence_and_reopens(pulse: PulseServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="soulx_live.audio.device_source")
    source = _loopback_source(stall_timeout_s=0.4, max_backoff_s=0.5)
    col = Collector(source)
    try:
        col.wait_for(8, timeout=10)
        pulse.kill()
        t_kill, n_kill = time.monotonic(), len(col.blocks)
        time.sleep(2.0)
        # Silence keeps flowing at (about) real-time pace while the server is gone.
        n_during = len(col.blocks) - n_kill
        assert n_during >= int(0.5 * 2.0 * RATE / BLOCK), f"only {n_during} blocks in 2 s without a device"
        assert not np.any(col.audio(len(col.blocks) - 10))
        lost = [r.getMessage() for r in caplog.records if "sending silence" in r.getMessage()]
        assert lost and f"{SINK}.monitor" in lost[0], caplog.text

        pulse.start()
        t_back = time.monotonic()
        col.wait_for(len(col.blocks) + 8, timeout=5)
        deadline = time.monotonic() + 10
        while source.reopens < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.reopens >= 2, "the stream was never re-opened after the server came back"
        # Capture really resumed: a tone played now comes through.
        time.sleep(0.5)
        start = len(col.blocks)
        tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(1.0 * RATE)) / RATE)).astype(np.float32)
        assert pulse.play(_to_48k_stereo(tone)).wait(timeout=10) == 0
        col.wait_for(start + int(1.3 * RATE / BLOCK), timeout=10)
        rms = float(np.sqrt(np.mean(col.audio(start) ** 2)))
        assert rms > 0.1, f"no audio after the server came back (rms={rms:.4f})"
        assert any("capture resumed" in r.getMessage() for r in caplog.records), caplog.text
        print(f"device loss: {n_during} silent blocks in 2 s, re-opened {t_back - t_kill:.1f} s after loss; rms after {rms:.3f}")
    finally:
        col.stop()


def test_unknown_monitor_names_the_available_ones(pulse: PulseServer) -> None:
    from soulx_live.audio.loopback import LoopbackError, find_monitor_source

    with pytest.raises(LoopbackError, match=rf"{SINK}\.monitor"):
        find_monitor_source("nosuchsink")
    assert find_monitor_source(SINK).env == {"PULSE_SOURCE": f"{SINK}.monitor"}


@pytest.mark.timeout(20)
def test_missing_device_yields_silence_and_names_it(caplog: pytest.LogCaptureFixture) -> None:
    from soulx_live.audio.device_source import DeviceSource

    caplog.set_level(logging.WARNING, logger="soulx_live.audio.device_source")
    source = DeviceSource("no-such-device-xyz", sample_rate=RATE, block_samples=BLOCK, max_backoff_s=0.5)
    t0 = time.monotonic()
    got = []
    for block in source.blocks():
        got.append(block)
        if len(got) == 25:
            source.stop()
    elapsed = time.monotonic() - t0
    assert all(b.shape == (BLOCK,) and not b.any() for b in got)
    assert 0.7 < 25 * BLOCK / RATE / elapsed < 1.4, f"silence not at real-time pace ({elapsed:.2f} s for 1 s)"
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "no-such-device-xyz" in msgs[0] and "soulx-live devices" in msgs[0], msgs


def test_open_live_source_picks_the_default_monitor(pulse: PulseServer) -> None:
    from soulx_live.audio.device_source import open_live_source

    source = open_live_source("loopback", None, sample_rate=RATE, block_samples=BLOCK)
    assert source.device == "pulse" and source.env == {"PULSE_SOURCE": f"{SINK}.monitor"}
    assert open_live_source("mic", "3", sample_rate=RATE, block_samples=BLOCK).device == 3


@pytest.mark.timeout(30)
def test_loopback_drives_the_daemon_end_to_end(pulse: PulseServer, tmp_path: Path) -> None:
    """Daemon (audio.source=loopback) + FakeEngine (echoes its input audio into each chunk) + recorder:
    what was played into the null sink comes out in the recorded avatar video's audio track."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from daemon_fakes import FakeEngine

    from soulx_live.audio.file import decode_audio_file
    from soulx_live.config import load_config
    from soulx_live.daemon import Daemon

    out = tmp_path / "rec.mp4"
    config = load_config(None, env={}, overrides={
        "audio.source": "loopback", "bus.runtime_dir": str(tmp_path / "rt"),
        "sinks.recorder.enabled": True, "sinks.recorder.path": str(out),
    })
    probe = _probe()
    played = _to_48k_stereo(probe)
    daemon = Daemon(config, engine_factory=lambda _: FakeEngine())
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while daemon.counters.chunks < 3 and time.monotonic() < deadline:  # capture flowing, avatar running
            time.sleep(0.05)
        assert daemon.counters.chunks >= 3, "the daemon produced no chunks from the loopback source"
        assert pulse.play(played).wait(timeout=10) == 0
        time.sleep(1.0)
    finally:
        daemon.request_stop("test done")
        thread.join(15)
    assert result == [0]
    recorded = decode_audio_file(out, RATE)
    ncc, lag = _ncc_peak(recorded, probe)
    print(f"daemon loopback -> avatar recording: ncc {ncc:.4f} at {lag / RATE:.2f} s into the recording")
    assert ncc > 0.95, f"the avatar's audio does not follow what was played (ncc={ncc:.3f})"

