"""The measured matmul ceiling of a GPU: one large square GEMM, timed, next to the datasheet peak.

A datasheet peak is rarely reached (clocks under power limits, the kernel's own efficiency); the throughput of
a plain ``size x size x size`` bf16 matmul (and the FP8 one through ``torch._scaled_mm`` where the GPU has FP8
tensor cores) is what a DiT GEMM can hope for on this very device, so the report gives both. Timing: warm-up
calls, then ``iterations`` back-to-back calls between two CUDA events, mean per call. CPUs are skipped with the
reason (the figure is for GPUs).

``python -m engine.bench.ceiling [--size N] [--out FILE]`` prints the device's peaks and ceilings as JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["CEILING_DTYPES", "MatmulCeiling", "device_ceilings", "matmul_flop", "measure_matmul_ceiling",
           "tflops_of"]

CEILING_DTYPES = ("bf16", "fp8")
_TORCH = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class MatmulCeiling:
    """One measured GEMM: ``tflops`` (``None`` with ``reason`` when not measured) of ``size``³ in ``dtype``."""

    dtype: str
    size: int
    iterations: int
    ms_per_matmul: float | None
    tflops: float | None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def matmul_flop(size: int) -> int:
    """FLOP of one ``size x size`` by ``size x size`` matmul (a multiply-accumulate is 2 FLOP)."""
    return 2 * size**3


def tflops_of(size: int, ms: float) -> float:
    """TFLOP/s of a ``size``³ matmul that took ``ms`` milliseconds."""
    return matmul_flop(size) / (ms / 1e3) / 1e12


def _skip(dtype: str, size: int, reason: str) -> MatmulCeiling:
    return MatmulCeiling(dtype, size, 0, None, None, reason)


def _matmul(device: torch.device, dtype: str, size: int) -> Callable[[], torch.Tensor]:
    """A call that multiplies two random ``size x size`` matrices in ``dtype`` on ``device``."""
    gen = torch.Generator(device).manual_seed(0)
    if dtype == "fp8":
        a = torch.randn(size, size, device=device, generator=gen).to(torch.float8_e4m3fn)
        b = torch.randn(size, size, device=device, generator=gen).to(torch.float8_e4m3fn)
        one = torch.ones((), device=device)  # per-tensor scales
        # _scaled_mm takes its second operand column-major: b.t() of a row-major b is.
        return lambda: torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    a = torch.randn(size, size, device=device, dtype=_TORCH[dtype], generator=gen)
    b = torch.randn(size, size, device=device, dtype=_TORCH[dtype], generator=gen)
    return lambda: a @ b


def measure_matmul_ceiling(device: torch.device | str, dtype: str = "bf16", size: int = 8192, *, warmup: int = 3,
                           iterations: int = 20) -> MatmulCeiling:
    """Time ``iterations`` ``size``³ matmuls in ``dtype`` (``bf16``, ``fp16`` or ``fp8``) on a CUDA ``device``."""
    device = torch.device(device)
    if dtype not in (*_TORCH, "fp8"):
        raise ValueError(f"dtype must be bf16, fp16 or fp8, got {dtype!r}")
    if device.type != "cuda":
        return _skip(dtype, size, f"measured on CUDA devices only, not {device.type}")
    if dtype == "fp8":
        from engine.ops.fp8 import FP8_MIN_CAPABILITY, cuda_capability, fp8_supported

        if not fp8_supported(device):
            major, minor = cuda_capability(device)
            return _skip(dtype, size, f"no FP8 tensor cores (compute capability {major}.{minor} < "
                                      f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]})")
    try:
        with torch.cuda.device(device), torch.inference_mode():
            matmul = _matmul(device, dtype, size)
            for _ in range(warmup):
                matmul()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            for _ in range(iterations):
                matmul()
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end) / iterations
            del matmul
    except RuntimeError as exc:  # out of memory, or a torch build without this FP8 GEMM
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _skip(dtype, size, f"{dtype} matmul failed: {first_line}")
    finally:
        torch.cuda.empty_cache()
    return MatmulCeiling(dtype, size, iterations, round(ms, 4), round(tflops_of(size, ms), 1))


def device_ceilings(device: torch.device | str, size: int = 8192, dtypes: tuple[str, ...] = CEILING_DTYPES,
                    device_name: str | None = None) -> dict[str, dict[str, Any]]:
    """Per precision: the datasheet peak (:mod:`engine.bench.device_peaks`) and the measured ceiling beside it,
    with the measured share of the peak."""
    from engine.bench.device_peaks import peak_flops

    device = torch.device(device)
    if device_name is None:
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    out: dict[str, dict[str, Any]] = {}
    for dtype in dtypes:
        peak = peak_flops(device_name, dtype, device.type)
        measured = measure_matmul_ceiling(device, dtype, size).as_dict()
        share = None
        if peak.tflops and measured["tflops"]:
            share = round(measured["tflops"] / peak.tflops, 4)
        out[dtype] = measured | {"peak_tflops": peak.tflops, "peak_label": peak.label, "peak_reason": peak.reason,
                                 "share_of_peak": share}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.bench.ceiling", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    text = json.dumps({"device": str(device), "device_name": name,
                       "matmul_ceiling": device_ceilings(device, args.size, device_name=name)}, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
