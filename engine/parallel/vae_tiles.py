"""Parallel VAE: each rank decodes (encodes) one spatial tile with a halo, the tiles are all-gathered and joined.

As the release does it (SPEC-flashtalk.md §4.2): the latent frame is cut into a ``P_h × P_w`` grid (the
factorisation of the world size that divides the latent and keeps tiles closest to square); every tile is widened
by a halo — 2 latents (16 px) for decode, 8 px (1 latent) for encode — and all tiles have the same size (edge tiles
take their extra context from the inner side), so one ``all_gather`` of equal tensors brings them home. The halo is
cropped after the VAE and the tiles are placed row-major. The VAE's receptive field is wider than the halo, so the
result is close to, not bit-identical with, the whole-frame VAE (measured in the tests); the unchanged ``WanVAE``
runs per tile, causal temporal cache included.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from engine.models.vae import WanVAE

__all__ = ["TileSpan", "decode_tiled", "encode_tiled", "grid_for", "tile_spans"]

SCALE = 8  # pixels per latent, spatially
DECODE_HALO = 2  # latents
ENCODE_HALO = 1  # latents (8 px)


def grid_for(h: int, w: int, world: int) -> tuple[int, int]:
    """``(P_h, P_w)`` with ``P_h·P_w = world`` dividing ``h`` and ``w``, tiles closest to square."""
    options = [(ph, world // ph) for ph in range(1, world + 1)
               if world % ph == 0 and h % ph == 0 and w % (world // ph) == 0]
    if not options:
        raise ValueError(f"a {h}x{w} latent cannot be split into {world} equal tiles; use a world size dividing it")
    return min(options, key=lambda g: (abs(h / g[0] - w / g[1]), g[0]))


@dataclass(frozen=True)
class TileSpan:
    """One axis of a tile: the input range with its halo, and where the owned part sits inside it."""

    start: int  # input range with halo, in latents
    stop: int
    own_start: int  # owned range, in latents
    own_stop: int


def tile_spans(size: int, parts: int, halo: int) -> list[TileSpan]:
    """Equal-size spans: each owns ``size/parts`` and reads ``halo`` more on each inner side (edges: all inward)."""
    own = size // parts
    width = size if parts == 1 else min(size, own + 2 * halo)
    spans = []
    for i in range(parts):
        a, b = i * own, (i + 1) * own
        start = min(max(0, a - halo), size - width)
        spans.append(TileSpan(start, start + width, a, b))
    return spans


def _my_tile(h: int, w: int, world: int, rank: int, halo: int) -> tuple[TileSpan, TileSpan, int, int]:
    ph, pw = grid_for(h, w, world)
    return tile_spans(h, ph, halo)[rank // pw], tile_spans(w, pw, halo)[rank % pw], ph, pw


def _gather(tile: torch.Tensor, group: dist.ProcessGroup | None) -> list[torch.Tensor]:
    world = dist.get_world_size(group) if dist.is_initialized() else 1
    if world == 1:
        return [tile]
    out = [torch.empty_like(tile) for _ in range(world)]
    dist.all_gather(out, tile.contiguous(), group=group)
    return out


def _join(tiles: list[torch.Tensor], ph: int, pw: int) -> torch.Tensor:
    rows = [torch.cat(tiles[r * pw:(r + 1) * pw], dim=-1) for r in range(ph)]
    return torch.cat(rows, dim=-2)


def decode_tiled(vae: WanVAE, z: torch.Tensor, *, rank: int, world: int, group: dist.ProcessGroup | None = None,
                 halo: int = DECODE_HALO) -> torch.Tensor:
    """This rank's share of ``vae.decode(z)``; every rank returns the whole video."""
    if world == 1:
        return vae.decode(z)
    ys, xs, ph, pw = _my_tile(z.shape[-2], z.shape[-1], world, rank, halo)
    video = vae.decode(z[..., ys.start:ys.stop, xs.start:xs.stop])
    owned = video[..., (ys.own_start - ys.start) * SCALE:(ys.own_stop - ys.start) * SCALE,
                  (xs.own_start - xs.start) * SCALE:(xs.own_stop - xs.start) * SCALE]
    return _join(_gather(owned, group), ph, pw)


def encode_tiled(vae: WanVAE, video: torch.Tensor, *, rank: int, world: int, group: dist.ProcessGroup | None = None,
                 halo: int = ENCODE_HALO) -> torch.Tensor:
    """This rank's share of ``vae.encode(video)``; every rank returns the whole latent."""
    if world == 1:
        return vae.encode(video)
    h, w = video.shape[-2] // SCALE, video.shape[-1] // SCALE
    ys, xs, ph, pw = _my_tile(h, w, world, rank, halo)
    latent = vae.encode(video[..., ys.start * SCALE:ys.stop * SCALE, xs.start * SCALE:xs.stop * SCALE])
    owned = latent[..., ys.own_start - ys.start:ys.own_stop - ys.start, xs.own_start - xs.start:xs.own_stop - xs.start]
    return _join(_gather(owned, group), ph, pw)
