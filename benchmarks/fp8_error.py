"""FP8 (e4m3) DiT path: its error against bf16 and the float32 reference on the golden bundle. Prints the figures
and writes JSON with device and date.

    python benchmarks/fp8_error.py [--golden ../shared/golden] [--device cuda] [--out benchmarks/results/fp8_error.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.bench.fp8_error import measure_fp8_error

log = logging.getLogger("fp8_error")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--golden", type=Path, default=ROOT.parent / "shared" / "golden")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    report = measure_fp8_error(args.golden, args.device)
    log.info("fp8 error on the golden DiT cases -- %s, %s, %s", report["device"], report["date"], report["gemm"])
    for case, row in report["cases"].items():
        log.info("  %-28s bf16 vs ref max %.2e mean %.2e | fp8 vs ref max %.2e mean %.2e | fp8 vs bf16 max %.2e "
                 "mean %.2e (%d layers)", case, row["bf16_vs_ref"]["max_rel"], row["bf16_vs_ref"]["mean_rel"],
                 row["fp8_vs_ref"]["max_rel"], row["fp8_vs_ref"]["mean_rel"], row["fp8_vs_bf16"]["max_rel"],
                 row["fp8_vs_bf16"]["mean_rel"], row["fp8_layers"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
