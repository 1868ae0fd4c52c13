"""Latency and fps of the OBS feed path, measured against a real headless OBS Studio (Xvfb).

Method (``../shared/research/integration.md`` §1, "barcode"): an :class:`~plugins.obs.sink.ObsSink`
is fed frames in real time (25 fps, 5-frame chunks, as the engine delivers them) whose top band
carries a 16-bit barcode of the frame number. A poller takes ``GetSourceScreenshot`` (JPG) of the
source as fast as it can, decodes the barcode and compares the return time with

* the time that frame was handed to ``ObsSink.write``, in two views that differ by the feed's pacing:
  the sink gets a whole 5-frame chunk at once and plays it at 25 fps, so the n-th frame of a chunk
  waits n x 40 ms (0-160 ms) for its tick before it is sent.

  - **first frame of each chunk** ("write -> screen, first frame of a chunk"): the latency the sink
    path adds to a chunk, i.e. when the chunk starts to show;
  - **every frame** ("write -> screen, every frame"): what a viewer waits for an average frame after
    its chunk reached the sink; about 80 ms (half the chunk's pacing) more than the first frame.

* the time the feed muxed it into the socket ("send -> screen", every frame: OBS's demux, decode,
  render tick; the part spent inside OBS).

Both include the screenshot itself (its call time is reported) and up to one OBS render tick, so
they overstate the real latency. "distinct fps" counts distinct frames the screenshots saw (bounded
by the screenshot rate). Timings on the shared 2-core box swing by about 2x.

Usage: ``python benchmarks/obs_latency.py [--seconds 10] [--size 512] [--runs 3]``; writes
``benchmarks/results/obs_latency.json``.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "plugins"))

from obs_harness import HeadlessObs, free_port

from engine.interface import ChunkSpec, FrameChunk
from plugins.obs.client import ObsConnection
from plugins.obs.sink import ObsSink
from soulx_live.config import ObsConfig

log = logging.getLogger("obs_latency")

BITS = 16
BAND = 32  # barcode band height in pixels


def body_value(index: int) -> int:
    return 50 + (index * 7) % 200


def draw_frame(index: int, size: int) -> np.ndarray:
    frame = np.full((size, size, 3), 90, np.uint8)
    frame[BAND:, :, 0] = body_value(index)  # changes below the band too; never black
    cell = size // BITS
    for bit in range(BITS):
        value = 255 if (index >> bit) & 1 else 0
        frame[:BAND, bit * cell:(bit + 1) * cell] = value
    return frame


def read_index(image: np.ndarray, size: int) -> int:
    cell = image.shape[1] // BITS
    row = image[BAND // 2, :, :].mean(axis=1)
    index = 0
    for bit in range(BITS):
        if row[bit * cell + cell // 2] > 128:
            index |= 1 << bit
    return index


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values) * 1000.0
    return {"median_ms": round(float(np.median(arr)), 1), "p10_ms": round(float(np.percentile(arr, 10)), 1),
            "p90_ms": round(float(np.percentile(arr, 90)), 1), "n": len(values)}


def measure(seconds: float, size: int) -> dict[str, object]:
    obs = HeadlessObs(Path(tempfile.mkdtemp(prefix="obs-bench-")))
    t_start = time.monotonic()
    obs.start()
    startup_s = time.monotonic() - t_start
    written: dict[int, float] = {}
    sent: dict[int, float] = {}
    try:
        ctl = ObsConnection("127.0.0.1", obs.port, obs.password, 5.0)
        ctl.call("SetVideoSettings", {"fpsNumerator": 25, "fpsDenominator": 1, "baseWidth": size, "baseHeight": size,
                                      "outputWidth": size, "outputHeight": size})
        spec = ChunkSpec(fps=Fraction(25), sample_rate=16000, frames_per_chunk=5, height=size, width=size)
        cfg = ObsConfig(enabled=True, port=obs.port, password=obs.password, feed_port=free_port())
        sink = ObsSink(cfg)
        t_open = time.monotonic()
        sink.open(spec)
        sink.feed.on_frame_sent = lambda n, rgb: sent.setdefault(read_index(rgb, size), time.monotonic())
        if not sink.wait_bound(15):
            raise RuntimeError(f"ObsSink did not bind: {sink.last_error}")
        bind_s = time.monotonic() - t_open
        stop = threading.Event()

        def feed() -> None:
            seq, t0 = 0, time.monotonic()
            while not stop.is_set():
                frames = np.stack([draw_frame(seq * 5 + i, size) for i in range(5)])
                now = time.monotonic()
                for i in range(5):
                    written[seq * 5 + i] = now
                sink.write(FrameChunk("bench", seq, seq * 5, frames, np.zeros(3200, np.float32), seq * 3200))
                seq += 1
                stop.wait(max(0.0, t0 + seq * 0.2 - time.monotonic()))

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        write_lat: list[float] = []
        chunk_lat: list[float] = []
        send_lat: list[float] = []
        shot_s: list[float] = []
        seen: set[int] = set()
        first_picture_s: float | None = None
        t_feed = time.monotonic()
        deadline = t_feed + seconds
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            reply = ctl.call("GetSourceScreenshot", {"sourceName": cfg.source_name, "imageFormat": "jpg",
                                                     "imageWidth": size, "imageHeight": size, "imageCompressionQuality": 90})
            t1 = time.monotonic()
            shot_s.append(t1 - t0)
            image = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["imageData"].split(",", 1)[1]))).convert("RGB"))
            index = read_index(image, size)
            if index not in written or abs(int(image[BAND + 8, 8, 0]) - body_value(index)) > 12:
                continue  # black before the first frame, or a misread barcode
            if first_picture_s is None:
                first_picture_s = t1 - t_feed
            if index in seen:
                continue
            seen.add(index)
            write_lat.append(t1 - written[index])
            if index % 5 == 0:
                chunk_lat.append(t1 - written[index])
            if index in sent:
                send_lat.append(t1 - sent[index])
        stop.set()
        feeder.join()
        elapsed = time.monotonic() - t_feed
        stats = sink.feed.stats
        result = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "obs": ctl.call("GetVersion").get("obsVersion"),
            "frame_size": [size, size], "fps_fed": 25, "seconds": round(elapsed, 1),
            "transport": "NUT rawvideo bgra + pcm_s16le over TCP 127.0.0.1 -> OBS ffmpeg_source",
            "obs_start_s": round(startup_s, 2),
            "sink_bind_s": round(bind_s, 3),
            "first_picture_after_first_write_s": round(first_picture_s, 3) if first_picture_s is not None else None,
            "write_to_screen_every_frame": percentiles(write_lat),
            "write_to_screen_first_frame_of_chunk": percentiles(chunk_lat),
            "send_to_screen_every_frame": percentiles(send_lat),
            "screenshot_call": percentiles(shot_s),
            "distinct_fps_seen": round(len(seen) / elapsed, 1),
            "screenshots_per_s": round(len(shot_s) / elapsed, 1),
            "feed_fps": round(stats.frames_sent / elapsed, 1),
            "feed_frames_repeated": stats.frames_repeated,
            "feed_frames_dropped": stats.frames_dropped,
            "feed_frames_trimmed": stats.frames_trimmed,
            "note": "latencies include the JPG screenshot call and up to one OBS render tick (40 ms); shared 2-core CPU box",
        }
        sink.close()
        ctl.close()
        return result
    finally:
        obs.close()


def _cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name:")),
                "unknown")


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3, help="separate OBS starts (OBS's own buffering differs per start)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "obs_latency.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load_before = os.getloadavg()
    runs = [measure(args.seconds, args.size) for _ in range(args.runs)]

    def med(key: str) -> float:
        return round(float(np.median([r[key]["median_ms"] for r in runs])), 1)  # type: ignore[index]

    result = {
        "benchmark": "obs_latency",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
        "load_avg_1_5_15_before": [round(x, 2) for x in load_before],
        "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        "config": {"seconds": args.seconds, "size": args.size, "runs": args.runs, "fps": 25, "frames_per_chunk": 5},
        "summary": {
            "runs": len(runs),
            # the two write -> screen views differ by the feed's pacing of a chunk's frames (0-160 ms)
            "write_to_screen_first_frame_of_chunk_median_ms": med("write_to_screen_first_frame_of_chunk"),
            "write_to_screen_every_frame_median_ms": med("write_to_screen_every_frame"),
            "send_to_screen_every_frame_median_ms": med("send_to_screen_every_frame"),
            "per_run_first_frame_of_chunk_ms": [r["write_to_screen_first_frame_of_chunk"]["median_ms"]  # type: ignore[index]
                                                for r in runs],
            "per_run_every_frame_ms": [r["write_to_screen_every_frame"]["median_ms"] for r in runs],  # type: ignore[index]
            "per_run_send_to_screen_ms": [r["send_to_screen_every_frame"]["median_ms"] for r in runs],  # type: ignore[index]
            "distinct_fps_seen": round(float(np.median([r["distinct_fps_seen"] for r in runs])), 1),
            "feed_fps": round(float(np.median([r["feed_fps"] for r in runs])), 1),
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = result["summary"]
    sys.stdout.write(
        f"OBS feed, {args.size}x{args.size} @ 25 fps, {len(runs)} runs (median of run medians):\n"
        f"  write -> screen, first frame of a chunk: {summary['write_to_screen_first_frame_of_chunk_median_ms']} ms\n"
        f"  write -> screen, every frame:            {summary['write_to_screen_every_frame_median_ms']} ms\n"
        f"  send -> screen (inside OBS), every frame: {summary['send_to_screen_every_frame_median_ms']} ms\n"
        f"  distinct fps seen: {summary['distinct_fps_seen']}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
