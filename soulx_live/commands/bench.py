"""``soulx-live bench``: how fast the engine streams at a chosen configuration, on this GPU, with random weights.

Prints a table (per-stage timings, chunk time, fps, time to first frame, peak GPU memory, DiT FLOP utilisation)
and writes the JSON report (device, date, git commit, configuration, every figure) to ``--out``.
``--compare-reference PATH`` also runs the released inference code path from a local checkout of the official
SoulX-FlashTalk repository on the same GPU and configuration (random weights too) and prints the ratio.
``--world-size N`` launches N processes with torchrun (Ulysses sequence parallelism). ``--tiny`` runs tiny
widths on the CPU: it checks the benchmark, not the speed.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

NAME = "bench"
HELP = "benchmark the engine (per-stage ms, fps, FLOP utilisation) with random weights; table + JSON"

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_OUT = Path("out/bench.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.bench.cli import add_arguments as bench_arguments

    bench_arguments(parser)
    parser.add_argument("--out", metavar="FILE.json", type=Path, default=DEFAULT_OUT,
                        help=f"JSON report path (default: {DEFAULT_OUT})")
    parser.add_argument("--compare-reference", metavar="PATH", type=Path, default=None,
                        help="also run the released code path from this local SoulX-FlashTalk checkout (same GPU "
                             "and configuration, random weights) and print the per-chunk ratio")


def run(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    from engine.bench.cli import config_from_args, execute
    from engine.bench.config import BenchConfigError
    from engine.bench.report import format_table, write_json

    try:
        cfg = config_from_args(args)
        checkout = None
        if args.compare_reference is not None:
            from engine.bench.reference import check_checkout, check_reference_config

            checkout = check_checkout(args.compare_reference)
            check_reference_config(cfg)
    except (BenchConfigError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    # Comparing: each pipeline measured in its own process, so neither holds GPU memory the other needs.
    report = execute(cfg, isolate=checkout is not None)
    if checkout is not None:
        from engine.bench.reference import compare, format_comparison, run_reference

        reference = run_reference(checkout, cfg, compile_release=bool(getattr(args, "reference_compile", False)))
        report["reference"] = reference
        report["comparison"] = compare(report, reference)
    write_json(report, args.out)
    _out(format_table(report))
    if checkout is not None:
        _out("")
        _out(format_comparison(report["comparison"]))
    _out(f"\nreport written to {args.out}")
    return EXIT_OK


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(f"soulx-live bench: error: {text}\n")
