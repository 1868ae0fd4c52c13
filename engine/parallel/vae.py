"""Parallel VAE: every rank encodes/decodes one band of image rows, exchanging halo rows layer by layer.

The release (SPEC-flashtalk.md §4.2) cuts the frame into overlapping tiles, runs the whole VAE on each and crops;
its halo (2 latents) is narrower than the VAE's receptive field and the bottleneck attention sees only its tile,
so its result differs from the whole-frame VAE at the seams (measured here earlier: mean abs 1.5e-2, max 0.3 of
the range with a random tiny VAE). This module keeps the split exact instead:

* the frame is split into contiguous bands of whole latent rows (balanced; a rank may hold one row more);
* every layer that reads neighbouring rows -- the 3x3(x3) convolutions, the stride-2 down-sampler, the 3x3 conv
  after nearest up-sampling -- gets exactly those rows from the bands above and below (point-to-point, before
  the layer) instead of zeros; the frame's top and bottom edges keep the zero padding;
* the per-frame bottleneck attention keeps its band's queries and attends to every band's keys and values
  (one all-gather of K/V at the lowest resolution);
* the RMS norms, SiLUs, 1x1 convolutions and the causal temporal cache are per pixel or per band and need
  nothing; the encoder's/decoder's output bands are all-gathered so every rank holds the whole result.

So the split network computes what the whole-frame network computes, up to the summation order of the
convolutions (fp32: ~1e-6 relative). It is layered on ``WanVAE`` through its ``rows`` seams
(:class:`engine.models.vae.RowSplit`); the modules' forwards are unchanged for a single process.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from engine.models.vae import AttentionBlock, CausalConv3d, Decoder3d, Downsample, Encoder3d, Upsample, WanVAE

__all__ = ["RowBands", "apply_parallel_vae", "band_rows", "remove_parallel_vae"]

log = logging.getLogger(__name__)

_SEAMED = (CausalConv3d, AttentionBlock, Downsample, Upsample, Encoder3d, Decoder3d)


def band_rows(latent_rows: int, world: int) -> list[tuple[int, int]]:
    """Each rank's ``[start, stop)`` of ``latent_rows`` rows: contiguous, the first ``rows % world`` one longer."""
    if latent_rows < world:
        raise ValueError(f"a frame of {latent_rows} latent rows cannot be split over {world} ranks (one row each at "
                         f"least); set engine.flashtalk.parallel_vae=false or use a taller frame")
    base, extra = divmod(latent_rows, world)
    bounds, start = [], 0
    for rank in range(world):
        stop = start + base + (rank < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


@dataclass
class RowBands:
    """This rank's :class:`engine.models.vae.RowSplit` over ``group`` (every rank of the group holds one band)."""

    rank: int
    world: int
    group: dist.ProcessGroup | None = None
    _bands: list[tuple[int, int]] | None = None

    def split(self, x: torch.Tensor, rows_per_latent: int) -> torch.Tensor:
        height = x.shape[-2]
        if height % rows_per_latent:
            raise ValueError(f"a frame of {height} rows is not whole latent rows of {rows_per_latent}")
        self._bands = band_rows(height // rows_per_latent, self.world)
        start, stop = self._bands[self.rank]
        return x[..., start * rows_per_latent:stop * rows_per_latent, :]

    def _rows_per_latent(self, x: torch.Tensor) -> int:
        if self._bands is None:
            raise RuntimeError("RowBands.gather/pad ran before split(); call the encoder or decoder")
        start, stop = self._bands[self.rank]
        scale, rest = divmod(x.shape[-2], stop - start)
        if rest:
            raise RuntimeError(f"a band of {x.shape[-2]} rows does not match this rank's {stop - start} latent rows")
        return scale

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        scale = self._rows_per_latent(x)
        assert self._bands is not None
        sizes = [(b - a) * scale for a, b in self._bands]
        tallest = max(sizes)
        x = x.contiguous()
        padded = torch.nn.functional.pad(x, (0, 0, 0, tallest - x.shape[-2])) if x.shape[-2] < tallest else x
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([part[..., :size, :] for part, size in zip(parts, sizes)], dim=-2)

    def _peer(self, rank: int) -> int:
        return dist.get_global_rank(self.group, rank) if self.group is not None else rank

    def pad(self, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        if x.shape[-2] < max(top, bottom):
            raise RuntimeError(f"a band of {x.shape[-2]} rows cannot lend {max(top, bottom)} halo rows")
        x = x.contiguous()
        above = self.rank > 0
        below = self.rank < self.world - 1
        shape = list(x.shape)
        from_above = x.new_zeros(shape[:-2] + [top, shape[-1]])
        from_below = x.new_zeros(shape[:-2] + [bottom, shape[-1]])
        ops = []
        if above and top:
            ops.append(dist.P2POp(dist.irecv, from_above, self._peer(self.rank - 1), self.group))
        if below and top:
            ops.append(dist.P2POp(dist.isend, x[..., -top:, :].contiguous(), self._peer(self.rank + 1), self.group))
        if below and bottom:
            ops.append(dist.P2POp(dist.irecv, from_below, self._peer(self.rank + 1), self.group))
        if above and bottom:
            ops.append(dist.P2POp(dist.isend, x[..., :bottom, :].contiguous(), self._peer(self.rank - 1), self.group))
        if ops:
            for request in dist.batch_isend_irecv(ops):
                request.wait()
        return torch.cat([from_above, x, from_below], dim=-2)


def _seamed_modules(vae: WanVAE) -> list[nn.Module]:
    return [m for m in vae.modules() if isinstance(m, _SEAMED)]


def apply_parallel_vae(vae: WanVAE, *, rank: int, world: int,
                       group: dist.ProcessGroup | None = None) -> RowBands | None:
    """Split ``vae`` across ``world`` ranks in place (every rank calls it); None (unchanged) for one rank."""
    if world == 1:
        return None
    bands = RowBands(rank, world, group)
    for module in _seamed_modules(vae):
        module.rows = bands
    log.info("parallel VAE: rank %d of %d holds one band of rows", rank, world)
    return bands


def remove_parallel_vae(vae: WanVAE) -> None:
    """Undo :func:`apply_parallel_vae`: the whole frame runs in this process again."""
    for module in _seamed_modules(vae):
        module.rows = None
