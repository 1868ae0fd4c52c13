"""Optional FP8 (e4m3) matrix multiplies for the DiT's big linear layers (``engine.flashtalk.fp8``).

The DiT's time is in its GEMMs (q/k/v/o of self- and cross-attention and the two FFN layers: ~85 % of the FLOPs at
768x448, SPEC-flashtalk.md §10.2). On Hopper an e4m3 GEMM runs at twice the bf16 rate. :class:`Fp8Linear`
replaces those ``nn.Linear`` layers:

* weights quantised once to e4m3 with one scale per output channel (``amax / 448``);
* activations quantised per token at run time (one scale per row), so an outlier token does not flatten the rest;
* on CUDA devices with FP8 tensor cores (compute capability >= 8.9) the product is ``torch._scaled_mm`` with those
  row/column scales, accumulating in fp32 and writing bf16 (cast to the activation dtype); elsewhere the same
  quantised values are multiplied in float32 (an emulation with the same rounding of inputs, used to measure the
  error on CPU).

Everything else (embeddings, the float32 time/head layers, norms, the audio layers, attention itself) stays in
its precision. The error against bf16 is measured on the golden bundle by ``benchmarks/fp8_error.py``.

Which of the two runs is decided when the layer is built or moved (``.to()``/``.cuda()``), from the device its
weights are on, and kept as the plain attribute ``Fp8Linear.scaled_mm``: the forward reads a bool, so no device
query runs per call and ``torch.compile`` traces one branch without a graph break.

The float32 emulation is for the CPU (tests, error measurement). On a CUDA device without FP8 tensor cores it would
run silently on every forward at a fraction of the bf16 speed, so :func:`require_fp8_gemms` refuses that device at
start and names the fix; the weight-only FP8 storage (:mod:`engine.ops.fp8_weights`) is what such GPUs can use.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FP8_MAX", "Fp8Linear", "Fp8UnsupportedError", "cuda_capability", "fp8_supported", "quantize_block_fp8",
           "quantize_dit_fp8", "quantize_rows", "require_fp8_gemms"]

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
#: The linear layers of each DiT block that become FP8 (names inside ``DiTBlock``).
BLOCK_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.o",
                 "ffn.0", "ffn.2")


#: The first compute capability with FP8 tensor cores (Ada Lovelace; Hopper is 9.0).
FP8_MIN_CAPABILITY = (8, 9)


class Fp8UnsupportedError(RuntimeError):
    """FP8 GEMMs were asked for on a device that would only emulate them; the message names the fix."""


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """The CUDA compute capability of ``device`` (its own function so tests can stand in for a GPU)."""
    return torch.cuda.get_device_capability(device)


def fp8_supported(device: torch.device) -> bool:
    """Whether ``device`` has FP8 tensor cores for ``torch._scaled_mm`` (Ada/Hopper and later)."""
    return device.type == "cuda" and cuda_capability(device) >= FP8_MIN_CAPABILITY


def require_fp8_gemms(device: torch.device | str) -> None:
    """Raise :class:`Fp8UnsupportedError` for a CUDA device without FP8 tensor cores (compute capability < 8.9).

    The CPU passes: there the float32 emulation is the intended path (tests and error measurements).
    """
    device = torch.device(device)
    if device.type != "cuda" or fp8_supported(device):
        return
    major, minor = cuda_capability(device)
    raise Fp8UnsupportedError(
        f"FP8 GEMMs need FP8 tensor cores (compute capability >= {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]}: "
        f"Ada, Hopper or later); {device} has {major}.{minor} and would fall back to a slow float32 emulation on "
        "every forward. Set engine.flashtalk.fp8=false (bench: drop --fp8); to halve the DiT's memory on this GPU "
        "keep the weights in FP8 instead: engine.flashtalk.fp8_weights=true (bench: --fp8-weights)"
    )


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, K]`` -> e4m3 ``[N, K]`` and float32 ``[N, 1]`` scales with ``x ≈ q * scale`` (one scale per row)."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / FP8_MAX
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


class Fp8Linear(nn.Module):
    """``nn.Linear`` with e4m3 weights (per output channel) and per-token e4m3 activations."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", weight)  # [out, in], row-major: its .t() is the column-major operand
        self.register_buffer("weight_scale", scale.reshape(1, -1))  # [1, out]
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        #: True: ``torch._scaled_mm`` on FP8 tensor cores; False: the float32 emulation. Follows the weights' device.
        self.scaled_mm = self._scaled_mm_usable()

    def _scaled_mm_usable(self) -> bool:
        # _scaled_mm needs both GEMM dimensions divisible by 16.
        return (fp8_supported(self.weight_fp8.device)
                and self.in_features % 16 == 0 and self.out_features % 16 == 0)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]  # nn.Module's own signature
        # Every device move (.to/.cuda/.cpu, to_empty) passes here: decide the GEMM again for the new device, once.
        module = super()._apply(fn, recurse)
        self.scaled_mm = self._scaled_mm_usable()
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        q, scale = quantize_rows(rows)
        if self.scaled_mm:
            # Row-wise scales (one per token, one per output channel) are supported with a bf16 output only.
            out = torch._scaled_mm(q, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale,
                                   out_dtype=torch.bfloat16)
            out = out if self.bias is None else out + self.bias.to(torch.bfloat16)
        else:  # same quantised operands, multiplied in float32
            weight = self.weight_fp8.float() * self.weight_scale.reshape(-1, 1)
            bias = None if self.bias is None else self.bias.float()
            out = F.linear(q.float() * scale, weight, bias)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        gemm = "scaled_mm" if self.scaled_mm else "float32 emulation"
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3, {gemm}"


def quantize_block_fp8(block: nn.Module) -> int:
    """Replace the :data:`BLOCK_LINEARS` of one DiT block with :class:`Fp8Linear` (where the block is); how many."""
    count = 0
    for name in BLOCK_LINEARS:
        parent_name, _, leaf = name.rpartition(".")
        parent = block.get_submodule(parent_name)
        layer = getattr(parent, leaf) if not leaf.isdigit() else parent[int(leaf)]
        if not isinstance(layer, nn.Linear):
            continue
        fp8 = Fp8Linear(layer)
        if leaf.isdigit():
            parent[int(leaf)] = fp8
        else:
            setattr(parent, leaf, fp8)
        count += 1
    return count


def quantize_dit_fp8(transformer: nn.Module) -> int:
    """Replace the big linear layers of every block of ``transformer`` with :class:`Fp8Linear`; returns how many.

    In place and one way (the bf16 weights of those layers are released): build a fresh model to go back.
    """
    count = sum(quantize_block_fp8(block) for block in transformer.blocks)  # type: ignore[attr-defined]
    log.info("fp8: %d linear layers in e4m3 (per-channel weights, per-token activations)", count)
    return count
