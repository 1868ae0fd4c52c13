"""Ring attention on CPU (gloo): the log-sum-exp merge, the ring itself and the DiT with ring parallelism.

Our own ring over torch.distributed point-to-point (batch_isend_irecv), not yunchang's: on CPU its math path
returns a zero LSE and merges wrongly (research/integration.md §6). Ranks are spawned with torch.multiprocessing
and a file:// rendezvous; every rank compares with the single-process result.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from test_sequence_parallel import CASES, _inputs, _model, _rel_err

from engine.parallel.mesh import ParallelContext
from engine.parallel.ring import (
    apply_ring_parallel,
    merge_partials,
    partial_attention,
    ring_attention,
)
from engine.parallel.sequence import pad_sequence

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


def test_a_fully_masked_block_contributes_nothing() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 5, 2, 4, generator=g) for _ in range(3))
    a, lse_a = partial_attention(q, k, v)
    empty, lse_e = partial_attention(q, k, v, torch.zeros(5, dtype=torch.bool))
    assert torch.isinf(lse_e).all() and not empty.any()
    merged, lse = merge_partials(a, lse_a, empty, lse_e)
    assert torch.equal(merged, a) and torch.equal(lse, lse_a)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", world_size=world, rank=rank)
    try:
        g = torch.Generator().manual_seed(3)
        total = 13  # not divisible by 2 or 4: the last shard carries padding that must be masked
        q, k, v = (torch.randn(2, total, 4, 8, generator=g) for _ in range(3))
        padded = [pad_sequence(t, world) for t in (q, k, v)]
        s = padded[0].shape[1] // world
        local = [t[:, rank * s:(rank + 1) * s] for t in padded]
        out = ring_attention(*local, total_tokens=total)
        ctx = ParallelContext(rank, world, 1, world, dist.group.WORLD, torch.device("cpu"))
        model = _model()
        with torch.no_grad():
            refs = {case: model(*_inputs(case)) for case in CASES}
            apply_ring_parallel(model, ctx)
            outs = {case: model(*_inputs(case)) for case in CASES}
        torch.save({"ring": out, "ring_ref": _full(q, k, v)[:, rank * s:(rank + 1) * s][:, :max(0, min(s, total - rank * s))],
                    "refs": refs, "outs": outs, "s": s, "total": total}, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


_RESULTS: dict[int, list[dict]] = {}


def _run(world: int, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if world not in _RESULTS:
        folder = tmp_path_factory.mktemp(f"ring{world}")
        mp.spawn(_worker, args=(world, str(folder / "rendezvous"), str(folder)), nprocs=world, join=True)
        _RESULTS[world] = [torch.load(folder / f"rank{r}.pt") for r in range(world)]
    return _RESULTS[world]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 4])
def test_ring_attention_equals_full_attention(world: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    for rank, result in enumerate(_run(world, tmp_path_factory)):
        real = result["ring_ref"].shape[1]
        got = result["ring"][:, :real]
        assert _rel_err(got, result["ring_ref"]) < REL_TOL, f"rank {rank}: max_rel {_rel_err(got, result['ring_ref']):.2e}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("case", list(CASES))
def test_ring_parallel_dit_matches_single_process(world: int, case: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    for rank, result in enumerate(_run(world, tmp_path_factory)):
        err = _rel_err(result["outs"][case], result["refs"][case])
        print(f"ring world {world} case {case} rank {rank}: max_rel {err:.2e}")
        assert err < REL_TOL, f"rank {rank}: max_rel {err:.2e}"
