"""The CUDA-only paths of the speed levers, against their CPU-tested references (skipped without a GPU).

CI has no GPU, so these run on a lent GPU machine (``benchmarks/gpu_check.sh``): PyTorch's CUDA flash kernel with
its log-sum-exp (ring attention's merge input), the attention facade's kernels in bf16, ``torch._scaled_mm`` FP8
GEMMs against the same quantised operands multiplied in float32, one DiT block traced on the GPU without graph
breaks (automatic attention choice, FP8), and the DiT with its blocks compiled (Inductor, no CUDA graphs: chained
per-block CUDA graphs overwrite outputs still in use, pytorch#152887) against eager on the same GPU.
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


@pytest.mark.parametrize("fp8_gemms", [False, True])
def test_dit_block_traces_without_graph_breaks_on_the_gpu(fp8_gemms: bool) -> None:
    """The CUDA twin of test_compile_graph_breaks.py: here the automatic attention choice asks about flash-attn and
    the FP8 layers take ``torch._scaled_mm``, the branches that used to probe inside the graph."""
    from test_compile_graph_breaks import _block, _inputs

    from engine.ops.fp8 import quantize_block_fp8

    if fp8_gemms and not fp8_supported(torch.device("cuda")):
        pytest.skip("needs FP8 tensor cores (compute capability >= 8.9)")
    attn.set_attention_backend(None)  # automatic: flash when it loads, else sdpa
    block = _block(torch.bfloat16).cuda()
    if fp8_gemms:
        quantize_block_fp8(block)
        assert all(layer.scaled_mm for layer in block.modules() if isinstance(layer, Fp8Linear))
    inputs = [t.cuda() if isinstance(t, torch.Tensor) else t for t in _inputs(torch.bfloat16)]
    inputs[5] = tuple(t.cuda() for t in inputs[5])  # RoPE (cos, sin)
    torch._dynamo.reset()
    with torch.no_grad():
        report = torch._dynamo.explain(block)(*inputs)
    reasons = [reason.reason.splitlines()[0] for reason in report.break_reasons]
    assert (report.graph_count, report.graph_break_count) == (1, 0), reasons


@pytest.mark.timeout(900)
def test_compiled_dit_blocks_match_eager_on_the_gpu() -> None:
    from test_sequence_parallel import _inputs, _model

    from engine.ops.compile import compile_dit_blocks

    model = _model().cuda().to(torch.bfloat16)
    inputs = [t.cuda() for t in _inputs("even")]  # float32: the model casts to its dtype where the release does
    with torch.no_grad():
        eager = model(*inputs)
        assert compile_dit_blocks(model, "default") == len(model.blocks)
        # Every output kept and checked after later calls: what chained per-block CUDA graphs got wrong.
        outputs = [model(*inputs) for _ in range(3)]
    for compiled in outputs:
        assert _rel(compiled, eager) < 3e-2  # bf16: fused kernels round differently
