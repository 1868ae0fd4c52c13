"""FlashTalk's memory modes and compile apply to FlashHead unchanged: the tiny-random FlashHead chunk in each memory
mode (block offload moves bytes, not maths; FP8 weight storage stays within a few uint8 levels), and a FlashHead
DiT block (frame-local audio cross-attention) compiles to one graph."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from engine.build import build_engine
from engine.interface import SessionRequest
from engine.models.transformer import DiTBlock
from engine.ops.rope import rope_cos_sin
from engine.tiny import TINY_FLASHHEAD_DIT
from soulx_live.config import EngineConfig


def _tiny_frames(**flashhead: object) -> np.ndarray:
    engine = build_engine(EngineConfig(kind="flashhead", flashhead={"preset": "tiny-random", **flashhead}))
    session = engine.start_session(SessionRequest(session_id="s", avatar=None, seed=3))
    t = np.arange(engine.spec.samples_per_chunk) / 16000
    session.push_audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    return session.next_chunk().frames.astype(np.int16)


@pytest.mark.timeout(300)
def test_tiny_flashhead_chunk_in_each_memory_mode() -> None:
    resident = _tiny_frames()
    assert np.array_equal(_tiny_frames(memory="offload"), resident)
    fp8_weights = _tiny_frames(fp8_weights=True)
    diff = np.abs(fp8_weights - resident)
    assert 0 < diff.mean() < 1.0 and diff.max() <= 4
    assert np.array_equal(_tiny_frames(memory="offload", fp8_weights=True), fp8_weights)


def _block_inputs() -> tuple[Any, ...]:
    grid = (2, 2, 3)
    g = torch.Generator().manual_seed(0)
    dim = TINY_FLASHHEAD_DIT.dim
    x = torch.randn(1, 12, dim, generator=g)
    e0 = torch.randn(1, 6, dim, generator=g)
    audio = torch.randn(1, 2, TINY_FLASHHEAD_DIT.context_tokens, dim, generator=g)
    return x, e0, None, None, audio, rope_cos_sin(grid, dim // TINY_FLASHHEAD_DIT.num_heads), 6


@pytest.mark.timeout(120)
def test_flashhead_block_compiles_to_one_graph() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = DiTBlock(TINY_FLASHHEAD_DIT).eval()
    inputs = _block_inputs()
    with torch.no_grad():
        report = torch._dynamo.explain(block)(*inputs)
        eager = block(*inputs)
        compiled = torch.compile(block, backend="eager")(*inputs)
    reasons = [reason.reason.splitlines()[0] for reason in report.break_reasons]
    assert (report.graph_count, report.graph_break_count) == (1, 0), reasons
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()
