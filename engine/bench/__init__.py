"""``soulx-live bench``: per-stage timings, fps, time to first frame, peak memory and DiT FLOP utilisation of
the streaming engine at a chosen configuration, with random weights (no checkpoint needed).

* :mod:`engine.bench.config` -- :class:`BenchConfig` (resolution, frames, steps, dtype, world size, attention
  backend, compile);
* :mod:`engine.bench.runner` -- the per-chunk loop over the engine's own functions, timed per stage;
* :mod:`engine.bench.flops` / :mod:`engine.bench.device_peaks` -- analytic DiT FLOP count (what runs: the cached
  context K/V apart) and dense bf16/FP8 GPU peaks by exact device name;
* :mod:`engine.bench.ceiling` -- the measured matmul ceiling of the GPU (bf16, FP8), beside the peak;
* :mod:`engine.bench.report` -- summary, table and JSON (device, date, git commit, config);
* :mod:`engine.bench.reference` -- the comparison against the released code path from a local checkout;
* :mod:`engine.bench.cli` -- the argument parser shared by ``soulx-live bench``, ``benchmarks/engine_14b.py``
  and ``python -m engine.bench`` (what torchrun runs for ``--world-size > 1``);
* :mod:`engine.bench.models` / :mod:`engine.bench.widths` -- the random-weight models and their widths.

Imports: only ``engine``, the standard library and third-party packages; never ``soulx_live`` or ``plugins``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["BenchConfig", "BenchConfigError", "DitFlops", "dit_flops", "latent_grid", "run_benchmark"]

# Lazy: ``soulx-live`` imports the command's argument parser (engine.bench.cli) on every invocation, so this
# package must not import torch until something is actually run.
_LAZY = {"BenchConfig": "engine.bench.config", "BenchConfigError": "engine.bench.config",
         "DitFlops": "engine.bench.flops", "dit_flops": "engine.bench.flops", "latent_grid": "engine.bench.flops"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.bench' has no attribute {name!r}")


def run_benchmark(cfg: Any) -> dict:
    """Run one configuration in this process and return its report."""
    from engine.bench.report import build_report
    from engine.bench.runner import run_chunks

    cfg.validate()
    return build_report(cfg, run_chunks(cfg))
