"""Ring and Ulysses × Ring attention on CPU (gloo): the log-sum-exp merge, the ring itself, and the DiT with pure
ring (2 and 4 ranks) and mixed Ulysses 2 × Ring 2 (4 ranks) sequence parallelism.

Our own ring over torch.distributed point-to-point (batch_isend_irecv) and our own all-to-all, not yunchang's or
xfuser's (xfuser cannot be imported without a GPU; yunchang's CPU math path returns a zero LSE and merges wrongly,
research/integration.md §6). Ranks are spawned with torch.multiprocessing and a file:// rendezvous; every rank
compares with the single-process result.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from test_sequence_parallel import CASES, _inputs, _model, _rel_err

from engine.ops.attention import attention_with_lse
from engine.parallel.mesh import destroy_parallel, init_parallel, resolve_degrees
from engine.parallel.ring import merge_partials, partial_attention, ring_attention
from engine.parallel.sequence import pad_sequence
from engine.parallel.usp import apply_sequence_parallel

REL_TOL = 1e-5


def _full(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def test_merging_two_key_halves_equals_full_attention() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 7, 3, 8, generator=g) for _ in range(3))
    a, lse_a = partial_attention(q, k[:, :4], v[:, :4])
    b, lse_b = partial_attention(q, k[:, 4:], v[:, 4:])
    merged, _ = merge_partials(a, lse_a, b, lse_b)
    assert _rel_err(merged, _full(q, k, v)) < 1e-6
    naive = (a + b) / 2  # what a wrong (LSE-free) merge gives: must be far off, or this test proves nothing
    assert _rel_err(naive, _full(q, k, v)) > 1e-2


def test_a_block_of_padding_contributes_nothing() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 5, 2, 4, generator=g) for _ in range(3))
    a, lse_a = partial_attention(q, k, v)
    empty, lse_e = partial_attention(q, k, v, 0)
    assert torch.isinf(lse_e).all() and not empty.any()
    merged, lse = merge_partials(a, lse_a, empty, lse_e)
    assert torch.equal(merged, a) and torch.equal(lse, lse_a)
    prefix, _ = partial_attention(q, k, v, 3)  # padded tail keys left out
    assert _rel_err(prefix, _full(q, k[:, :3], v[:, :3])) < 1e-6


def test_flash_kernel_lse_matches_the_math_path() -> None:
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 9, 3, 8, generator=g) for _ in range(3))
    out, lse = attention_with_lse(q, k, v)  # PyTorch's CPU flash kernel
    ref_out, ref_lse = attention_with_lse(q, k, v, backend="math")
    assert _rel_err(out, ref_out) < 1e-5 and float((lse - ref_lse).abs().max()) < 1e-5
    assert _rel_err(out, _full(q, k, v)) < 1e-5


def test_degrees_follow_the_release_or_the_config() -> None:
    assert [resolve_degrees(w, 40) for w in (1, 2, 4, 6, 8, 16)] == [(1, 1), (2, 1), (4, 1), (2, 3), (8, 1), (8, 2)]
    assert resolve_degrees(8, 40, ulysses=2) == (2, 4) and resolve_degrees(8, 40, ring=8) == (1, 8)
    assert resolve_degrees(3, 4) == (1, 3)  # heads share no factor with the world: pure ring
    with pytest.raises(ValueError, match="must equal world_size"):
        resolve_degrees(8, 40, ulysses=2, ring=2)
    with pytest.raises(ValueError, match="does not divide"):
        resolve_degrees(6, 4, ulysses=3)


def _worker(rank: int, world: int, ulysses: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    ctx = init_parallel(world, rank, "gloo", f"file://{init_file}", 60.0, num_heads=4, ulysses_degree=ulysses)
    try:
        g = torch.Generator().manual_seed(3)
        total = 13  # not divisible by 2 or 4: the last shard carries padding that must be masked
        q, k, v = (torch.randn(2, total, 4, 8, generator=g) for _ in range(3))
        padded = [pad_sequence(t, world) for t in (q, k, v)]
        s = padded[0].shape[1] // world
        local = [t[:, rank * s:(rank + 1) * s] for t in padded]
        out = ring_attention(*local, total_tokens=total) if ulysses == 1 else None
        model = _model()
        with torch.no_grad():
            refs = {case: model(*_inputs(case)) for case in CASES}
            apply_sequence_parallel(model, ctx)
            outs = {case: model(*_inputs(case)) for case in CASES}
        torch.save({"ring": out, "ring_ref": _full(q, k, v)[:, rank * s:(rank + 1) * s][:, :max(0, min(s, total - rank * s))],
                    "refs": refs, "outs": outs, "s": s, "total": total,
                    "mesh": (ctx.ulysses_degree, ctx.ring_degree)}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        destroy_parallel(ctx)


_RESULTS: dict[tuple[int, int], list[dict]] = {}


def _run(world: int, tmp_path_factory: pytest.TempPathFactory, ulysses: int = 1) -> list[dict]:
    if (world, ulysses) not in _RESULTS:
        folder = tmp_path_factory.mktemp(f"ring{world}u{ulysses}")
        mp.spawn(_worker, args=(world, ulysses, str(folder / "rendezvous"), str(folder)), nprocs=world, join=True)
        _RESULTS[world, ulysses] = [torch.load(folder / f"rank{r}.pt") for r in range(world)]
    return _RESULTS[world, ulysses]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 4])
def test_ring_attention_equals_full_attention(world: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    for rank, result in enumerate(_run(world, tmp_path_factory)):
        real = result["ring_ref"].shape[1]
        got = result["ring"][:, :real]
        assert _rel_err(got, result["ring_ref"]) < REL_TOL, f"rank {rank}: max_rel {_rel_err(got, result['ring_ref']):.2e}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("world", "ulysses"), [(2, 1), (4, 1), (4, 2)], ids=["ring2", "ring4", "ulysses2xring2"])
@pytest.mark.parametrize("case", list(CASES))
def test_sequence_parallel_dit_matches_single_process(world: int, ulysses: int, case: str,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    results = _run(world, tmp_path_factory, ulysses)
    for rank, result in enumerate(results):
        err = _rel_err(result["outs"][case], result["refs"][case])
        print(f"world {world} (ulysses {ulysses} x ring {world // ulysses}) case {case} rank {rank}: max_rel {err:.2e}")
        assert err < REL_TOL, f"rank {rank}: max_rel {err:.2e}"
    assert all(r["mesh"] == (ulysses, world // ulysses) for r in results)
