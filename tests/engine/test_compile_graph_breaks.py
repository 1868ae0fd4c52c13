"""One DiT block traces as one graph: no graph breaks for the attention kernels or the FP8 GEMMs (CPU).

``torch.compile`` splits a function at every Python call it cannot trace (a *graph break*): each break is a
return to eager Python, lost fusions and, on a GPU, extra launches. The block's choices -- which attention kernel,
``torch._scaled_mm`` or its float32 emulation -- are therefore made outside the compiled code (the flash-attn
probe by ``prepare_attention``/``set_attention_backend``, the FP8 GEMM when an ``Fp8Linear`` is placed) and the
forward only reads them. ``torch._dynamo.explain`` counts graphs and breaks without compiling kernels, so this
runs on the CPU; the CUDA twin is in ``test_cuda_paths.py``.

The per-block compile mode never turns on CUDA graphs (pytorch#152887: chained per-block CUDA graphs overwrite
outputs the next block still reads): ``reduce-overhead`` becomes ``default`` with a warning.
"""
from __future__ import annotations

import logging
import types
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F

from engine.models.transformer import DiTBlock
from engine.ops import attention as attn
from engine.ops import fp8
from engine.ops.compile import block_compile_mode, compile_dit_blocks
from engine.ops.rope import rope_cos_sin
from engine.tiny import TINY_DIT

GRID = (2, 2, 3)  # latent frames, height, width in tokens


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    """Each explain starts from empty caches, and the attention choice returns to automatic afterwards."""
    torch._dynamo.reset()
    yield
    attn.set_attention_backend(None)
    torch._dynamo.reset()


def _block(dtype: torch.dtype = torch.float32) -> DiTBlock:
    torch.manual_seed(0)
    return DiTBlock(TINY_DIT).eval().to(dtype)


def _inputs(dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
    """``DiTBlock.forward``'s arguments for one sample on ``GRID`` (text/image tokens, not cached K/V)."""
    g = torch.Generator().manual_seed(0)
    frames, h, w = GRID
    dim = TINY_DIT.dim
    x = torch.randn(1, frames * h * w, dim, generator=g).to(dtype)
    e0 = torch.randn(1, 6, dim, generator=g)  # float32, as the model gives it
    text = torch.randn(1, TINY_DIT.text_len, dim, generator=g).to(dtype)
    image = torch.randn(1, 9, dim, generator=g).to(dtype)
    audio = torch.randn(1, frames, TINY_DIT.context_tokens, TINY_DIT.output_dim, generator=g).to(dtype)
    rope = rope_cos_sin(GRID, dim // TINY_DIT.num_heads)
    return x, e0, text, image, audio, rope, h * w


def _explain(block: torch.nn.Module, inputs: tuple[Any, ...]) -> Any:
    with torch.no_grad():
        return torch._dynamo.explain(block)(*inputs)


def _assert_one_graph(report: Any) -> None:
    reasons = [reason.reason.splitlines()[0] for reason in report.break_reasons]
    assert (report.graph_count, report.graph_break_count) == (1, 0), reasons


# -- attention -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sdpa", None, "math"])
def test_block_with_the_attention_kernels_is_one_graph(backend: str | None) -> None:
    attn.set_attention_backend(backend)
    _assert_one_graph(_explain(_block(), _inputs()))


def test_block_with_the_flash_kernel_is_one_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flash path's dispatch (a module chosen by the probe) traces too; flash-attn itself needs CUDA, so a
    stand-in module with its signature runs SDPA."""

    def flash_attn_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)

    stand_in = types.ModuleType("flash_attn_interface")
    stand_in.flash_attn_func = flash_attn_func  # type: ignore[attr-defined]
    monkeypatch.setattr(attn, "_flash_state", (stand_in, "stand-in"))
    attn.set_attention_backend("flash")
    _assert_one_graph(_explain(_block(torch.bfloat16), _inputs(torch.bfloat16)))


@pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace the builtin:UserWarning")
def test_the_flash_probe_is_outside_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU the automatic choice asks whether flash-attn loads at every attention call. Probed beforehand it is
    a constant of the graph; probed inside, its import breaks the graph -- what compiling used to do."""

    def choose(x: torch.Tensor) -> torch.Tensor:
        y = x * 3
        return (y + 1 if attn.flash_available() else y - 1).sin()

    attn.prepare_attention()
    _assert_one_graph(torch._dynamo.explain(choose)(torch.randn(4)))
    torch._dynamo.reset()
    monkeypatch.setattr(attn, "_flash_state", None)  # never probed: the import is traced
    assert torch._dynamo.explain(choose)(torch.randn(4)).graph_break_count == 1


# -- FP8 -------------------------------------------------------------------------------------------------------
def test_fp8_block_with_the_emulated_gemm_is_one_graph() -> None:
    block = _block()
    assert fp8.quantize_block_fp8(block) == len(fp8.BLOCK_LINEARS)
    assert not any(layer.scaled_mm for layer in block.modules() if isinstance(layer, fp8.Fp8Linear))  # CPU
    _assert_one_graph(_explain(block, _inputs()))


def test_fp8_block_with_scaled_mm_is_one_graph() -> None:
    """The ``torch._scaled_mm`` branch (FP8 tensor cores) traced on the CPU, where PyTorch also implements it."""
    block = _block(torch.bfloat16)
    fp8.quantize_block_fp8(block)
    for layer in block.modules():
        if isinstance(layer, fp8.Fp8Linear):
            layer.scaled_mm = True  # what a GPU with compute capability >= 8.9 decides when the block is placed
    inputs = _inputs(torch.bfloat16)
    try:
        with torch.no_grad():
            block(*inputs)
    except (RuntimeError, NotImplementedError) as exc:
        pytest.skip(f"this PyTorch has no CPU torch._scaled_mm: {exc}")
    _assert_one_graph(_explain(block, inputs))


# -- compile modes ---------------------------------------------------------------------------------------------
def test_per_block_compile_never_uses_cuda_graphs(caplog: pytest.LogCaptureFixture) -> None:
    assert block_compile_mode("default") == "default"
    assert block_compile_mode("max-autotune") == "max-autotune-no-cudagraphs"  # plain max-autotune adds them
    with caplog.at_level(logging.WARNING, logger="engine.ops.compile"):
        assert block_compile_mode("reduce-overhead") == "default"
    assert "pytorch#152887" in caplog.text and "compile_mode: default" in caplog.text
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        block_compile_mode("fast")


def test_compile_dit_blocks_passes_the_mapped_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    modes: list[str] = []
    monkeypatch.setattr(DiTBlock, "compile", lambda self, **kwargs: modes.append(kwargs["mode"]))
    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList([_block(), _block()])
    monkeypatch.setattr(attn, "_flash_state", None)
    assert compile_dit_blocks(model, "reduce-overhead") == 2
    assert modes == ["default", "default"]
    assert attn._flash_state is not None  # probed before compiling
