"""What one benchmark run measures: the chunk shape, the step count, precision, parallelism and kernels."""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ATTENTION_CHOICES", "DTYPES", "MODELS", "MOTION_FRAMES", "BenchConfig", "BenchConfigError", "torch_dtype"]

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ATTENTION_CHOICES = ("auto", "sdpa", "flash", "math")
MOTION_FRAMES = 5
MODELS = ("flashtalk", "flashhead")


class BenchConfigError(ValueError):
    """A configuration the benchmark cannot run; the message names the flag to change."""


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration. ``tiny`` shrinks every model's widths (checks the code, not the speed)."""

    frames: int = 33
    height: int = 768
    width: int = 448
    steps: int = 4
    dtype: str = "bf16"
    chunks: int = 3
    tiny: bool = False
    device: str = "cuda"
    seed: int = 9999
    world_size: int = 1
    attention_backend: str = "auto"
    compile: bool = False
    compile_mode: str = "default"
    ulysses_degree: int = 0  # 0: the release's gcd rule
    ring_degree: int = 0
    parallel_vae: bool = True
    cross_kv_cache: bool = True
    fp8: bool = False
    offload: bool = False  # DiT blocks in pinned host memory, streamed one block ahead (engine.ops.offload)
    fp8_weights: bool = False  # DiT block weights stored e4m3, computed in the dtype (engine.ops.fp8_weights)
    model: str = "flashtalk"  # "flashhead": SoulX-FlashHead Pro (1.3B, 512x512, no text/CLIP)

    @classmethod
    def tiny_defaults(cls, **overrides: object) -> BenchConfig:
        """The CPU self-check: 9 frames of 32x32, fp32, tiny widths."""
        base = {"frames": 9, "height": 32, "width": 32, "dtype": "fp32", "tiny": True, "device": "cpu"}
        return cls(**(base | overrides))  # type: ignore[arg-type]

    def validate(self) -> None:
        """Raise :class:`BenchConfigError` naming the offending flag."""
        if self.frames <= MOTION_FRAMES or (self.frames - 1) % 4:
            raise BenchConfigError(f"--frames must be 4k+1 and > {MOTION_FRAMES}, got {self.frames}")
        if self.height % 16 or self.width % 16 or self.height <= 0 or self.width <= 0:
            raise BenchConfigError(f"--height and --width must be positive multiples of 16, got {self.height}x{self.width}")
        if self.chunks < 1 or self.steps < 1:
            raise BenchConfigError(f"--chunks and --steps must be >= 1, got {self.chunks}, {self.steps}")
        if self.model not in MODELS:
            raise BenchConfigError(f"--engine must be one of {MODELS}, got {self.model!r}")
        if self.dtype not in DTYPES:
            raise BenchConfigError(f"--dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.attention_backend not in ATTENTION_CHOICES:
            raise BenchConfigError(f"--attention must be one of {ATTENTION_CHOICES}, got {self.attention_backend!r}")
        if self.world_size < 1:
            raise BenchConfigError(f"--world-size must be >= 1, got {self.world_size}")
        if self.world_size > 1:
            from engine.bench.widths import dit_config
            from engine.parallel.mesh import resolve_degrees

            try:
                resolve_degrees(self.world_size, dit_config(self.tiny, self.model).num_heads, self.ulysses_degree,
                                self.ring_degree)
            except ValueError as exc:
                raise BenchConfigError(f"--world-size/--ulysses/--ring: {exc}") from exc
        if self.compile_mode not in ("default", "reduce-overhead", "max-autotune"):
            raise BenchConfigError(f"--compile-mode must be default, reduce-overhead or max-autotune, got {self.compile_mode!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BenchConfigError("no CUDA device: run on a GPU machine, or use --tiny for the CPU check")
        if self.offload and self.compile:
            raise BenchConfigError("--offload swaps block weights around each forward, which --compile would trace: "
                                   "drop one of them")
        if self.fp8:
            from engine.ops.fp8 import Fp8UnsupportedError, require_fp8_gemms

            try:
                require_fp8_gemms(self.device)
            except Fp8UnsupportedError as exc:
                raise BenchConfigError(f"--fp8: {exc}") from exc

    @property
    def frames_out(self) -> int:
        return self.frames - MOTION_FRAMES


def torch_dtype(cfg: BenchConfig) -> torch.dtype:
    return DTYPES[cfg.dtype]
