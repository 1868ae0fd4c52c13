"""``python -m engine.bench [flags] --out FILE``: one benchmark run; what torchrun starts on every rank.

Rank 0 writes the JSON report to ``--out`` and prints the table to stderr.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from engine.bench.cli import CHILD_ENV
from engine.parallel.ranks import torchrun_rank


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    from engine.bench.cli import add_arguments, config_from_args, execute
    from engine.bench.config import BenchConfigError
    from engine.bench.report import format_table, write_json

    parser = argparse.ArgumentParser(prog="python -m engine.bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="JSON report path")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except BenchConfigError as exc:
        parser.error(str(exc))
    report = execute(cfg)
    if torchrun_rank()[0] == 0:
        write_json(report, args.out)
        if not os.environ.get(CHILD_ENV):  # a launching parent prints the table itself
            sys.stderr.write(format_table(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
