"""Speech synthesis speed: real-time factor of each available TTS backend (espeak-ng always; Piper when a voice is
given with --piper-model). Prints the figures and writes JSON with device and date.

    python benchmarks/tts_bench.py [--piper-model VOICE.onnx] [--out benchmarks/results/tts_bench.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from soulx_live.config import TtsConfig
from soulx_live.tts import build_tts

SENTENCES = (
    "Welcome back to the show, it is great to have you here.",
    "Today we look at three stories from around the world.",
    "First, a quick word about the weather this weekend.",
    "Thanks for watching, and see you tomorrow.",
)


def measure(config: TtsConfig, repeats: int = 5) -> dict[str, float]:
    t0 = time.perf_counter()
    tts = build_tts(config)
    load_s = time.perf_counter() - t0
    rtfs, firsts = [], []
    for _ in range(repeats):
        for text in SENTENCES:
            t0 = time.perf_counter()
            utt = tts.synthesize(text)
            took = time.perf_counter() - t0
            rtfs.append(took / utt.duration_s)
            firsts.append(took)
    return {"load_s": load_s, "rtf_median": statistics.median(rtfs), "rtf_max": max(rtfs),
            "sentence_ms_median": 1000 * statistics.median(firsts), "phonemes": len(utt.phonemes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--piper-model", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/tts_bench.json")
    args = parser.parse_args()
    results = {"espeak": measure(TtsConfig())}
    if args.piper_model:
        results["piper"] = measure(TtsConfig(backend="piper", piper_model=args.piper_model), repeats=2)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": f"{platform.processor() or platform.machine()} ({platform.node()})", "results": results}
    for name, r in results.items():
        print(f"{name:7s} load {r['load_s'] * 1000:7.1f} ms  sentence {r['sentence_ms_median']:7.1f} ms  "
              f"RTF median {r['rtf_median']:.4f} (max {r['rtf_max']:.4f})  phoneme timings: {r['phonemes'] > 0}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
