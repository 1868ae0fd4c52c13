"""One-command GPU benchmark of the full FlashTalk configuration with random weights.

A thin wrapper over :mod:`engine.bench` (the same code ``soulx-live bench`` runs): builds the 14B audio DiT
(~18.9 B parameters, bf16), the released-width Wan VAE and a wav2vec2-base directly on the device with random
weights, streams ``--chunks`` chunks in the release's per-chunk order (SPEC §6.3) and reports per-stage timings
(``engine.profiling.StageTimer``), chunk time, fps, time to first frame, peak memory and DiT FLOP utilisation.

Usage::

    python benchmarks/engine_14b.py [--frames 33 --height 768 --width 448 --steps 4 --dtype bf16
                                     --chunks 3 --world-size 1 --out benchmarks/results/engine_14b.json]
    python benchmarks/engine_14b.py --tiny --chunks 2     # CPU, tiny widths: checks the script itself

Prints the JSON report on stdout (the table on stderr) and writes it to ``--out``.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.bench.cli import add_arguments, config_from_args, execute
from engine.bench.config import BenchConfig, BenchConfigError
from engine.bench.report import format_table, write_json

log = logging.getLogger("benchmarks.engine_14b")

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "engine_14b.json"


def parse_args(argv: list[str] | None) -> tuple[BenchConfig, Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--out", type=Path, default=None, help=f"JSON report path (default {DEFAULT_OUT})")
    a = p.parse_args(argv)
    try:
        cfg = config_from_args(a)
    except BenchConfigError as exc:
        p.error(str(exc))
    out = a.out or (DEFAULT_OUT.with_name("engine_14b_tiny.json") if a.tiny else DEFAULT_OUT)
    return cfg, out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    cfg, out = parse_args(argv)
    report = execute(cfg)
    text = write_json(report, out)
    sys.stderr.write(format_table(report) + "\n")
    print(text)
    if not all(math.isfinite(v) for v in report["stages_ms"].values()):
        log.error("non-finite stage timings")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
