"""Studio benchmark: what the control page shows, measured in Debian's headless Chromium on this machine.

A real daemon (lite engine, built-in avatar, pushed audio) serves the page; Selenium logs in with the one-time
link. Measured per drawn frame: preview latency (the daemon's preview sink to the frame on screen, both on this
host's wall clock) and page A/V error (how far from its audio's time the frame was drawn). Then ``--rounds``
times: a sentence is spoken and interrupted 1.5 s in; measured is the click to the first drawn frame with the
mouth at rest (cavity-coloured pixels in the mouth box back at the idle level for 5 frames). Also the daemon's
cost: JPEG-encoding one chunk for the page. Run: ``python benchmarks/studio_bench.py [--size 512]``; prints a
table and writes ``benchmarks/results/studio_bench.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "studio"))

from test_studio_browser import OPENNESS_HOOK  # noqa: E402 - the same mouth measure as the browser test

from soulx_live.config import SoulxConfig  # noqa: E402
from soulx_live.daemon import Daemon  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "studio_bench.json"
DRAW_LOG = """
window.studio.frames = [];
const inner = window.studio.onDraw;
window.studio.onDraw = (canvas, frame) => {
  if (inner) inner(canvas, frame);
  const s = window.studio.stats;
  window.studio.frames.push([s.latencyMs, s.pageAvMs]);
};
"""


def _mouth_box(size: int) -> list[int]:
    from engine.lite.engine import LiteConfig, LiteEngine

    layout = LiteEngine(LiteConfig(width=size, height=size))._default_renderer().layout
    (mx, my), w = layout.mouth, layout.mouth_width
    return [int(mx - 0.8 * w), int(my - 0.5 * w), int(1.6 * w), int(1.3 * w)]


def _browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1360,1240",
                "--autoplay-policy=no-user-gesture-required", "--disable-gpu"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max())}


def _encode_ms(size: int) -> float:
    from engine.interface import FrameChunk
    from engine.lite.engine import LiteConfig, LiteEngine
    from soulx_live.studio.preview import encode_chunk

    engine = LiteEngine(LiteConfig(width=size, height=size))
    frame = np.asarray(engine._default_renderer().reference)
    chunk = FrameChunk("b", 0, 0, np.stack([frame] * 5), np.zeros(3200, np.float32), 0)
    start = time.perf_counter()
    for _ in range(20):
        encode_chunk(chunk, engine.spec, 80)
    return (time.perf_counter() - start) / 20 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sxsb-"))
    config = SoulxConfig.model_validate({
        "engine": {"kind": "lite", "lite": {"width": args.size, "height": args.size}},
        "audio": {"source": "push"}, "push": {"enabled": False}, "bus": {"runtime_dir": str(root / "rt")},
        "metrics": {"enabled": True, "port": 0}, "studio": {"enabled": True, "port": 0},
        "supervisor": {"isolation": "thread"}, "logging": {"level": "WARNING"}})
    said: list[str] = []
    daemon = Daemon(config, announce=said.append)
    import threading

    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    driver = None
    try:
        while daemon.push_handler is None or not said:
            time.sleep(0.05)
        driver = _browser()
        driver.get(said[0].split()[1])
        while not driver.execute_script("return window.studio.stats.framesDrawn > 20"):
            time.sleep(0.05)
        driver.execute_script(OPENNESS_HOOK, _mouth_box(args.size))
        driver.execute_script(DRAW_LOG)
        time.sleep(1.0)
        rest = max(d["open"] for d in driver.execute_script("return window.studio.draws.splice(0)"))
        bargein: list[float] = []
        for _ in range(args.rounds):
            driver.execute_script("document.getElementById('say-text').value = 'This is one sentence the studio "
                                  "benchmark speaks and then interrupts half way through.';"
                                  "document.getElementById('say-btn').click()")
            time.sleep(1.5)
            driver.execute_script("window.studio.draws.splice(0)")
            clicked = driver.execute_script("const t = performance.now();"
                                            "document.getElementById('interrupt-btn').click(); return t")
            time.sleep(1.0)
            after = [d for d in driver.execute_script("return window.studio.draws.splice(0)") if d["t"] >= clicked]
            at = next(d["t"] for i, d in enumerate(after) if all(e["open"] <= rest + 10 for e in after[i:i + 5]))
            bargein.append(at - clicked)
            time.sleep(0.5)
        frames = driver.execute_script("return window.studio.frames")
    finally:
        if driver is not None:
            driver.quit()
        daemon.request_stop("benchmark over")
        thread.join(20)
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": f"{platform.processor() or platform.machine()} ({platform.node()}), CPU only",
        "config": {"engine": "lite (built-in avatar)", "size": args.size, "fps": 25, "frames_per_chunk": 5,
                   "browser": "Debian chromium, headless, via Selenium", "jpeg_quality": 80, "rounds": args.rounds},
        "preview_latency_ms": _pct([f[0] for f in frames if f[0] is not None]),
        "page_av_error_ms": _pct([f[1] for f in frames if f[1] is not None]),
        "interrupt_to_idle_mouth_ms": _pct(bargein),
        "preview_encode_ms_per_chunk": _encode_ms(args.size),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'preview latency (sink -> screen)':38s} p50 {result['preview_latency_ms']['p50']:.0f} ms, "
          f"p95 {result['preview_latency_ms']['p95']:.0f} ms")
    print(f"{'page A/V error (frame vs its audio)':38s} p50 {result['page_av_error_ms']['p50']:.1f} ms")
    print(f"{'interrupt -> mouth at rest on the page':38s} p50 {result['interrupt_to_idle_mouth_ms']['p50']:.0f} ms, "
          f"max {result['interrupt_to_idle_mouth_ms']['max']:.0f} ms")
    print(f"{'preview JPEG encode per chunk':38s} {result['preview_encode_ms_per_chunk']:.1f} ms  -> {RESULTS}")


if __name__ == "__main__":
    main()
