"""FlashHead under Ulysses (x Ring) sequence parallelism over gloo equals one process.

The same seams as FlashTalk's (``engine.parallel.usp``): FlashHead's frame-local audio cross-attention runs on the
rank's token range like FlashTalk's audio branch. FlashHead has 12 heads, so the Ulysses degrees are 2, 3, 4, 6
and 12; here a tiny random FlashHead DiT with 12 heads runs on 2 ranks (Ulysses 2), 3 ranks (Ulysses 3) and 4
ranks (Ulysses 2 x Ring 2), on token counts that divide the world and on ones that need padding.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from engine.models.transformer import DiTConfig, WanAudioTransformer
from engine.parallel.mesh import destroy_parallel, init_parallel, ulysses_degree_for
from engine.parallel.usp import apply_sequence_parallel

TINY_FH = DiTConfig(variant="flashhead", in_dim=32, dim=96, ffn_dim=128, num_heads=12, num_layers=2, text_dim=16,
                    intermediate_dim=8, output_dim=96, context_tokens=4)
#: name -> (latent frames, latent height, latent width); tokens = frames * h/2 * w/2.
CASES = {"even": (3, 4, 8), "padded": (3, 6, 2), "cut_frames": (2, 6, 6)}  # 24 / 9 / 18 tokens
#: world size -> Ulysses degree (the rest is the ring).
WORLDS = {2: 2, 3: 3, 4: 2}
REL_TOL = 1e-5


def test_ulysses_degrees_of_twelve_heads() -> None:
    assert [ulysses_degree_for(w, 12) for w in (2, 3, 4, 6, 12)] == [2, 3, 4, 6, 12]
    assert ulysses_degree_for(8, 12) == 4  # 8 GPUs: Ulysses 4 x Ring 2


def _model() -> WanAudioTransformer:
    torch.manual_seed(0)
    return WanAudioTransformer(TINY_FH).eval()


def _inputs(case: str) -> tuple[torch.Tensor | None, ...]:
    frames, h, w = CASES[case]
    g = torch.Generator().manual_seed(sum(map(ord, case)))
    x = torch.randn(1, 16, frames, h, w, generator=g)
    y = torch.randn(1, 16, frames, h, w, generator=g)
    audio = torch.randn(1, 1 + 4 * (frames - 1), 5, 12, 768, generator=g)
    return x, torch.tensor([624.0]), None, None, y, audio


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    ctx = init_parallel(world, rank, "gloo", f"file://{init_file}", timeout_s=60.0, num_heads=12,
                        ulysses_degree=WORLDS[world])
    try:
        model = _model()
        with torch.no_grad():
            refs = {case: model(*_inputs(case)) for case in CASES}
            apply_sequence_parallel(model, ctx, sp_backend="native")
            outs = {case: model(*_inputs(case)) for case in CASES}
        torch.save({"refs": refs, "outs": outs, "degrees": (ctx.ulysses_degree, ctx.ring_degree)},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        destroy_parallel(ctx)


_RESULTS: dict[int, list[dict]] = {}


def _run(world: int, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if world not in _RESULTS:
        folder = tmp_path_factory.mktemp(f"fhsp{world}")
        mp.spawn(_worker, args=(world, str(folder / "rendezvous"), str(folder)), nprocs=world, join=True)
        _RESULTS[world] = [torch.load(folder / f"rank{r}.pt") for r in range(world)]
    return _RESULTS[world]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("world", list(WORLDS))
def test_flashhead_sequence_parallel_matches_single_process(world: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    results = _run(world, tmp_path_factory)
    assert results[0]["degrees"] == (WORLDS[world], world // WORLDS[world])
    for rank, result in enumerate(results):
        for case in CASES:
            ref, out = result["refs"][case], result["outs"][case]
            err = float((out - ref).abs().max() / ref.abs().max())
            assert out.shape == ref.shape and err <= REL_TOL, f"rank {rank}, {case}: relative error {err:.2e}"
            assert torch.equal(out, results[0]["outs"][case]), f"rank {rank} disagrees with rank 0 on {case}"
