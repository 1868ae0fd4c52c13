"""Frame bus benchmark: throughput and added latency of FramePublisher -> FrameSubscriber over ipc://.

Publisher and subscriber run in separate processes (the subscriber is spawned). Three streams:

* ``768x448 @25, 5 frames/chunk``: lite-like chunking at the FlashTalk resolution (H=768, W=448);
* ``768x448 @25, 28 frames/chunk``: FlashTalk-like (28 new frames = 1.12 s per chunk);
* ``1920x1080 @30, 5 frames/chunk``: a 1080p stream (48 kHz audio: 16 kHz has no whole number of samples per frame at 30 fps).

Two measurements per stream:

* **throughput**: as fast as the bus delivers without drops. The subscriber acknowledges each chunk on
  a back channel and the publisher keeps at most ``hwm_chunks`` chunks outstanding (credit flow), so it
  neither busy-spins nor loses chunks. Frames/s and MB/s (pixels + audio) are counted at the subscriber.
* **added latency at the real frame rate**: chunks published on their real schedule; latency is
  ``time.monotonic_ns()`` after ``recv`` returned the chunk (numpy views ready) minus the header's
  ``sent_mono_ns`` (stamped inside ``publish``). Same host, so both ends read the same monotonic clock.
  The first ``WARMUP_CHUNKS`` are reported apart ("cold max"): the receiver's allocator maps fresh
  pages for the first big messages, which costs up to ~90 ms for a 29 MB chunk, then reuses them.

Every received chunk is checked against markers in its pixels and audio. Run:
``python benchmarks/bus_bench.py`` (about a minute); writes ``benchmarks/results/bus_bench.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import zmq

from engine.interface import ChunkSpec, FrameChunk
from soulx_live.bus import FramePublisher, FrameSubscriber

log = logging.getLogger("bus_bench")

HWM_CHUNKS = 2
POOL = 3  # distinct chunk buffers cycled by the publisher (never written after publishing)
WARMUP_CHUNKS = 4
RESULTS = Path(__file__).resolve().parent / "results" / "bus_bench.json"


@dataclass(frozen=True)
class Stream:
    name: str  # what the stream stands for
    spec: ChunkSpec
    paced_chunks: int  # measured chunks of the real-rate run (after WARMUP_CHUNKS)

    @property
    def chunk_mb(self) -> float:
        s = self.spec
        return (s.frames_per_chunk * s.height * s.width * 3 + s.samples_per_chunk * 4) / 1e6


STREAMS = [
    Stream("lite-like", ChunkSpec(Fraction(25), 16000, 5, 768, 448), paced_chunks=60),
    Stream("FlashTalk-like", ChunkSpec(Fraction(25), 16000, 28, 768, 448), paced_chunks=30),
    Stream("1080p", ChunkSpec(Fraction(30), 48000, 5, 1080, 1920), paced_chunks=60),
]


@dataclass
class SubResult:
    received: int = 0
    frames: int = 0
    bytes: int = 0
    corrupt: int = 0
    dropped_gaps: int = 0
    malformed: int = 0
    first_ns: int = 0
    last_ns: int = 0
    latencies_ms: list[tuple[int, float]] | None = None  # (seq, ms)


def subscriber_main(address: str, ack_address: str | None, results: mp.Queue) -> None:
    """Receive until EndOfStream (or 15 s of silence); acknowledge each chunk when ``ack_address``."""
    sub = FrameSubscriber(address, hwm_chunks=HWM_CHUNKS)
    ack = None
    if ack_address:
        ack = zmq.Context.instance().socket(zmq.PUSH)
        ack.setsockopt(zmq.LINGER, 0)
        ack.connect(ack_address)
    res, latencies = SubResult(), []
    while True:
        msg = sub.recv(15_000)
        if not isinstance(msg, FrameChunk):
            break
        now = time.monotonic_ns()
        latencies.append((msg.seq, (now - sub.last_header.sent_mono_ns) / 1e6))
        mark = msg.seq % POOL
        res.corrupt += int(msg.frames[0, 0, 0, 0] != mark or msg.frames[-1, -1, -1, -1] != mark or msg.audio[-1] != mark)
        res.first_ns = res.first_ns or now
        res.last_ns = now
        res.received += 1
        res.frames += msg.num_frames
        res.bytes += msg.frames.nbytes + msg.audio.nbytes
        if ack is not None:
            ack.send(b"", zmq.NOBLOCK)
    res.dropped_gaps, res.malformed, res.latencies_ms = sub.stats.dropped_gaps, sub.stats.malformed, latencies
    results.put(asdict(res))
    sub.close()
    if ack is not None:
        ack.close(linger=0)


def make_pool(spec: ChunkSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    pool = []
    for k in range(POOL):
        frames = rng.integers(0, 256, (spec.frames_per_chunk, spec.height, spec.width, 3), dtype=np.uint8)
        frames[0, 0, 0, 0] = frames[-1, -1, -1, -1] = k
        audio = rng.standard_normal(spec.samples_per_chunk).astype(np.float32)
        audio[-1] = k
        pool.append((frames, audio))
    return pool


def run(stream: Stream, folder: Path, throughput_s: float | None = None) -> dict:
    """One publisher run against a freshly spawned subscriber process.

    ``throughput_s`` set: credit flow for that long. None: ``WARMUP_CHUNKS + stream.paced_chunks`` chunks
    on the real schedule.
    """
    spec, pool = stream.spec, make_pool(stream.spec)
    mode = "paced" if throughput_s is None else "throughput"
    address, ack_address = f"ipc://{folder}/frames-{mode}.ipc", f"ipc://{folder}/ack-{mode}.ipc"
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    pub = FramePublisher(address, hwm_chunks=HWM_CHUNKS)
    acks = None
    if throughput_s is not None:
        acks = zmq.Context.instance().socket(zmq.PULL)
        acks.setsockopt(zmq.LINGER, 0)
        acks.bind(ack_address)
    proc = ctx.Process(target=subscriber_main, args=(address, ack_address if acks else None, results), daemon=True)
    proc.start()
    seq = 0
    try:
        if not pub.wait_for_subscribers(1, timeout_s=30):
            raise RuntimeError("the subscriber process did not connect within 30 s")
        start = time.monotonic()
        acked = 0
        while (time.monotonic() - start < throughput_s) if throughput_s is not None else seq < WARMUP_CHUNKS + stream.paced_chunks:
            if acks is not None:
                while seq - acked >= HWM_CHUNKS:  # credit flow: at most hwm chunks outstanding
                    if not acks.poll(10_000):
                        raise RuntimeError("no acknowledgement for 10 s")
                    acks.recv()
                    acked += 1
            else:
                time.sleep(max(0.0, start + seq * spec.chunk_duration_s - time.monotonic()))
            frames, audio = pool[seq % POOL]
            pub.publish(FrameChunk("bench", seq, seq * spec.frames_per_chunk, frames, audio, seq * spec.samples_per_chunk), spec)
            seq += 1
        res = _finish(pub, results, seq)
    finally:
        pub.close()
        if acks is not None:
            acks.close(linger=0)
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    res["published"] = seq
    return res


def _finish(pub: FramePublisher, results: mp.Queue, seq: int) -> dict:
    """End the stream; EndOfStream is advisory on the bus, so repeat it until the subscriber reports."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pub.publish_end("bench", seq - 1)
        try:
            return results.get(timeout=0.2)
        except Exception:  # queue.Empty
            continue
    raise RuntimeError("the subscriber did not report within 30 s")


def summarize(stream: Stream, thr: dict, paced: dict) -> dict:
    elapsed = max(1e-9, (thr["last_ns"] - thr["first_ns"]) / 1e9)
    fps = (thr["frames"] - stream.spec.frames_per_chunk) / elapsed  # frames after the first arrival
    steady = [ms for seq, ms in paced["latencies_ms"] if seq >= WARMUP_CHUNKS] or [float("nan")]
    cold = [ms for seq, ms in paced["latencies_ms"] if seq < WARMUP_CHUNKS] or [float("nan")]
    lat = np.asarray(steady)
    return {
        "stream": stream.name,
        "height": stream.spec.height,
        "width": stream.spec.width,
        "fps": float(stream.spec.fps),
        "frames_per_chunk": stream.spec.frames_per_chunk,
        "sample_rate": stream.spec.sample_rate,
        "chunk_mb": round(stream.chunk_mb, 2),
        "throughput_fps": round(fps, 1),
        "throughput_mb_s": round((thr["bytes"] - thr["bytes"] / max(1, thr["received"])) / elapsed / 1e6, 1),
        "x_realtime": round(fps / float(stream.spec.fps), 1),
        "throughput_chunks": thr["received"],
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 2),
        "latency_max_ms": round(float(lat.max()), 2),
        "latency_chunks": len(steady),
        "latency_cold_max_ms": round(max(cold), 2),
        "paced_published": paced["published"],
        "dropped": thr["dropped_gaps"] + paced["dropped_gaps"] + (paced["published"] - paced["received"] - paced["dropped_gaps"]),
        "corrupt": thr["corrupt"] + paced["corrupt"],
    }


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def table(rows: list[dict], info: dict, args: argparse.Namespace) -> str:
    head = (f"frame bus: ipc:// PUB/SUB, hwm_chunks={HWM_CHUNKS}, pyzmq {info['pyzmq']} / libzmq {info['libzmq']}\n"
            f"device: {info['cpu']}, {info['cores']} cores, load avg {info['loadavg_before'][0]:.2f} at start, "
            f"kernel {info['kernel']}; {info['date']}\n"
            f"throughput: {args.throughput_s:g} s credit-flow run (no drops); latency: n chunks at the real rate after "
            f"{WARMUP_CHUNKS} warm-up chunks (their worst is 'cold max')\n\n")
    cols = ("stream (WxH)", "MB/chunk", "frames/s", "MB/s", "x real", "p50 ms", "p99 ms", "max ms", "n", "cold max ms",
            "drops", "bad")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        name = f"{r['stream']}: {r['width']}x{r['height']} @{r['fps']:g}, {r['frames_per_chunk']} fr/chunk"
        vals = (name, r["chunk_mb"], r["throughput_fps"], r["throughput_mb_s"], r["x_realtime"], r["latency_p50_ms"],
                r["latency_p99_ms"], r["latency_max_ms"], r["latency_chunks"], r["latency_cold_max_ms"], r["dropped"],
                r["corrupt"])
        lines.append("| " + " | ".join(str(v) for v in vals) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--throughput-s", type=float, default=4.0, help="seconds of the credit-flow throughput run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    info = machine()
    folder = Path(tempfile.mkdtemp(prefix="sxbench-"))
    os.chmod(folder, 0o700)
    rows = []
    try:
        for stream in STREAMS:
            log.info("%s: throughput run (%g s)", stream.name, args.throughput_s)
            thr = run(stream, folder, throughput_s=args.throughput_s)
            log.info("%s: real-rate latency run (%d chunks)", stream.name, WARMUP_CHUNKS + stream.paced_chunks)
            paced = run(stream, folder)
            rows.append(summarize(stream, thr, paced))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    info["loadavg_after"] = os.getloadavg()
    text = table(rows, info, args)
    sys.stdout.write(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {"transport": "ipc", "pattern": "XPUB/SUB", "hwm_chunks": HWM_CHUNKS, "throughput_s": args.throughput_s,
              "warmup_chunks": WARMUP_CHUNKS, "throughput_method": "credit flow, hwm_chunks outstanding, no drops",
              "latency_definition": "monotonic ns after recv returned the chunk minus sent_mono_ns stamped in publish"}
    args.out.write_text(json.dumps({"device": info, "config": config, "results": rows, "table": text}, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
