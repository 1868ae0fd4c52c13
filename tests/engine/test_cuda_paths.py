"""The CUDA-only paths of the speed levers, against their CPU-tested references (skipped without a GPU).

CI has no GPU, so these run on a lent GPU machine (``benchmarks/gpu_check.sh``): PyTorch's CUDA flash kernel with
its log-sum-exp (ring attention's merge input), the attention facade's kernels in bf16, ``torch._scaled_mm`` FP8
GEMMs against the same quantised operands multiplied in float32, and the DiT with its blocks compiled (Inductor,
CUDA graphs) against eager on the same GPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from engine.ops import attention as attn
from engine.ops.fp8 import Fp8Linear, fp8_supported

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run benchmarks/gpu_check.sh on a GPU)"),
]

sys.path.insert(0, str(Path(__file__).parent))


def _qkv(seq: int = 300, heads: int = 4, head_dim: int = 64, dtype: torch.dtype = torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(0)
    return tuple(torch.randn(2, seq, heads, head_dim, device="cuda", dtype=dtype, generator=g) for _ in range(3))


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max())


def test_flash_kernel_lse_matches_the_float32_math() -> None:
    q, k, v = _qkv()
    out, lse = attn.attention_with_lse(q, k, v)
    ref_out, ref_lse = attn.attention_with_lse(q, k, v, backend="math")
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32 and lse.shape == (2, 4, 300)
    assert _rel(out, ref_out) < 2e-2
    assert float((lse - ref_lse).abs().max()) < 1e-2  # the merge weights exp(lse_a - lse) depend on it directly


@pytest.mark.parametrize("backend", ["sdpa", "flash"])
def test_bf16_kernels_match_math_with_padded_keys(backend: str) -> None:
    if backend == "flash" and not attn.flash_available():
        pytest.skip(f"flash-attn not usable: {attn._flash_probe()[1]}")
    q, k, v = _qkv()
    k_len = torch.tensor([300, 217], device="cuda")
    out = attn.attention(q, k, v, backend=backend, k_len=k_len)
    ref = attn.attention(q, k, v, backend="math", k_len=k_len)
    assert out.dtype == torch.bfloat16 and _rel(out, ref) < 2e-2


@pytest.mark.skipif(not torch.cuda.is_available() or not fp8_supported(torch.device("cuda")),
                    reason="needs FP8 tensor cores (compute capability >= 8.9)")
def test_scaled_mm_equals_the_emulated_fp8_product() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(512, 384).cuda().to(torch.bfloat16)
    fp8 = Fp8Linear(linear)
    x = torch.randn(3, 77, 512, device="cuda", dtype=torch.bfloat16)
    out = fp8(x)  # torch._scaled_mm
    emulated = fp8.cpu()(x.cpu().float())  # same e4m3 operands, float32 product on the CPU
    assert out.dtype == torch.bfloat16 and out.shape == (3, 77, 384)
    assert _rel(out.cpu(), emulated) < 1e-2  # only accumulation order and the bf16 output differ
    assert _rel(out, linear(x)) < 5e-2  # and still the layer it replaced


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_dit_blocks_match_eager_on_the_gpu(mode: str) -> None:
    from test_sequence_parallel import _inputs, _model

    from engine.ops.compile import compile_dit_blocks

    model = _model().cuda().to(torch.bfloat16)
    inputs = [t.cuda() for t in _inputs("even")]  # float32: the model casts to its dtype where the release does
    with torch.no_grad():
        eager = model(*inputs)
        assert compile_dit_blocks(model, mode) == len(model.blocks)
        for _ in range(3):  # CUDA graphs record on a later call than the first
            compiled = model(*inputs)
    assert _rel(compiled, eager) < 3e-2  # bf16: fused kernels round differently
