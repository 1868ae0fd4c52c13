"""Transparent avatar: speed, added latency, edge quality and flicker of the person matte (``engine.matting``).

Measures, at 512x512 on the CPU,

* the per-frame stage the diffusion engines use (model + temporal smoothing + guided filter): fps and ms/frame
  (p50, p99) with OpenCV on one thread (pinned to one core) and on every core; the model alone and the edge fit;
* added latency per chunk: a lite chunk (5 frames) and a FlashTalk chunk (28 frames) segmented before publishing,
  on one thread and with the frames spread over the cores (``AlphaSession(threads=...)``),
  and for the lite renderer the per-frame cost of moving the portrait's matte plus its one-time segmentation;
* edge quality: IoU of ``alpha >= 128`` against the hand-drawn masks in ``tests/data/alpha`` (portraits from
  ``../shared/data``; skipped without it), raw model and with the edge fit, and the lite engine's frame (the
  portrait fitted to the output, the mask moved with it) and 448x768 crops (FlashTalk's frame shape);
* edge colours: how far the soft edge band's colour is from the person's own before and after ``unmix_edges``
  (a synthetic picture whose true colours are known), and its time per frame;
* flicker: mean absolute alpha change (0-255) between consecutive frames of a still picture with fresh pixel noise
  each frame (sigma 3 and 6 grey levels, what a camera or a diffusion model adds), per-frame vs the smoothed stage.

Usage: ``python benchmarks/matte_bench.py [--frames 200] [--data ../shared/data]``; writes
``benchmarks/results/matte_bench.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "matting"))

from host import cpu_model  # noqa: E402
from matte_support import (  # noqa: E402
    PORTRAITS,
    flicker,
    iou,
    lite_reference,
    noisy_stills,
    reference,
    soft_disc,
)

from engine.interface import SessionRequest  # noqa: E402
from engine.lite import LiteConfig, LiteEngine  # noqa: E402
from engine.lite.default_avatar import draw_default_avatar  # noqa: E402
from engine.matting.model import find_model  # noqa: E402
from engine.matting.segmenter import PersonSegmenter, grey, to_alpha  # noqa: E402
from engine.matting.stage import AlphaSession  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "matte_bench.json"
SIDE = 512


class _Frames:
    """A stand-in session for the stage: the stage only calls the segmenter (no engine work is timed)."""

    session_id = "bench"


def _pct(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"mean": round(float(a.mean()), 3), "p50": round(float(np.percentile(a, 50)), 3),
            "p99": round(float(np.percentile(a, 99)), 3)}


def _stage(seg: PersonSegmenter, threads: int = 1) -> AlphaSession:
    return AlphaSession(_Frames(), lambda: seg, threads)  # type: ignore[arg-type]


def _speed(seg: PersonSegmenter, frames: np.ndarray, threads_available: int) -> dict[str, object]:
    stage = _stage(seg)
    stage.segment(frames[:3])  # warm-up
    per_frame, model_ms, fit_ms = [], [], []
    for f in frames:
        t0 = time.perf_counter()
        stage.segment(f[None])
        per_frame.append((time.perf_counter() - t0) * 1000)
    for f in frames[:50]:
        t0 = time.perf_counter()
        raw = seg.raw(f)
        t1 = time.perf_counter()
        seg.fit_edges(raw, grey(f))
        model_ms.append((t1 - t0) * 1000)
        fit_ms.append((time.perf_counter() - t1) * 1000)
    chunks = {}
    for threads in sorted({1, threads_available}):
        parallel = _stage(seg, threads)
        parallel.segment(frames[:4])  # warm-up: each thread loads its network
        for n in (5, 28):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                parallel.segment(frames[:n])
                times.append((time.perf_counter() - t0) * 1000)
            chunks[f"{n}_frames_{threads}_threads_ms"] = round(float(np.median(times)), 1)
        parallel.close()
    ms = _pct(per_frame)
    return {"fps": round(1000.0 / ms["mean"], 1), "ms_per_frame": ms, "model_only_ms": _pct(model_ms),
            "edge_fit_ms": _pct(fit_ms), "added_latency_per_chunk": chunks}


def _lite(frames: int) -> dict[str, object]:
    """The lite renderer's cost of alpha: the portrait segmented once, then per frame the matte moved by the head
    warp. Render calls with and without ``alpha_out`` alternate over the same poses (a shared CPU drifts)."""
    from engine.lite.animator import idle_pose

    engine = LiteEngine(LiteConfig(width=SIDE, height=SIDE))
    t0 = time.perf_counter()
    session = engine.start_session(SessionRequest("a", extra={"alpha": True}))
    once_ms = (time.perf_counter() - t0) * 1000
    renderer = session.renderer
    out, alpha = np.empty((SIDE, SIDE, 3), np.uint8), np.empty((SIDE, SIDE), np.uint8)
    with_ms, without_ms = [], []
    for k in range(frames):
        pose = idle_pose(k, 25.0, 0)
        for target, kw in ((without_ms, {}), (with_ms, {"alpha_out": alpha})):
            t0 = time.perf_counter()
            renderer.render(0.3, 0.0, 0.0, pose, out=out, **kw)
            target.append((time.perf_counter() - t0) * 1000)
    a, b = _pct(with_ms), _pct(without_ms)
    # flicker of a still head (no sway; speech still moves mouth and eyes): the one matte never changes
    still = LiteEngine(LiteConfig(width=SIDE, height=SIDE, idle_motion=False)).start_session(
        SessionRequest("still", extra={"alpha": True}))
    rng = np.random.default_rng(0)
    still.push_audio((0.3 * rng.standard_normal(640 * 50)).astype(np.float32))
    mattes = np.concatenate([still.next_chunk().alpha for _ in range(10)])  # type: ignore[misc]
    return {"portrait_matte_once_ms": round(once_ms, 1), "render_ms_with_alpha": a, "render_ms_without_alpha": b,
            "added_ms_per_frame_p50": round(a["p50"] - b["p50"], 3), "still_head_flicker": round(flicker(mattes), 4)}


def _flicker(seg: PersonSegmenter, image: np.ndarray, sigma: float, n: int = 30) -> dict[str, float]:
    stills = noisy_stills(image, n, sigma)
    per_frame = np.stack([to_alpha(seg.fit_edges(seg.raw(f), grey(f))) for f in stills])
    model_only = np.stack([to_alpha(seg.raw(f)) for f in stills])
    smoothed = _stage(seg).segment(stills)
    skip = 5  # the smoothed matte settles in its first frames
    return {"per_frame": round(flicker(per_frame[skip:]), 4), "model_only": round(flicker(model_only[skip:]), 4),
            "smoothed_stage": round(flicker(smoothed[skip:]), 4)}


def _unmix() -> dict[str, float]:
    """Edge colours: a known person colour mixed over a known background by a soft disc matte (12 px ramp) at 512;
    mean error of the edge band against the true person colour, as mixed and after ``unmix_edges``; its time."""
    from plugins.matte import unmix_edges

    frame, alpha, person = soft_disc(SIDE, 180, 12)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        out = unmix_edges(frame[None], alpha[None])[0]
        times.append((time.perf_counter() - t0) * 1000)
    band = (alpha > 10) & (alpha < 245)
    return {"edge_error_mixed": round(float(np.abs(frame[band].astype(np.float32) - person[band]).mean()), 2),
            "edge_error_unmixed": round(float(np.abs(out[band].astype(np.float32) - person[band]).mean()), 2),
            "ms_per_frame_p50": _pct(times)["p50"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    seg = PersonSegmenter()
    avatar = draw_default_avatar(SIDE)
    frames = noisy_stills(avatar, args.frames, 3.0)
    speed: dict[str, object] = {}
    cores = sorted(os.sched_getaffinity(0))
    cv2.setNumThreads(len(cores))
    speed[f"{len(cores)}_cores"] = _speed(seg, frames, len(cores))
    os.sched_setaffinity(0, {cores[-1]})
    cv2.setNumThreads(1)
    speed["1_core_pinned"] = _speed(seg, frames, 1)
    lite = _lite(min(args.frames, 250))
    os.sched_setaffinity(0, set(cores))
    cv2.setNumThreads(len(cores))
    quality: dict[str, object] = {}
    noisy: dict[str, object] = {"built_in_avatar": {f"sigma_{s:g}": _flicker(seg, avatar, s) for s in (3.0, 6.0)}}
    if args.data.is_dir():
        raw_seg = PersonSegmenter(refine=False)
        for name in PORTRAITS:
            image, truth = reference(name, args.data, SIDE)
            _, lite_alpha, lite_truth = lite_reference(name, args.data)
            # FlashTalk's frames are 448x768: the same model input squeezed from a tall frame (as MediaPipe does)
            tall_image, tall_truth = reference(name, args.data, 768)
            tall = [round(iou(seg.matte(np.ascontiguousarray(tall_image[:, x0:x0 + 448])), tall_truth[:, x0:x0 + 448]), 4)
                    for x0 in (60, 160, 300)]
            quality[name] = {"iou_refined": round(iou(seg.matte(image), truth), 4),
                             "iou_model_only": round(iou(raw_seg.matte(image), truth), 4),
                             "iou_lite_engine_frame": round(iou(lite_alpha, lite_truth), 4),
                             "iou_448x768_crops_at_x_60_160_300": tall}
            noisy[name] = {f"sigma_{s:g}": _flicker(seg, image, s) for s in (3.0, 6.0)}
    else:
        quality["skipped"] = f"no shared data at {args.data}"
    model = find_model()
    result = {
        "benchmark": "matte_bench",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cores": len(cores),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__},
        "model": {"file": model.name, "bytes": model.stat().st_size, "package": "mediapipe 0.10.21 (PyPI, Apache-2.0)"},
        "config": {"side": SIDE, "frames": args.frames, "rest_weight": 0.25, "motion_full_grey_levels": 12.0},
        "segmentation_stage": speed,
        "lite_renderer": lite,
        "iou_vs_hand_drawn": quality,
        "flicker_mean_abs_alpha_change": noisy,
        "edge_colours": _unmix(),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
