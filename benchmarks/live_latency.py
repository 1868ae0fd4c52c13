"""Live latency benchmark: silence -> speech and barge-in, through the real engine worker process.

Pieces, as in the daemon: a :class:`~soulx_live.supervisor.Supervisor` runs ``python -m
soulx_live.worker`` (lite engine), the :class:`~soulx_live.engine_client.EngineClient` takes audio from a
"voice" thread that pushes ``PACKET_MS`` packets at real-time pace, and a sink thread subscribes to the
frame bus like the daemon's sink loop: ``recv`` with a one-frame timeout, barge-in check
(``client.epoch`` above the sink's -> ``HoldingSink.interrupt``), ``write`` (stale epochs dropped),
``tick``. Behind the HoldingSink a player model queues audio as a sink would and drops its queue on
``interrupt``.

Every trial: ``--silence-s`` of silence (the avatar idles), then noise "speech" until the barge-in
``--speech-s`` later, when the voice thread calls ``client.interrupt()`` and goes back to silence.

Figures (wall clock, one host, ``time.monotonic``):

* **speech latency**: first speech sample pushed -> arrival at the sink thread of the first chunk
  whose audio contains it. Part of it is the audio itself: the engine needs the rest of that chunk
  plus its look-ahead (lite: 60 ms) before it can render it (``audio wait``, computed per trial from
  where the speech starts in the chunk, in whole packets: a packet's samples all arrive when it is
  pushed, at the start of its 20 ms); the remainder is the pipeline's own ``overhead`` (queues,
  transport, render).
* **barge-in**: from ``interrupt()``: ``audio stop`` = the sink thread has applied the interrupt (its
  queued audio dropped; old-epoch chunks arriving later are dropped on arrival), ``last old chunk`` =
  the last old-epoch chunk to arrive (0 when none arrived after the call), ``idle back`` = the first
  new-epoch chunk arrives (the worker's idle chunk: silent audio, closed mouth).
* **compute**: the lite engine's time per chunk at this size, measured in process for reference.

Run: ``OMP_NUM_THREADS=1 python benchmarks/live_latency.py`` (about half a minute); writes
``benchmarks/results/live_latency.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from host import machine

from engine.interface import ChunkSpec, FrameChunk, SessionRequest
from plugins.hold import HoldingSink
from soulx_live.bus import FrameSubscriber
from soulx_live.config import SoulxConfig, SupervisorConfig
from soulx_live.engine_client import EngineClient
from soulx_live.supervisor import Supervisor
from soulx_live.worker_launch import WorkerLaunch

log = logging.getLogger("live_latency")

RESULTS = Path(__file__).resolve().parent / "results" / "live_latency.json"
PACKET_MS = 20
SPEECH_LEVEL = 0.3
SPEECH_DETECT = 1e-3  # |sample| above this is speech (silence is exact zeros)
LOOKAHEAD_SAMPLES = 960  # lite engine: 1.5 frames at 16 kHz / 25 fps


# --- the sink side --------------------------------------------------------------------------------


class PlayerModel:
    """What a real-time sink does with audio: queue it, play it in order, drop the queue on interrupt."""

    name = "player"

    def __init__(self) -> None:
        self.spec: ChunkSpec | None = None
        self.interrupt_at: list[tuple[int, float]] = []  # (epoch, time the queue was dropped)

    def open(self, spec: ChunkSpec) -> None:
        self.spec = spec

    def write(self, chunk: FrameChunk) -> None:
        pass  # arrival times are taken by the sink thread

    def hold(self, reason: str) -> None:
        pass

    def interrupt(self, epoch: int) -> None:
        self.interrupt_at.append((epoch, time.monotonic()))

    def close(self) -> None:
        pass


@dataclass
class Arrival:
    t: float
    epoch: int
    first_frame: int
    audio_t0: int
    speech_offset: int | None  # index of the first speech sample in the chunk's audio
    silent_idle: bool


class SinkThread(threading.Thread):
    """The daemon's sink loop in small (see the module docstring)."""

    def __init__(self, address: str, client: EngineClient) -> None:
        super().__init__(name="bench-sink", daemon=True)
        self.address, self.client = address, client
        self.player = PlayerModel()
        self.sink = HoldingSink(self.player)
        self.arrivals: list[Arrival] = []
        self.stale_on_arrival = 0
        self.stop = threading.Event()
        self.connected = threading.Event()

    def run(self) -> None:
        with FrameSubscriber(self.address, hwm_chunks=16) as sub:
            self.connected.set()
            while not self.stop.is_set():
                item = sub.recv(timeout_ms=40)
                now = time.monotonic()
                if self.sink.filler is None and isinstance(item, FrameChunk):
                    self.sink.open(sub.spec)  # type: ignore[arg-type]
                if self.sink.filler is not None and self.client.epoch > self.sink.epoch:
                    self.sink.interrupt(self.client.epoch)
                if isinstance(item, FrameChunk):
                    loud = np.flatnonzero(np.abs(item.audio) > SPEECH_DETECT)
                    self.arrivals.append(Arrival(now, item.epoch, item.first_frame, item.audio_t0,
                                                 int(loud[0]) if loud.size else None, not loud.size))
                    if item.epoch < self.client.epoch:
                        self.stale_on_arrival += 1
                    self.sink.write(item)
                if self.sink.filler is not None:
                    self.sink.tick()


# --- the voice ------------------------------------------------------------------------------------


@dataclass
class Trial:
    speech_pushed: float = 0.0  # when the first speech packet was pushed
    interrupted: float = 0.0  # when interrupt() was called
    epoch: int = 0  # the epoch the interrupt started


@dataclass(eq=False)  # a Thread must stay hashable
class Voice(threading.Thread):
    client: EngineClient
    sample_rate: int
    silence_s: float
    speech_s: float
    trials: int
    done: threading.Event = field(default_factory=threading.Event)
    records: list[Trial] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(name="bench-voice", daemon=True)

    def run(self) -> None:
        rng = np.random.default_rng(0)
        n = self.sample_rate * PACKET_MS // 1000
        silence = np.zeros(n, np.float32)
        next_t = time.monotonic()
        for _ in range(self.trials):
            trial = Trial()
            for k in range(round(self.silence_s * 1000 / PACKET_MS)):
                next_t = self._push(silence, next_t)
            trial.speech_pushed = time.monotonic()
            for k in range(round(self.speech_s * 1000 / PACKET_MS)):
                next_t = self._push((SPEECH_LEVEL * rng.standard_normal(n)).astype(np.float32), next_t)
            trial.interrupted = time.monotonic()
            trial.epoch = self.client.interrupt()
            self.records.append(trial)
        for _ in range(round(self.silence_s * 1000 / PACKET_MS)):
            next_t = self._push(silence, next_t)
        self.done.set()

    def _push(self, pcm: np.ndarray, next_t: float) -> float:
        self.client.push_audio(pcm)
        next_t += PACKET_MS / 1000
        time.sleep(max(0.0, next_t - time.monotonic()))
        return next_t


# --- measurement ----------------------------------------------------------------------------------


def analyse(trials: list[Trial], arrivals: list[Arrival], player: PlayerModel, spec: ChunkSpec) -> dict:
    rows = []
    stops = dict(player.interrupt_at)
    for i, trial in enumerate(trials):
        old_epoch = trial.epoch - 1
        first_speech = next(a for a in arrivals if a.epoch == old_epoch and a.t >= trial.speech_pushed
                            and a.speech_offset is not None)
        # the engine needs the rest of the chunk plus its look-ahead; that audio arrives with the packet
        # holding its last sample (packets are pushed whole at the start of their 20 ms)
        need = spec.samples_per_chunk - first_speech.speech_offset + LOOKAHEAD_SAMPLES
        packet = spec.sample_rate * PACKET_MS // 1000
        audio_wait = (need - 1) // packet * packet / spec.sample_rate
        latency = first_speech.t - trial.speech_pushed
        old_after = [a.t for a in arrivals if a.epoch == old_epoch and a.t >= trial.interrupted]
        first_new = next(a for a in arrivals if a.epoch == trial.epoch)
        rows.append({
            "trial": i,
            "speech_latency_s": latency,
            "speech_audio_wait_s": audio_wait,
            "speech_overhead_s": latency - audio_wait,
            "audio_stop_s": stops[trial.epoch] - trial.interrupted,
            "last_old_chunk_s": max(old_after) - trial.interrupted if old_after else 0.0,
            "old_chunks_after_interrupt": len(old_after),
            "idle_back_s": first_new.t - trial.interrupted,
            "idle_chunk_silent": first_new.silent_idle,
        })
    return {"trials": rows, "summary": {key: stats([r[key] for r in rows]) for key in (
        "speech_latency_s", "speech_audio_wait_s", "speech_overhead_s", "audio_stop_s", "last_old_chunk_s",
        "idle_back_s")}}


def stats(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64) * 1000
    return {"p50_ms": round(float(np.median(arr)), 1), "max_ms": round(float(arr.max()), 1),
            "min_ms": round(float(arr.min()), 1), "n": int(arr.size)}


def compute_ms(config: SoulxConfig, chunks: int = 30) -> dict:
    """The engine's own time per chunk (in process, same configuration)."""
    from soulx_live.factory.engine import build_engine

    engine = build_engine(config)
    session = engine.start_session(SessionRequest(session_id="bench"))
    rng = np.random.default_rng(1)
    times = []
    for _ in range(chunks):
        session.push_audio((SPEECH_LEVEL * rng.standard_normal(engine.spec.samples_per_chunk)).astype(np.float32))
        start = time.perf_counter()
        session.next_chunk()
        times.append(time.perf_counter() - start)
    return stats(times[3:])


def run(args: argparse.Namespace, folder: Path) -> tuple[dict, SoulxConfig]:
    config = SoulxConfig.model_validate({
        "engine": {"kind": "lite", "lite": {"width": args.size, "height": args.size, "frames_per_chunk": args.chunk}},
        "bus": {"runtime_dir": str(folder / "rt"), "hwm_chunks": 4},
        "logging": {"level": "WARNING"},
    })
    launch = WorkerLaunch.from_config(config, subscribers=1)
    sup_cfg = SupervisorConfig(init_timeout_s=60.0, heartbeat_timeout_s=10.0, shutdown_grace_s=3.0)
    sup = Supervisor(sup_cfg, launch, sample_rate=config.audio.sample_rate)
    sink = SinkThread(launch.frames, sup.client)
    sink.start()
    sink.connected.wait(5)
    sup.start()
    try:
        spec = sup.wait_ready(60)
        sup.client.start_session("bench")
        voice = Voice(sup.client, spec.sample_rate, args.silence_s, args.speech_s, args.trials)
        voice.start()
        if not voice.done.wait(args.trials * (args.silence_s + args.speech_s) + 30):
            raise RuntimeError("the voice thread did not finish")
        time.sleep(0.5)
    finally:
        sup.close()
        sink.stop.set()
        sink.join(5)
    result = analyse(voice.records, sink.arrivals, sink.player, spec)
    result["stale_on_arrival"] = sink.stale_on_arrival
    result["stale_dropped_by_sink"] = sink.sink.stale_dropped
    result["hold_frames"] = sink.sink.filler.filled_frames if sink.sink.filler else 0
    return result, config


def table(result: dict, info: dict, cfg: dict) -> str:
    head = (f"live latency: lite {cfg['size']}x{cfg['size']}, {cfg['frames_per_chunk']} frames/chunk @25 fps, "
            f"{PACKET_MS} ms packets at real-time pace, {cfg['trials']} trials\n"
            f"device: {info['cpu']}, {info['cores']} cores, load avg {info['loadavg_before'][0]:.2f} at start; "
            f"{info['date']}\n"
            f"engine compute per chunk: p50 {result['compute']['p50_ms']} ms, max {result['compute']['max_ms']} ms\n\n")
    names = {"speech_latency_s": "silence->speech: first speech sample pushed -> its chunk at the sink",
             "speech_audio_wait_s": "  of which waiting for the audio itself (rest of chunk + 60 ms look-ahead, whole packets)",
             "speech_overhead_s": "  of which pipeline overhead (queues, transport, render)",
             "audio_stop_s": "barge-in: interrupt() -> sink drops its queued audio",
             "last_old_chunk_s": "barge-in: interrupt() -> last old-epoch chunk arrives (dropped)",
             "idle_back_s": "barge-in: interrupt() -> first new-epoch (idle) chunk arrives"}
    lines = ["| measure | p50 ms | max ms | min ms | n |", "|---|---|---|---|---|"]
    for key, label in names.items():
        s = result["summary"][key]
        lines.append(f"| {label} | {s['p50_ms']} | {s['max_ms']} | {s['min_ms']} | {s['n']} |")
    tail = (f"\nold-epoch chunks arriving after interrupt(): {sum(r['old_chunks_after_interrupt'] for r in result['trials'])} "
            f"(all dropped: {result['stale_dropped_by_sink']}); idle chunk silent in every trial: "
            f"{all(r['idle_chunk_silent'] for r in result['trials'])}\n")
    return head + "\n".join(lines) + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--size", type=int, default=128, help="lite output width and height")
    parser.add_argument("--chunk", type=int, default=5, help="frames per chunk")
    parser.add_argument("--silence-s", type=float, default=1.2, help="silence before the speech of each trial")
    parser.add_argument("--speech-s", type=float, default=0.6, help="speech before the barge-in of each trial")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    info = {**machine(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "")}
    folder = Path(tempfile.mkdtemp(prefix="sxlat-"))
    os.chmod(folder, 0o700)
    try:
        result, config = run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["compute"] = compute_ms(config)
    info["loadavg_after"] = os.getloadavg()
    cfg = {"engine": "lite", "size": args.size, "frames_per_chunk": args.chunk, "fps": 25, "sample_rate": 16000,
           "packet_ms": PACKET_MS, "trials": args.trials, "silence_s": args.silence_s, "speech_s": args.speech_s,
           "sink_recv_timeout_ms": 40, "transport": "ipc", "worker": "python -m soulx_live.worker (Supervisor)"}
    text = table(result, info, cfg)
    sys.stdout.write(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": info, "config": cfg, "results": result, "table": text}, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
