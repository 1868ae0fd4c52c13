"""Lite engine throughput on ONE CPU core: the built-in avatar speaking the built-in speech at 512x512.

Pins the process to one core (``os.sched_setaffinity``) and every thread pool to one thread (OpenMP,
BLAS, cv2, torch), then measures

* end to end: ``LiteSession.next_chunk`` (audio features, animation, rendering, frame allocation),
  reported as fps and ms/frame (chunk time / frames per chunk), p50 and p99 over chunks;
* the renderer alone: ``LiteRenderer.render`` per frame, p50 and p99.

Usage: ``python benchmarks/lite_fps.py [--frames 750] [--core N] [--avatar PHOTO]``; writes
``benchmarks/results/lite_fps.json``.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import wave  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host import cpu_model  # noqa: E402

from engine.interface import SessionRequest  # noqa: E402
from engine.lite import LiteConfig, LiteEngine  # noqa: E402
from engine.lite.animator import blink_amount, idle_pose  # noqa: E402
from engine.lite.audio_features import mouth_features_for_clip  # noqa: E402

SPEECH = ROOT / "soulx_live" / "assets" / "demo_speech.wav"
RESULT = ROOT / "benchmarks" / "results" / "lite_fps.json"


def _pin(core: int | None) -> int:
    cores = sorted(os.sched_getaffinity(0))
    chosen = cores[-1] if core is None else core
    os.sched_setaffinity(0, {chosen})
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    return chosen


def _load_speech() -> np.ndarray:
    with wave.open(str(SPEECH)) as w:
        if w.getframerate() != 16000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"{SPEECH} must be 16 kHz mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0


def _avatar(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    bgr = cv2.imread(path)
    if bgr is None:
        raise SystemExit(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _pct(ms: np.ndarray) -> dict[str, float]:
    return {"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3), "mean": round(float(ms.mean()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=750, help="frames to render (default 750 = 30 s)")
    ap.add_argument("--core", type=int, default=None, help="CPU core to pin to (default: the last allowed one)")
    ap.add_argument("--avatar", default=None, help="portrait photo instead of the built-in avatar")
    ap.add_argument("--out", default=str(RESULT))
    args = ap.parse_args()

    core = _pin(args.core)
    config = LiteConfig()
    speech = _load_speech()
    engine = LiteEngine(config)
    session = engine.start_session(SessionRequest(session_id="bench", avatar=_avatar(args.avatar)))
    spc = engine.spec.samples_per_chunk
    n_chunks = -(-args.frames // config.frames_per_chunk)
    reps = -(-(n_chunks + 2) * spc // speech.shape[0])
    session.push_audio(np.tile(speech, reps))
    session.next_chunk()  # warm-up: first-touch allocations, cascade-free path caches

    chunk_ms = np.empty(n_chunks)
    t_all = time.perf_counter()
    for i in range(n_chunks):
        t = time.perf_counter()
        session.next_chunk()
        chunk_ms[i] = (time.perf_counter() - t) * 1e3
    wall_s = time.perf_counter() - t_all
    frames = n_chunks * config.frames_per_chunk
    per_frame_e2e = chunk_ms / config.frames_per_chunk

    # The renderer alone, one call per frame, same features and animation as a session.
    opening, shape = mouth_features_for_clip(np.tile(speech, reps), config.features())
    renderer = session.renderer
    out = np.empty((config.height, config.width, 3), dtype=np.uint8)
    render_ms = np.empty(frames)
    for k in range(frames):
        pose, blink = idle_pose(k, config.fps, 0), blink_amount(k, config.fps, 0)
        t = time.perf_counter()
        renderer.render(float(opening[k]), float(shape[k]), blink, pose, out=out)
        render_ms[k] = (time.perf_counter() - t) * 1e3

    result = {
        "benchmark": "lite_fps",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "pinned_core": core,
        "threads": {"cv2": cv2.getNumThreads(), "omp": os.environ["OMP_NUM_THREADS"]},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__},
        "config": asdict(config),
        "avatar": args.avatar or "built-in",
        "audio": SPEECH.relative_to(ROOT).as_posix(),
        "frames": frames,
        "fps": round(frames / wall_s, 1),
        "ms_per_frame_end_to_end": _pct(per_frame_e2e),
        "ms_per_frame_render_only": _pct(render_ms),
        "realtime_factor_at_config_fps": round(frames / wall_s / config.fps, 2),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
