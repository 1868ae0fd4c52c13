"""Helpers for the remote-engine tests: real `soulx-live serve` / `run --remote` / `keys` processes, their logs,
and what the laptop recorded (frames and audio from the mp4)."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np

CHECKOUT = Path(__file__).resolve().parents[2]
SIDE = 128  # the lite engine's output in these tests: small, so a 2-core runner keeps real time
SERVER_SETTINGS = (
    "engine.kind=lite", f"engine.lite.width={SIDE}", f"engine.lite.height={SIDE}", "engine.lite.blinks=false",
    "engine.lite.idle_motion=false", "metrics.enabled=false", "supervisor.init_timeout_s=30",
    "supervisor.heartbeat_timeout_s=2", "remote.video_bitrate=1000000",
)


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(CHECKOUT) + os.pathsep + out.get("PYTHONPATH", "")
    out.pop("SOULX_CONFIG", None)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soulx_live", *args], capture_output=True, text=True,
                          timeout=timeout, env=env(), cwd=CHECKOUT, check=False)


def settings(*items: str) -> list[str]:
    out: list[str] = []
    for item in items:
        out += ["--set", item]
    return out


class Process:
    """A soulx-live command in the background; stdout lines and the stderr log collected."""

    def __init__(self, args: list[str], log: Path, prefix: tuple[str, ...] = ()) -> None:
        self.log = log
        self._err = open(log, "w")
        argv = list(args) if args and args[0] == sys.executable else [sys.executable, "-m", "soulx_live", *args]
        self.proc = subprocess.Popen([*prefix, *argv], stdout=subprocess.PIPE,
                                     stderr=self._err, text=True, env=env(), cwd=CHECKOUT)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_line(self, pattern: str, timeout_s: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; exit {self.proc.poll()}; log:\n{self.text()[-3000:]}")

    def text(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.log.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()
        return int(self.proc.returncode)


def serve(tmp: Path, *extra: str, port: int = 0, name: str = "serve", prefix: tuple[str, ...] = ()) -> tuple[Process, int]:
    """`soulx-live serve` with the test's lite engine; (process, its port) once it listens."""
    proc = Process(["serve", "--port", str(port), *settings(*SERVER_SETTINGS, f"bus.runtime_dir={tmp / (name + '-rt')}",
                                                          *extra)], tmp / f"{name}.log", prefix)
    found = proc.wait_line(r"listening on tcp://[^:]+:(\d+)")
    return proc, int(found.group(1))


def run_remote(tmp: Path, port: int, *args: str, name: str = "laptop") -> Process:
    """`soulx-live run --remote 127.0.0.1:PORT ARGS...` (command-line arguments, not settings)."""
    return Process(["run", "--remote", f"127.0.0.1:{port}", *settings("metrics.enabled=false",
                    f"bus.runtime_dir={tmp / (name + '-rt')}"), *args], tmp / f"{name}.log")


def make_keys(tmp: Path) -> tuple[Path, Path, str, str]:
    """Server and laptop key folders through the real CLI, the laptop allowed; (server dir, laptop dir, server
    public key, laptop public key)."""
    server_dir, laptop_dir = tmp / "server-keys", tmp / "laptop-keys"
    made = cli("keys", "--server", "--set", f"remote.keys_dir={server_dir}")
    assert made.returncode == 0, made.stderr
    server_key = re.search(r"server public key: (\S{40})", made.stdout).group(1)  # type: ignore[union-attr]
    made = cli("keys", "--set", f"remote.keys_dir={laptop_dir}")
    assert made.returncode == 0, made.stderr
    laptop_key = re.search(r"client public key: (\S{40})", made.stdout).group(1)  # type: ignore[union-attr]
    allowed = cli("keys", f"--allow={laptop_key}", "--set", f"remote.keys_dir={server_dir}")
    assert allowed.returncode == 0, allowed.stderr
    return server_dir, laptop_dir, server_key, laptop_key


def secrets_in(folder: Path) -> list[str]:
    """The secret keys (Z85 text) of every key pair in ``folder``: they must never appear in a log."""
    out = []
    for path in folder.glob("*.key_secret"):
        found = re.search(r'secret-key = "(.{40})"', path.read_text())
        if found:
            out.append(found.group(1))
    return out


def write_wav(path: Path, pcm: np.ndarray, sample_rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def speech_after_silence(shared_data: Path, silence_s: float, speech_s: float) -> np.ndarray:
    from soulx_live.audio.file import decode_audio_file

    speech = decode_audio_file(shared_data / "speech_ditto.wav", 16000)[: int(speech_s * 16000)]
    return np.concatenate([np.zeros(int(silence_s * 16000), np.float32), speech.astype(np.float32)])


def read_mp4(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Every video frame (rgb24) and the mono audio (float32) of a recording, and its audio rate."""
    import av

    frames, audio, rate = [], [], 16000
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        for frame in container.decode(audio=0):
            data = frame.to_ndarray()
            audio.append(data.mean(axis=0) if data.ndim == 2 and data.shape[0] < data.shape[1] else data.reshape(-1))
    return np.stack(frames), np.concatenate(audio).astype(np.float32), rate


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def best_correlation(sent: np.ndarray, got: np.ndarray, rate: int) -> tuple[float, float]:
    """The normalised cross-correlation peak of ``sent`` inside ``got`` and its lag in seconds."""
    from scipy.signal import correlate

    a = (sent - sent.mean()) / (sent.std() + 1e-9)
    b = (got - got.mean()) / (got.std() + 1e-9)
    corr = correlate(b, a, mode="valid", method="fft") / len(a)
    k = int(np.argmax(corr))
    return float(corr[k]), k / rate


def still_face(side: int = SIDE) -> np.ndarray:
    """What the server's lite engine renders for silence (no blinks, no idle motion): one still frame."""
    from engine.interface import SessionRequest
    from engine.lite.engine import LiteConfig, LiteEngine

    engine = LiteEngine(LiteConfig(width=side, height=side, blinks=False, idle_motion=False))
    session = engine.start_session(SessionRequest(session_id="ref"))
    session.push_audio(np.zeros(engine.spec.samples_per_chunk, dtype=np.float32))
    return session.next_chunk().frames[0]


class FrameProbe:
    """A sink that keeps what reaches it: arrival time, frame indices, epoch, the first frame's pixels, the audio."""

    name = "probe"
    queue_chunks = 16

    def __init__(self) -> None:
        self.writes: list[tuple[float, int, int, int, np.ndarray, np.ndarray]] = []
        self.holds: list[str] = []

    def open(self, spec: object) -> None:
        pass

    def write(self, chunk: object) -> None:
        self.writes.append((time.monotonic(), chunk.first_frame, chunk.num_frames, chunk.epoch,  # type: ignore[attr-defined]
                            np.array(chunk.frames[-1]), np.array(chunk.audio)))  # type: ignore[attr-defined]

    def hold(self, reason: str) -> None:
        self.holds.append(reason)

    def close(self) -> None:
        pass


def laptop_config(tmp: Path, port: int, audio: Path, **remote: object) -> object:
    from soulx_live.config import SoulxConfig

    return SoulxConfig.model_validate({
        "remote": {"address": f"127.0.0.1:{port}", "link_timeout_s": 1.0, **remote},
        "audio": {"source": "file", "file": str(audio), "realtime": True},
        "bus": {"runtime_dir": str(tmp / "laptop-rt"), "hwm_chunks": 4},
        "supervisor": {"shutdown_grace_s": 4.0},
        "metrics": {"enabled": False},
    })


def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
