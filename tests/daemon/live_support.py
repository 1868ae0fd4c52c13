"""Helpers for the live-daemon tests: a probing sink, a daemon running in a thread, fast configs."""
from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.interface import ChunkSpec, FrameChunk
from plugins.recorder import RecorderSink
from soulx_live.config import SoulxConfig
from soulx_live.daemon import Daemon

SR = 16000
FPS = 25
FPC = 5
FRAME_S = 1 / FPS
CHUNK_S = FPC / FPS


@dataclass(frozen=True)
class Write:
    """One chunk as it reached the probed sink."""

    mono: float  # time.monotonic() on arrival
    first_frame: int
    n: int
    rms: float  # of its audio
    epoch: int
    audio: np.ndarray


class ProbeSink:
    """Records every chunk that reaches it (arrival time, indices, audio) and passes it to ``inner``."""

    def __init__(self, inner: RecorderSink | None = None, name: str = "recorder") -> None:
        self.inner = inner
        self.name = name
        self.queue_chunks = 16
        self.writes: list[Write] = []
        self.holds: list[str] = []
        self.interrupts: list[int] = []
        self.closed = False
        self._lock = threading.Lock()

    def open(self, spec: ChunkSpec) -> None:
        if self.inner is not None:
            self.inner.open(spec)

    def write(self, chunk: FrameChunk) -> None:
        audio = np.array(chunk.audio, dtype=np.float32)
        rms = float(np.sqrt(np.mean(audio ** 2))) if audio.size else 0.0
        with self._lock:
            self.writes.append(Write(time.monotonic(), chunk.first_frame, chunk.num_frames, rms, chunk.epoch, audio))
        if self.inner is not None:
            self.inner.write(chunk)

    def hold(self, reason: str) -> None:
        self.holds.append(reason)
        if self.inner is not None:
            self.inner.hold(reason)

    def interrupt(self, epoch: int) -> None:
        self.interrupts.append(epoch)

    def av_offset_s(self) -> float | None:
        """The inner recorder's A/V offset (a probe only watches; it does not present anything itself)."""
        return self.inner.av_offset_s() if self.inner is not None else None

    def close(self) -> None:
        self.closed = True
        if self.inner is not None:
            self.inner.close()

    def snapshot(self) -> list[Write]:
        with self._lock:
            return list(self.writes)

    def speech_writes(self, threshold: float = 0.05) -> list[Write]:
        return [w for w in self.snapshot() if w.rms > threshold]


@contextmanager
def short_tmp() -> Iterator[Path]:
    """A short temporary folder (ipc socket paths are limited to 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="sxld-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def live_config(root: Path, **overrides: object) -> SoulxConfig:
    """Lite engine at 96x96, 5 frames per chunk, fast supervisor timeouts, bus in ``root``."""
    base: dict[str, object] = {
        "engine": {"kind": "lite", "lite": {"width": 96, "height": 96, "frames_per_chunk": FPC, "fps": FPS}},
        "bus": {"runtime_dir": str(root / "rt"), "hwm_chunks": 4},
        "supervisor": {"init_timeout_s": 10.0, "heartbeat_timeout_s": 1.0, "shutdown_grace_s": 4.0,
                       "max_restarts": 3, "restart_window_s": 60.0, "restart_backoff_s": [0.1]},
        "metrics": {"enabled": False},
        "logging": {"level": "INFO"},
    }
    for dotted, value in overrides.items():
        node = base
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[leaf] = value
    return SoulxConfig.model_validate(base)


def write_tone(path: Path, seconds: float, amp: float = 0.4, freq: float = 300.0) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from daemon_fakes import tone, write_audio

    return write_audio(path, tone(seconds, SR, freq, amp=amp), SR)


class DaemonThread:
    """``Daemon.run()`` in a thread; ``stop()`` asks it to drain and joins."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.result: list[int] = []
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="daemon-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.result.append(self.daemon.run())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error.append(exc)

    def start(self) -> DaemonThread:
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 15.0) -> int | None:
        self.daemon.request_stop("test over")
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the daemon did not stop"
        if self.error:
            raise self.error[0]
        return self.result[0] if self.result else None


class SchedulingDelay:
    """The longest a sleeping thread of this process woke up late while it ran (a context manager).

    Wall-clock bounds in the live tests (a hold frame one frame period after the content ran out) are
    the daemon's own; on a loaded 2-core CI runner the OS (and the GIL) can add tens of milliseconds
    to any thread's wake-up, the sink thread's included. Those bounds therefore get this measured
    delay on top, so a test fails for the daemon's lateness, not for the runner's.
    """

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.worst_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduling-delay", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            time.sleep(self.period_s)
            self.worst_s = max(self.worst_s, time.monotonic() - start - self.period_s)

    def __enter__(self) -> SchedulingDelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(1.0)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def max_gap(writes: list[Write]) -> tuple[float, int]:
    """The longest wall-clock gap between consecutive chunks reaching the sink, and where."""
    gaps = [(b.mono - a.mono, i) for i, (a, b) in enumerate(itertools.pairwise(writes))]
    return max(gaps) if gaps else (0.0, 0)


def max_starvation(writes: list[Write], frame_s: float = FRAME_S) -> float:
    """The longest time the sink was out of content: frames play back to back from their arrival
    (or from the end of the frames before them), and a chunk arriving after that end starved it."""
    covered: float | None = None
    worst = 0.0
    for w in writes:
        if covered is not None:
            worst = max(worst, w.mono - covered)
        covered = max(covered if covered is not None else w.mono, w.mono) + w.n * frame_s
    return worst


def content_lead(writes: list[Write], frame_s: float = FRAME_S) -> list[float]:
    """After each write: how far the sink's scheduled content reaches past that moment (its buffer)."""
    covered: float | None = None
    leads = []
    for w in writes:
        covered = max(covered if covered is not None else w.mono, w.mono) + w.n * frame_s
        leads.append(covered - w.mono)
    return leads


def assert_contiguous(writes: list[Write]) -> None:
    """One continuous output timeline: every frame index exactly once, in order."""
    expected = 0
    for w in writes:
        assert w.first_frame == expected, f"frame index jumped from {expected} to {w.first_frame}"
        expected += w.n


def scrape_metrics(port: int) -> dict[str, float]:
    """The daemon's /metrics over HTTP as ``name[sorted labels]`` -> value, as a Prometheus server reads it."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {s.name + str(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
