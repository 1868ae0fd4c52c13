"""Parallel VAE on CPU (gloo, 2, 3 and 4 ranks): bands of rows with exchanged halos equal the whole-frame VAE.

Real ``torch.distributed`` over gloo, real ``WanVAE`` (random tiny weights): every rank encodes and decodes its
band with the causal temporal cache across several chunks, and the result must equal the single-process VAE to
fp32 rounding. A control run with the halo exchange replaced by zero padding (what tiles without a halo would do)
must be far off, so the check can fail.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine.models.vae import VAEConfig, WanVAE
from engine.parallel.vae import RowBands, apply_parallel_vae, band_rows, remove_parallel_vae


def test_bands_are_balanced_and_contiguous() -> None:
    assert band_rows(96, 4) == [(0, 24), (24, 48), (48, 72), (72, 96)]
    assert band_rows(16, 3) == [(0, 6), (6, 11), (11, 16)]
    with pytest.raises(ValueError, match="parallel_vae=false"):
        band_rows(3, 4)


def _vae() -> WanVAE:
    torch.manual_seed(0)
    return WanVAE(VAEConfig(dim=8)).eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _zero_halo(self: RowBands, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, 0, top, bottom))


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", world_size=world, rank=rank)
    try:
        vae = _vae()
        g = torch.Generator().manual_seed(1)
        z = torch.randn(1, 16, 3, 16, 12, generator=g)
        video = torch.rand(1, 3, 9, 128, 96, generator=g) * 2 - 1
        with torch.no_grad():
            result = {"decode_ref": vae.decode(z), "encode_ref": vae.encode(video)}
            apply_parallel_vae(vae, rank=rank, world=world)
            result["decode"] = vae.decode(z)
            result["encode"] = vae.encode(video)
            original = RowBands.pad
            RowBands.pad = _zero_halo  # type: ignore[method-assign]
            try:
                result["decode_zero_halo"] = vae.decode(z)
            finally:
                RowBands.pad = original  # type: ignore[method-assign]
            remove_parallel_vae(vae)
            result["decode_after_remove"] = vae.decode(z)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_parallel_vae_equals_the_whole_frame_vae(world: int, tmp_path: Path) -> None:
    mp.spawn(_worker, args=(world, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for r in results[1:]:  # every rank ends with the same whole frame
        assert torch.equal(r["decode"], results[0]["decode"]) and torch.equal(r["encode"], results[0]["encode"])
    res = results[0]
    assert res["decode"].shape == res["decode_ref"].shape == (1, 3, 9, 128, 96)
    assert res["encode"].shape == res["encode_ref"].shape == (1, 16, 3, 16, 12)
    dec, enc = _rel(res["decode"], res["decode_ref"]), _rel(res["encode"], res["encode_ref"])
    zero = _rel(res["decode_zero_halo"], res["decode_ref"])
    print(f"parallel VAE, {world} ranks: decode max_rel {dec:.1e}, encode max_rel {enc:.1e}; "
          f"zero halo instead of exchange: {zero:.1e}")
    assert dec < 1e-5 and enc < 1e-5
    assert zero > 1e-2  # the exchanged rows matter
    assert torch.equal(res["decode_after_remove"], res["decode_ref"])
