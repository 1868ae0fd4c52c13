"""The avatar's voice as a microphone meeting apps can pick, on the camera's clock.

Linux: the sink creates a PulseAudio/PipeWire (pipewire-pulse) **null sink** (``sinks.virtualmic.sink_name``) and a
**virtual source** remapped from its monitor (``source_name``, shown as ``description``) with ``pactl``, plays each
chunk's audio into the null sink through PortAudio (ALSA's pulse device), and removes both on close (leftovers of a crashed run are removed
at open). Windows/macOS: install a virtual cable (VB-Cable; BlackHole) and set ``sinks.virtualmic.device`` to its
playback device; the sink plays into it through PortAudio and the meeting app picks the cable's input.

Timing: PortAudio's callback says when its buffer will reach the DAC; the sink fills it with the samples the
shared :class:`~plugins.av_clock.AvClock` says are due then (the camera asks the same clock which frame is due),
so the voice and the lips leave together whatever the device latency; consecutive buffers stay contiguous unless
the clock moved by more than 10 ms (then the sink follows it); silence when starved; a barge-in (``interrupt``)
drops queued audio at once.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping

import numpy as np

from engine.extras import require
from engine.interface import ChunkSpec, FrameChunk
from plugins.av_clock import AvClock
from plugins.base import SinkError
from plugins.portaudio import rescan_portaudio
from plugins.settings import VirtualMicConfig

__all__ = ["PulseVirtualMic", "VirtualMicSink"]

log = logging.getLogger(__name__)

JUMP_S = 0.2  # the clock moved further than this from what was written: follow it instead of catching up


class PulseVirtualMic:
    """The null sink + remapped source pair on a PulseAudio (or pipewire-pulse) server, via ``pactl``."""

    def __init__(self, cfg: VirtualMicConfig, env: Mapping[str, str] | None = None) -> None:
        self.cfg = cfg
        self.env = dict(env) if env is not None else None
        self.modules: list[int] = []

    def create(self) -> None:
        if shutil.which("pactl") is None or shutil.which("pacat") is None:
            raise SinkError("virtualmic: pactl/pacat not found; install them (`sudo apt install pulseaudio-utils`) "
                            "with a running PulseAudio or PipeWire (pipewire-pulse)")
        self.remove_leftovers()
        desc = self.cfg.description.replace("'", "").replace('"', "")
        self.modules.append(self._load("module-null-sink", f"sink_name={self.cfg.sink_name}",
                                       f"sink_properties=\"device.description='{desc} (output)'\"", "rate=48000"))
        self.modules.append(self._load("module-remap-source", f"master={self.cfg.sink_name}.monitor",
                                       f"source_name={self.cfg.source_name}",
                                       f"source_properties=\"device.description='{desc}'\""))
        log.info("virtualmic: created microphone %r (%s)", self.cfg.source_name, self.cfg.description)

    def remove(self) -> None:
        for index in reversed(self.modules):
            self._pactl("unload-module", str(index))
        self.modules.clear()

    def remove_leftovers(self) -> None:
        """Unload modules of ours left by a crashed run (same sink/source names)."""
        listing = self._pactl("list", "short", "modules").stdout
        for line in listing.splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and (f"sink_name={self.cfg.sink_name}" in parts[2]
                                    or f"source_name={self.cfg.source_name}" in parts[2]):
                log.info("virtualmic: removing a leftover module %s (%s)", parts[0], parts[1])
                self._pactl("unload-module", parts[0])

    def exists(self) -> tuple[bool, bool]:
        sinks = self._pactl("list", "short", "sinks").stdout
        sources = self._pactl("list", "short", "sources").stdout
        has = lambda text, name: any(line.split("\t")[1:2] == [name] for line in text.splitlines())
        return has(sinks, self.cfg.sink_name), has(sources, self.cfg.source_name)

    def _load(self, module: str, *args: str) -> int:
        out = self._pactl("load-module", module, *args)
        if out.returncode != 0 or not out.stdout.strip().isdigit():
            raise SinkError(f"virtualmic: cannot create {module} ({out.stderr.strip() or out.stdout.strip()}); is a "
                            "PulseAudio/PipeWire server running for this user? (`pactl info`)")
        return int(out.stdout.strip())

    def _pactl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=5, env=self.env, check=False)


class _AudioQueue:
    """Chunk audio by timeline position; ``take(a, b)`` returns samples [a, b) with silence where none arrived."""

    def __init__(self) -> None:
        self._parts: deque[tuple[int, np.ndarray]] = deque()

    def put(self, t0: int, audio: np.ndarray) -> None:
        self._parts.append((t0, audio))

    def clear(self) -> None:
        self._parts.clear()

    def take(self, a: int, b: int) -> np.ndarray:
        out = np.zeros(max(0, b - a), np.float32)
        while self._parts and self._parts[0][0] + self._parts[0][1].shape[0] <= a:
            self._parts.popleft()  # fully played
        for t0, audio in self._parts:
            if t0 >= b:
                break
            lo, hi = max(a, t0), min(b, t0 + audio.shape[0])
            if hi > lo:
                out[lo - a:hi - a] = audio[lo - t0:hi - t0]
        return out


class VirtualMicSink:
    """``FrameSink`` playing the chunks' audio into a virtual microphone on ``av_clock`` (its own when None)."""

    queue_chunks = 2

    def __init__(self, cfg: VirtualMicConfig, *, av_clock: AvClock | None = None, name: str = "virtualmic",
                 env: Mapping[str, str] | None = None, block_s: float = 0.01) -> None:
        self.name = name
        self.cfg = cfg
        self.av_clock = av_clock
        self.env = env
        self.block_s = block_s
        self.devices: PulseVirtualMic | None = None
        self._stream: object | None = None
        self._queue = _AudioQueue()
        self._lock = threading.Lock()
        self._next: int | None = None  # timeline sample the next callback continues from
        self._epoch = 0
        self._clock_offset: float | None = None  # wall clock minus PortAudio stream time
        self.samples_written = 0
        self._av_offset_s: float | None = None
        self.jumps = 0
        self.sample_rate = 16000

    # -- FrameSink -------------------------------------------------------------------------------

    def open(self, spec: ChunkSpec) -> None:
        self.sample_rate = spec.sample_rate
        if self.av_clock is None:
            self.av_clock = AvClock(spec.sample_rate)
        if self.cfg.device is None and sys.platform.startswith("linux"):
            self.devices = PulseVirtualMic(self.cfg, self.env)
            self.devices.create()
            os.environ["PULSE_SINK"] = self.cfg.sink_name  # read by ALSA's pulse plugin when the stream opens
            device: str | int | None = "pulse"
        elif self.cfg.device is None:
            raise SinkError("virtualmic: on Windows/macOS set sinks.virtualmic.device to a virtual cable's playback "
                            "device (VB-Cable: 'CABLE Input'; macOS: 'BlackHole 2ch'); `soulx-live devices` lists them")
        else:
            device = self.cfg.device
        try:
            self._stream = self._open_stream(device, spec.sample_rate)
        except BaseException:
            if self.devices is not None:
                self.devices.remove()
            raise

    def write(self, chunk: FrameChunk) -> None:
        with self._lock:
            if chunk.epoch < self._epoch:
                return  # from before a barge-in
            assert self.av_clock is not None
            self.av_clock.observe(chunk.audio_t0, n_samples=int(chunk.audio.shape[0]), epoch=chunk.epoch,
                                  session=chunk.session_id)
            self._queue.put(chunk.audio_t0, np.asarray(chunk.audio, np.float32))

    def interrupt(self, epoch: int) -> None:
        """Barge-in: queued speech is dropped now (only what the device already holds still plays)."""
        with self._lock:
            self._epoch = max(self._epoch, epoch)
            self._queue.clear()

    def av_offset_s(self) -> float | None:
        """Video minus audio: how far the played sound trails (negative) or leads the clock the camera follows,
        at the latest device buffer; None before the first one."""
        return self._av_offset_s

    def hold(self, reason: str) -> None:
        log.info("%s: engine away (%s); the microphone plays silence", self.name, reason)

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()  # type: ignore[attr-defined]
            stream.close()  # type: ignore[attr-defined]
        if self.devices is not None:
            self.devices.remove()
        log.info("%s: closed after %.1f s of audio", self.name, self.samples_written / self.sample_rate)

    # -- playout (PortAudio's callback thread) ---------------------------------------------------

    def _open_stream(self, device: str | int | None, sample_rate: int) -> object:
        sd = require("sounddevice", "audio", "the virtual microphone")
        try:
            sd.query_devices(device, "output")
        except ValueError:  # PortAudio lists devices only at start-up: the server may have come later
            rescan_portaudio(sd)
        try:
            stream = sd.OutputStream(device=device, samplerate=sample_rate, channels=1, dtype="float32",
                                     blocksize=int(self.block_s * sample_rate), latency="low", callback=self._fill)
            stream.start()
        except Exception as exc:
            raise SinkError(f"virtualmic: cannot open the playback device {device!r}: {exc}") from exc
        log.info("%s: playing into %s (output latency %.0f ms)", self.name,
                 self.cfg.source_name if self.devices is not None else device, 1000 * float(stream.latency))
        return stream

    def _fill(self, out: np.ndarray, frames: int, time_info: object, status: object) -> None:
        """Fill ``out`` with the samples that are due when it reaches the DAC, by the shared clock."""
        clock = self.av_clock
        assert clock is not None
        now_stream = float(time_info.currentTime)  # type: ignore[attr-defined]
        dac = float(time_info.outputBufferDacTime) or now_stream + float(self._stream.latency if self._stream else 0)  # type: ignore[attr-defined]
        wall = clock.now() - now_stream + dac if now_stream else clock.now()
        due = clock.sample_at(wall)
        with self._lock:
            if due is None:
                out.fill(0.0)
                return
            start = self._next
            if start is None or abs(due - start) > JUMP_S * self.sample_rate or abs(due - start) > frames // 2 + int(0.01 * self.sample_rate):
                if start is not None:
                    self.jumps += 1
                start = due
            out[:, 0] = self._queue.take(start, start + frames)
            self._next = start + frames
            # the clock (which the camera follows) wants `due` at the DAC; `start` plays: the picture's lead
            self._av_offset_s = (start - due) / self.sample_rate
        self.samples_written += frames
