"""The xfuser boundary: one module imports it, the probe says why it is not used here, and the adapter hands
xfuser our degrees and a layout it accepts.

xfuser cannot be imported on a machine without a GPU (research/integration.md §6), so the adapter test replaces
the two xfuser modules with a thin fake that records the calls (the only fake here); the sequence-parallel math
itself is tested for real over gloo in test_sequence_parallel.py / test_ring_attention.py.
"""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine.parallel import xfuser_attention
from engine.parallel.mesh import ParallelContext
from engine.parallel.usp import SequenceParallel
from engine.parallel.xfuser_attention import XfuserSelfAttention, resolve_sp_backend, xfuser_probe

ROOT = Path(__file__).resolve().parents[2]
IMPORTS_XFUSER = re.compile(r"^\s*(from\s+xfuser[\s.]|import\s+xfuser\b)|import_module\(\s*[\"']xfuser", re.MULTILINE)


def test_only_one_module_imports_xfuser() -> None:
    importers = sorted(
        str(path.relative_to(ROOT)) for folder in ("engine", "soulx_live", "plugins") for path in (ROOT / folder).rglob("*.py")
        if IMPORTS_XFUSER.search(path.read_text(encoding="utf-8"))
    )
    assert importers == ["engine/parallel/xfuser_attention.py"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_without_cuda_the_native_path_is_chosen_and_xfuser_refused_with_the_fix() -> None:
    modules, reason = xfuser_probe()
    assert modules is None and "CUDA" in reason
    assert resolve_sp_backend("auto") == "native" and resolve_sp_backend("native") == "native"
    with pytest.raises(ValueError, match=r"soulx-live\[multigpu\].*sp_backend=native"):
        resolve_sp_backend("xfuser")


class _FakeLongContextAttention:
    calls: list[tuple[torch.dtype, tuple[int, ...]]] = []

    def __call__(self, attn: object, *, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        self.calls.append((query.dtype, tuple(query.shape)))
        return query * 2


def test_adapter_only_against_a_fake_xfuser_passes_our_mesh_and_a_half_precision_layout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ADAPTER TEST against a fake xfuser: it checks what our adapter hands xfuser, not that xfuser computes the
    right attention. The xfuser path is unverified until tests/engine/test_cuda_paths.py runs it on a GPU."""
    init: dict[str, object] = {}
    state = SimpleNamespace(
        init_distributed_environment=lambda **kw: init.update(env=kw),
        initialize_model_parallel=lambda **kw: init.update(mesh=kw),
    )
    attn = SimpleNamespace(xFuserLongContextAttention=_FakeLongContextAttention)
    monkeypatch.setattr(xfuser_attention, "xfuser_probe", lambda: ((state, attn), "fake"))
    ctx = ParallelContext(rank=1, world_size=4, ulysses_degree=2, ring_degree=2, group=None, device=torch.device("cpu"))
    kernel = XfuserSelfAttention(ctx)
    assert init == {"env": {"rank": 1, "world_size": 4},
                     "mesh": {"sequence_parallel_degree": 4, "ring_degree": 2, "ulysses_degree": 2}}
    q = torch.randn(1, 3, 4, 8)
    out = kernel(q, q, q)
    assert _FakeLongContextAttention.calls[-1] == (torch.bfloat16, (1, 3, 4, 8))  # flash-attn needs half precision
    assert out.dtype == torch.float32 and torch.allclose(out, q.bfloat16().float() * 2)


def test_padded_sequences_stay_on_the_native_path() -> None:
    ctx = ParallelContext(rank=0, world_size=2, ulysses_degree=2, ring_degree=1, group=None, device=torch.device("cpu"))
    used: list[str] = []
    sp = SequenceParallel(ctx, kernel=lambda q, k, v: used.append("xfuser") or q)
    sp._native_attention = lambda q, k, v, n: used.append(f"native {n}") or q  # type: ignore[method-assign]
    q = torch.zeros(1, 6, 4, 8)
    sp.split(torch.zeros(1, 12, 16))
    sp.self_attention(q, q, q)
    sp.split(torch.zeros(1, 11, 16))  # padded to 12: xfuser would attend to the padding
    sp.self_attention(q, q, q)
    assert used == ["xfuser", "native 11"]
