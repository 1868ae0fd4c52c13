"""Arguments and the run/launch logic shared by ``soulx-live bench``, ``benchmarks/engine_14b.py`` and
``python -m engine.bench``.

``--world-size N > 1`` re-launches this benchmark under ``torchrun --standalone --nproc_per_node N`` (one
process per GPU, Ulysses sequence parallelism on the DiT); rank 0 writes the report, which this process reads
back. Heavy imports (torch, the engine) happen inside the functions.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "config_from_args", "execute", "run_module"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = "SOULX_BENCH_CHILD"  # set for the torchrun workers a parent launched


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's flags (defaults: the released configuration; smaller ones with ``--tiny``)."""
    p.add_argument("--engine", dest="model", choices=("flashtalk", "flashhead"), default="flashtalk",
                   help="the model: FlashTalk 14B (768x448) or SoulX-FlashHead Pro 1.3B (512x512)")
    p.add_argument("--frames", type=int, default=None, help="pixel frames per chunk, 4k+1 (33 released; 9 with --tiny)")
    p.add_argument("--height", type=int, default=None,
                   help="multiple of 16 (768 released, 512 for flashhead; 32 with --tiny)")
    p.add_argument("--width", type=int, default=None,
                   help="multiple of 16 (448 released, 512 for flashhead; 32 with --tiny)")
    p.add_argument("--steps", type=int, default=4, help="denoising steps per chunk (4 released)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="bf16 released; fp32 with --tiny")
    p.add_argument("--chunks", type=int, default=3, help="chunks to stream; the first is reported apart (warm-up)")
    p.add_argument("--seed", type=int, default=9999)
    p.add_argument("--world-size", type=int, default=1, help="GPUs (torchrun processes)")
    p.add_argument("--ulysses", type=int, default=0, help="Ulysses degree (0: gcd(world, 40 heads), as released)")
    p.add_argument("--ring", type=int, default=0, help="Ring degree (0: world / ulysses)")
    p.add_argument("--no-parallel-vae", dest="parallel_vae", action="store_false",
                   help="run the whole VAE on every rank instead of one band of rows each")
    p.add_argument("--attention", dest="attention_backend", choices=("auto", "sdpa", "flash", "math"),
                   default="auto", help="attention kernel (auto: flash-attn when installed, else SDPA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks (the first chunk compiles)")
    p.add_argument("--compile-mode", default="default", choices=("default", "reduce-overhead", "max-autotune"),
                   help="reduce-overhead runs as default: per-block CUDA graphs hit pytorch#152887")
    p.add_argument("--no-cross-cache", dest="cross_kv_cache", action="store_false",
                   help="recompute the text/image cross-attention K/V every step (as the release does)")
    p.add_argument("--fp8", action="store_true", help="e4m3 GEMMs in the DiT blocks (FP8 tensor cores)")
    p.add_argument("--offload", action="store_true",
                   help="memory mode: DiT blocks in pinned host memory, streamed to the GPU one block ahead")
    p.add_argument("--fp8-weights", dest="fp8_weights", action="store_true",
                   help="memory mode: DiT block weights stored e4m3 (half the memory, any GPU), computed in --dtype")
    p.add_argument("--reference-compile", action="store_true",
                   help="--compare-reference: keep the release's own torch.compile of the DiT and VAE (off by "
                        "default: it compiles the whole model cold, for minutes)")
    p.add_argument("--tiny", action="store_true", help="tiny widths on the CPU (checks the benchmark, not speed)")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")


def config_from_args(args: argparse.Namespace) -> Any:
    """A validated :class:`~engine.bench.config.BenchConfig` (raises ``BenchConfigError`` naming the flag)."""
    from engine.bench.config import BenchConfig

    tiny = bool(args.tiny)
    model = getattr(args, "model", "flashtalk")
    released_hw = (512, 512) if model == "flashhead" else (768, 448)
    cfg = BenchConfig(
        model=model,
        frames=args.frames or (9 if tiny else 33),
        height=args.height or (32 if tiny else released_hw[0]),
        width=args.width or (32 if tiny else released_hw[1]),
        steps=args.steps,
        dtype=args.dtype or ("fp32" if tiny else "bf16"),
        chunks=args.chunks,
        tiny=tiny,
        device=args.device or ("cpu" if tiny else "cuda"),
        seed=args.seed,
        world_size=args.world_size,
        attention_backend=args.attention_backend,
        compile=bool(args.compile),
        compile_mode=args.compile_mode,
        ulysses_degree=args.ulysses,
        ring_degree=args.ring,
        parallel_vae=bool(args.parallel_vae),
        cross_kv_cache=bool(args.cross_kv_cache),
        fp8=bool(args.fp8),
        offload=bool(getattr(args, "offload", False)),
        fp8_weights=bool(getattr(args, "fp8_weights", False)),
    )
    cfg.validate()
    return cfg


def _flags(cfg: Any) -> list[str]:
    """``cfg`` back to command-line flags (for the torchrun workers)."""
    flags = ["--engine", cfg.model, "--frames", str(cfg.frames), "--height", str(cfg.height), "--width", str(cfg.width),
             "--steps", str(cfg.steps), "--dtype", cfg.dtype, "--chunks", str(cfg.chunks), "--seed", str(cfg.seed),
             "--world-size", str(cfg.world_size), "--attention", cfg.attention_backend, "--device", cfg.device]
    flags += ["--ulysses", str(cfg.ulysses_degree), "--ring", str(cfg.ring_degree), "--compile-mode", cfg.compile_mode]
    switches = {"--tiny": cfg.tiny, "--compile": cfg.compile, "--no-parallel-vae": not cfg.parallel_vae,
                "--no-cross-cache": not cfg.cross_kv_cache, "--fp8": cfg.fp8,
                "--offload": cfg.offload, "--fp8-weights": cfg.fp8_weights}
    return flags + [flag for flag, on in switches.items() if on]


def torchrun_command(world_size: int, module: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}",
            "-m", module, *args]


def run_module(module: str, world_size: int, args: list[str], timeout_s: float | None = None) -> dict[str, Any]:
    """Run ``python -m module args --out TMP`` in fresh processes (torchrun when ``world_size > 1``) and return
    the JSON it (rank 0) wrote. A fresh process gives each measured pipeline the whole GPU memory."""
    with tempfile.TemporaryDirectory(prefix="soulx-bench-") as tmp:
        out = Path(tmp) / "report.json"
        argv = [*args, "--out", str(out)]
        cmd = torchrun_command(world_size, module, argv) if world_size > 1 else [sys.executable, "-m", module, *argv]
        log.info("launching: %s", " ".join(cmd))
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, **{CHILD_ENV: "1"}, PYTHONPATH=path)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout_s, check=False)
        if proc.returncode or not out.exists():
            raise RuntimeError(f"the benchmark process ({module}, {world_size} process(es)) failed with exit code "
                               f"{proc.returncode}; its log is above")
        return json.loads(out.read_text())


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def execute(cfg: Any, *, isolate: bool = False) -> dict[str, Any]:
    """The report of ``cfg``: in this process, or (``isolate``, or ``cfg.world_size > 1``) in fresh processes."""
    if (cfg.world_size > 1 or isolate) and not under_torchrun():
        return run_module("engine.bench", cfg.world_size, _flags(cfg))
    from engine.bench import run_benchmark

    return run_benchmark(cfg)
