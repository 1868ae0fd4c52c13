"""Wan2.1 causal 3-D VAE (``Wan2.1_VAE.pth``), written around an explicit causal cache.

The network is the released one (SPEC-flashtalk.md §4.1): causal 3x3x3 convolutions, RMS norms over channels,
a single-head per-frame attention at the bottleneck, spatial stride 8 and temporal stride 4. Its state-dict keys
are exactly those of the released file (``encoder.*``, ``conv1.*``, ``conv2.*``, ``decoder.*``), so the file
loads strictly and copy-free (see ``engine.loading.vae``).

Time is processed causally in chunks, exactly as the release does:

* encode: frame 0 alone, then chunks of 4 frames -> one latent frame per chunk;
* decode: one latent frame at a time -> 1 frame for latent 0, then 4 frames per latent.

Everything a chunk needs from the chunks before it lives in one :class:`CausalConvCache`, created fresh for each
encode/decode call and passed down explicitly. The modules hold no state between calls, so the same weights can
serve several streams (or spatial tiles of a parallel VAE) at once, each with its own cache.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CACHE_T",
    "RowSplit",
    "LATENT_MEAN",
    "LATENT_STD",
    "CausalConv3d",
    "CausalConvCache",
    "VAEConfig",
    "WanVAE",
    "encode_chunk_bounds",
]

#: Frames of input history a causal 3x3x3 convolution keeps between chunks (its temporal receptive field - 1).
CACHE_T = 2

#: Per-channel statistics of the released latent space (official ``WanVAE`` wrapper, SPEC §4.1).
LATENT_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
LATENT_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)

#: Frames per encoder chunk after the first (single) frame: one latent frame per chunk.
ENCODE_CHUNK = 4


@dataclass(frozen=True)
class VAEConfig:
    """Constructor arguments of the Wan2.1 VAE; the defaults are the released ``Wan2.1_VAE.pth``."""

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # Accept lists (JSON) but store tuples so the config stays hashable and immutable.
        for name in ("dim_mult", "attn_scales", "temporal_downsample"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "temporal_downsample", tuple(bool(v) for v in self.temporal_downsample))
        if self.dim <= 0 or self.z_dim <= 0 or self.num_res_blocks <= 0:
            raise ValueError(f"VAEConfig needs positive dim, z_dim and num_res_blocks, got {self}")
        if len(self.dim_mult) < 2:
            raise ValueError(f"VAEConfig.dim_mult needs at least 2 stages, got {self.dim_mult}")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"VAEConfig.temporal_downsample needs one flag per down-sampling step "
                f"({len(self.dim_mult) - 1}), got {list(self.temporal_downsample)}"
            )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "VAEConfig":
        """Build from the official constructor arguments (``vae_config.json``).

        Accepts the official spelling ``temperal_downsample``; ignores ``_``-prefixed metadata such as
        ``_class_name``; rejects any other unknown key.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key.startswith("_"):
                continue
            name = "temporal_downsample" if key == "temperal_downsample" else key
            if name not in fields:
                raise ValueError(f"unknown VAE config key {key!r}; known keys: {sorted(fields)}")
            kwargs[name] = value
        return cls(**kwargs)

    @property
    def temporal_upsample(self) -> tuple[bool, ...]:
        """The decoder's temporal up-sampling flags: the encoder's, reversed."""
        return self.temporal_downsample[::-1]

    @property
    def temporal_factor(self) -> int:
        """Pixel frames per latent frame (after the first): 4 for the release."""
        return 2 ** sum(self.temporal_downsample)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along height and width: 8 for the release."""
        return 2 ** (len(self.dim_mult) - 1)


def encode_chunk_bounds(num_frames: int, chunk: int = ENCODE_CHUNK) -> list[tuple[int, int]]:
    """Frame ranges ``[start, end)`` the encoder sees, in order: ``(0, 1)``, then ``chunk`` frames at a time.

    Frames after the last whole chunk are not encoded (as in the release): ``T`` frames give ``(T-1)//4 + 1``
    latent frames.
    """
    if num_frames < 1:
        raise ValueError("cannot encode a video with no frames")
    return [(0, 1)] + [(1 + chunk * i, 1 + chunk * (i + 1)) for i in range((num_frames - 1) // chunk)]


class RowSplit(Protocol):
    """The seam of a spatially parallel VAE (``engine.parallel.vae``): each rank holds a band of image rows.

    Every layer that looks at neighbouring rows asks the split for them instead of zero-padding, and the
    bottleneck attention asks for every rank's keys and values, so the split network computes exactly what the
    whole-frame network computes. ``None`` on a module (the default) means the whole frame is here.
    """

    def split(self, x: torch.Tensor, rows_per_latent: int) -> torch.Tensor:
        """This rank's band of a whole-frame ``[..., H, W]`` tensor (``H = rows_per_latent * latent rows``)."""
        ...

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's band of ``[..., h, W]``, joined top to bottom (the whole frame, on every rank)."""
        ...

    def pad(self, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        """``x`` with ``top`` rows of the band above and ``bottom`` rows of the band below (zeros at the edges)."""
        ...


class CausalConvCache:
    """The history one encode or decode pass carries from chunk to chunk.

    For each causal convolution it keeps the last ``CACHE_T`` frames of that convolution's input; for each
    temporal down-sampler the last frame it saw; and which temporal up-samplers have already seen their first
    chunk (the first chunk is an image: it is neither up-sampled nor remembered in time). Entries are keyed by
    module, so one cache serves one network; a fresh cache starts a new clip.

    The cache is the only state of the VAE: the modules read and write it and keep nothing themselves.
    """

    __slots__ = ("_frames", "_seen")

    def __init__(self) -> None:
        self._frames: dict[nn.Module, torch.Tensor] = {}
        self._seen: set[nn.Module] = set()

    def past(self, module: nn.Module) -> torch.Tensor | None:
        """Frames remembered for ``module`` (``[B, C, <=keep, H, W]``), or None before its first chunk."""
        return self._frames.get(module)

    def remember(self, module: nn.Module, frames: torch.Tensor, keep: int) -> None:
        """Append ``frames`` (``[B, C, T, H, W]``) to ``module``'s history and keep its last ``keep`` frames."""
        recent = frames[:, :, -keep:]
        past = self._frames.get(module)
        if recent.shape[2] < keep and past is not None:
            recent = torch.cat([past[:, :, recent.shape[2] - keep:], recent], dim=2)
        else:
            recent = recent.clone()  # do not pin the whole chunk's storage
        self._frames[module] = recent

    def seen(self, module: nn.Module) -> bool:
        """Whether ``module`` has been marked by :meth:`mark_seen` in this pass."""
        return module in self._seen

    def mark_seen(self, module: nn.Module) -> None:
        self._seen.add(module)

    def clear(self) -> None:
        """Forget everything: the next chunk starts a new clip."""
        self._frames.clear()
        self._seen.clear()

    def __len__(self) -> int:
        return len(self._frames)

    def nbytes(self) -> int:
        """Memory held by the remembered frames."""
        return sum(t.numel() * t.element_size() for t in self._frames.values())


# ----------------------------------------------------------------------------------------------------------------
# Building blocks. Every block takes ``(x, cache)``; ``x`` is ``[B, C, T, H, W]``.


def _frames_as_images(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T, H, W]`` -> ``[B*T, C, H, W]`` (frame-major), for per-frame 2-D layers."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _images_as_frames(x: torch.Tensor, b: int) -> torch.Tensor:
    """Inverse of :func:`_frames_as_images`."""
    bt, c, h, w = x.shape
    return x.reshape(b, bt // b, c, h, w).permute(0, 2, 1, 3, 4)


class CausalConv3d(nn.Conv3d):
    """3-D convolution that never looks at future frames.

    All temporal padding (``2 * padding_t`` frames) goes in front; spatial padding is symmetric. With a cache,
    the remembered frames of the previous chunk replace that many zero frames, so running a clip chunk by chunk
    gives the same result as running it whole.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)
        self.rows: RowSplit | None = None

    def forward(self, x: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:  # type: ignore[override]
        front = self.time_pad
        if cache is not None and front > 0:
            past = cache.past(self)
            cache.remember(self, x, keep=CACHE_T)
            if past is not None:
                past = past[:, :, -front:]
                x = torch.cat([past, x], dim=2)
                front -= past.shape[2]
        pad = self.space_pad
        if self.rows is not None and pad[2]:  # rows above/below come from the neighbouring bands
            x = self.rows.pad(x, pad[2], pad[3])
            pad = (pad[0], pad[1], 0, 0)
        if front or any(pad):
            x = F.pad(x, (*pad, front, 0))
        return super().forward(x)


class RMSNorm(nn.Module):
    """L2-normalise over channels (dim 1), times sqrt(C) and a learned per-channel ``gamma`` (no bias)."""

    def __init__(self, dim: int, spatial_dims: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *(1,) * spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    """RMSNorm, SiLU, causal conv 3^3, RMSNorm, SiLU, dropout, causal conv 3^3; 1^3 shortcut if channels change."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        # Sequential indices are the release's state-dict keys (residual.0/2/3/6).
        self.residual = nn.Sequential(
            RMSNorm(in_dim, 3),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, 3),
            nn.SiLU(),
            nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut: nn.Module = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        norm1, act1, conv1, norm2, act2, drop, conv2 = self.residual
        h = conv1(act1(norm1(x)), cache)
        h = conv2(drop(act2(norm2(h))), cache)
        return h + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions of each frame (no temporal mixing, so no cache)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, 2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.rows: RowSplit | None = None

    def forward(self, x: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(_frames_as_images(x))
        qkv = self.to_qkv(y)  # [B*T, 3C, H, W]
        q, kv = qkv[:, :c], qkv[:, c:]
        if self.rows is not None:  # this band's queries attend to every band's keys (the whole frame)
            kv = self.rows.gather(kv)
        q = q.reshape(b * t, 1, c, h * w).transpose(-1, -2)  # [B*T, 1, h*W, C]
        k, v = kv.reshape(b * t, 1, 2 * c, -1).transpose(-1, -2).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w)
        return _images_as_frames(self.proj(y), b) + x


class Downsample(nn.Module):
    """Halve H and W (pad right/bottom by 1, 3x3 conv stride 2, per frame); optionally halve time.

    The temporal step (``time_conv``, kernel 3 stride 2, no padding) runs on ``[last frame of the previous
    chunk, this chunk]``. The first chunk (frame 0) skips it and is only remembered.
    """

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
        self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0)) if temporal else None
        self.rows: RowSplit | None = None

    def _halve(self, images: torch.Tensor) -> torch.Tensor:
        if self.rows is None:
            return self.resample(images)
        # The bottom padding row is the first row of the band below (zeros only at the frame's bottom edge).
        padded = self.rows.pad(F.pad(images, (0, 1, 0, 0)), 0, 1)
        return self.resample[1](padded)

    def forward(self, x: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        x = _images_as_frames(self._halve(_frames_as_images(x)), x.shape[0])
        if self.time_conv is None:
            return x
        if cache is None:
            raise ValueError("a temporal Downsample needs a CausalConvCache (the encoder runs chunk by chunk)")
        past = cache.past(self)
        cache.remember(self, x, keep=1)
        if past is None:
            return x
        return self.time_conv(torch.cat([past, x], dim=2))


class Upsample(nn.Module):
    """Optionally double time, then double H and W (nearest-exact, per frame) and halve the channels (3x3 conv).

    The temporal step is a causal conv (kernel 3) from C to 2C channels whose two halves become two consecutive
    frames. The first chunk (latent frame 0) is an image: it is not doubled and leaves no temporal history.
    """

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(
            nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
            nn.Conv2d(dim, dim // 2, 3, padding=1),
        )
        self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0)) if temporal else None
        self.rows: RowSplit | None = None

    def _double(self, images: torch.Tensor) -> torch.Tensor:
        upsample, conv = self.resample
        if self.rows is None:
            return conv(upsample(images))
        padded = self.rows.pad(upsample(images), 1, 1)  # the 3x3 conv's rows above/below from the neighbours
        return F.conv2d(padded, conv.weight, conv.bias, padding=(0, 1))

    def forward(self, x: torch.Tensor, cache: CausalConvCache | None = None) -> torch.Tensor:
        b = x.shape[0]
        if self.time_conv is not None:
            if cache is None:
                raise ValueError("a temporal Upsample needs a CausalConvCache (the decoder runs frame by frame)")
            if cache.seen(self):
                _, c, t, h, w = x.shape
                y = self.time_conv(x, cache)  # [B, 2C, T, H, W]; channel half i -> frame 2t+i
                x = y.reshape(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
            else:
                cache.mark_seen(self)
        return _images_as_frames(self._double(_frames_as_images(x)), b)


def _run(blocks: nn.Sequential, x: torch.Tensor, cache: CausalConvCache | None) -> torch.Tensor:
    for block in blocks:
        x = block(x, cache)
    return x


def _middle(width: int, dropout: float) -> nn.Sequential:
    """The bottleneck both towers share: residual, attention, residual (keys ``middle.0-2``)."""
    return nn.Sequential(ResidualBlock(width, width, dropout), AttentionBlock(width), ResidualBlock(width, width, dropout))


def _head(width: int, out_channels: int) -> nn.Sequential:
    """Norm, SiLU, 3x3x3 causal conv (keys ``head.0``, ``head.2``)."""
    return nn.Sequential(RMSNorm(width, 3), nn.SiLU(), CausalConv3d(width, out_channels, 3, padding=1))


def _run_tower(rows: RowSplit | None, rows_per_latent: int, x: torch.Tensor, cache: CausalConvCache,
               conv1: nn.Module, stages: tuple[nn.Sequential, ...], head: nn.Sequential) -> torch.Tensor:
    """An encoder's or decoder's forward: ``conv1``, the stages, the head; with ``rows`` set, this rank runs
    its band of rows (whole latent rows) and the bands are gathered at the end."""
    if rows is not None:
        x = rows.split(x, rows_per_latent)
    x = conv1(x, cache)
    for stage in stages:
        x = _run(stage, x, cache)
    norm, act, conv = head
    x = conv(act(norm(x)), cache)
    return x if rows is None else rows.gather(x)


class Encoder3d(nn.Module):
    """Pixels ``[B, 3, T, H, W]`` -> ``[B, out_channels, T', H/8, W/8]`` (one chunk at a time)."""

    def __init__(self, cfg: VAEConfig, out_channels: int) -> None:
        super().__init__()
        dims = [cfg.dim * m for m in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)

        blocks: list[nn.Module] = []
        scale = 1.0
        last = len(cfg.dim_mult) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                if scale in cfg.attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != last:
                blocks.append(Downsample(out_dim, temporal=cfg.temporal_downsample[i]))
                scale /= 2.0
        self.downsamples = nn.Sequential(*blocks)

        width = dims[-1]
        self.middle = _middle(width, cfg.dropout)
        self.head = _head(width, out_channels)
        self.spatial_factor = cfg.spatial_factor
        self.rows: RowSplit | None = None

    def forward(self, x: torch.Tensor, cache: CausalConvCache) -> torch.Tensor:
        # A band of pixel rows is whole latent rows: spatial_factor pixel rows per latent row.
        return _run_tower(self.rows, self.spatial_factor, x, cache, self.conv1, (self.downsamples, self.middle),
                          self.head)


class Decoder3d(nn.Module):
    """Latents ``[B, z_dim, T, h, w]`` -> pixels ``[B, 3, T', 8h, 8w]`` (one chunk at a time, unclamped)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        mults = cfg.dim_mult
        dims = [cfg.dim * m for m in (mults[-1], *mults[::-1])]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0], cfg.dropout)

        blocks: list[nn.Module] = []
        scale = 1.0 / 2 ** (len(mults) - 2)
        last = len(mults) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # every up-sampler halves the channels
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                if scale in cfg.attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != last:
                blocks.append(Upsample(out_dim, temporal=cfg.temporal_upsample[i]))
                scale *= 2.0
        self.upsamples = nn.Sequential(*blocks)

        self.head = _head(dims[-1], 3)
        self.rows: RowSplit | None = None

    def forward(self, x: torch.Tensor, cache: CausalConvCache) -> torch.Tensor:
        return _run_tower(self.rows, 1, x, cache, self.conv1, (self.middle, self.upsamples), self.head)


class WanVAE(nn.Module):
    """The Wan2.1 VAE with the official wrapper's latent normalisation.

    ``encode(video [B,3,T,H,W] in [-1,1]) -> [B, z_dim, (T-1)//4+1, H//8, W//8]``, normalised as
    ``(mu - mean) * (1/std)``; ``decode(z [B, z_dim, T', h, w]) -> [B, 3, 4(T'-1)+1, 8h, 8w]`` clamped to [-1, 1].
    Inputs are cast to the weights' dtype; outputs come in that dtype. Each call is an independent clip.

    Lower level, for streaming and tiled (parallel) use: :meth:`new_cache`, :meth:`encode_chunk`,
    :meth:`decode_chunk`, :meth:`iter_decode`.
    """

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or VAEConfig()
        # Attribute order = the release's key order: encoder, conv1, conv2, decoder.
        self.encoder = Encoder3d(cfg, 2 * cfg.z_dim)
        self.conv1 = CausalConv3d(2 * cfg.z_dim, 2 * cfg.z_dim, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)
        # Not in the checkpoint; rebuilt by reset_latent_stats() after loading onto the meta device.
        self.register_buffer("latent_mean", torch.empty(cfg.z_dim), persistent=False)
        self.register_buffer("latent_inv_std", torch.empty(cfg.z_dim), persistent=False)
        if self.conv1.weight.device.type != "meta":
            self.reset_latent_stats()

    def reset_latent_stats(self) -> None:
        """(Re)build the latent mean and 1/std on the weights' device and in their dtype.

        Like the official wrapper, ``1/std`` is computed in that dtype (so in bf16 it is bf16-rounded).
        """
        z = self.config.z_dim
        if z != len(LATENT_MEAN):
            raise ValueError(f"the released latent statistics have {len(LATENT_MEAN)} channels, this VAE has {z}")
        weight = self.conv1.weight
        self.latent_mean = torch.tensor(LATENT_MEAN, dtype=weight.dtype, device=weight.device)
        self.latent_inv_std = 1.0 / torch.tensor(LATENT_STD, dtype=weight.dtype, device=weight.device)

    # -- latent normalisation ------------------------------------------------------------------------------
    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1, 1)
        return (mu - self.latent_mean.view(shape)) * self.latent_inv_std.view(shape)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1, 1)
        return z / self.latent_inv_std.view(shape) + self.latent_mean.view(shape)

    # -- chunk level ---------------------------------------------------------------------------------------
    @staticmethod
    def new_cache() -> CausalConvCache:
        """A fresh cache: the next chunk passed with it starts a new clip."""
        return CausalConvCache()

    def encode_features(self, frames: torch.Tensor, cache: CausalConvCache) -> torch.Tensor:
        """Encoder output (before ``conv1``) for one chunk: frame 0 of a clip alone, then 4 frames at a time."""
        return self.encoder(frames.to(self.conv1.weight.dtype), cache)

    def encode_chunk(self, frames: torch.Tensor, cache: CausalConvCache) -> torch.Tensor:
        """Normalised latent of one chunk ``[B, 3, t, H, W]``: a clip's frame 0 alone (fresh cache), then
        chunks of 4 frames (or any multiple of 4) -> ``t // 4`` latent frames (see :func:`encode_chunk_bounds`)."""
        t, step = frames.shape[2], self.config.temporal_factor
        if len(cache) == 0 and t != 1:
            raise ValueError(f"a clip's first encoder chunk is its frame 0 alone, got {t} frames with a fresh cache")
        if len(cache) > 0 and (t == 0 or t % step):
            raise ValueError(f"encoder chunks after frame 0 hold a multiple of {step} frames, got {t}")
        mu = self.conv1(self.encode_features(frames, cache))[:, : self.config.z_dim]
        return self.normalize(mu)

    def decode_chunk(self, z: torch.Tensor, cache: CausalConvCache) -> torch.Tensor:
        """Clamped pixels of normalised latent frames ``z [B, z_dim, t, h, w]``, decoded one frame at a time."""
        x = self.conv2(self.denormalize(z.to(self.conv2.weight.dtype)))
        frames = [self.decoder(x[:, :, i : i + 1], cache) for i in range(x.shape[2])]
        return torch.cat(frames, dim=2).clamp_(-1.0, 1.0)

    def iter_decode(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        """Decode a clip latent by latent, yielding clamped pixel frames as soon as each is ready
        (``[B, 3, 1, H, W]`` for latent 0, then ``[B, 3, 4, H, W]``)."""
        cache = self.new_cache()
        x = self.conv2(self.denormalize(z.to(self.conv2.weight.dtype)))
        for i in range(x.shape[2]):
            yield self.decoder(x[:, :, i : i + 1], cache).clamp_(-1.0, 1.0)

    # -- whole clips ---------------------------------------------------------------------------------------
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` in [-1, 1] -> normalised latent ``[B, z_dim, (T-1)//4+1, H//8, W//8]``."""
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"encode expects a video [B, 3, T, H, W], got {list(video.shape)}")
        cache = self.new_cache()
        feats = [self.encode_features(video[:, :, a:b], cache) for a, b in encode_chunk_bounds(video.shape[2])]
        mu = self.conv1(torch.cat(feats, dim=2))[:, : self.config.z_dim]
        return self.normalize(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latent ``[B, z_dim, T', h, w]`` -> video ``[B, 3, 4(T'-1)+1, 8h, 8w]`` in [-1, 1]."""
        if z.dim() != 5 or z.shape[1] != self.config.z_dim:
            raise ValueError(f"decode expects a latent [B, {self.config.z_dim}, T, h, w], got {list(z.shape)}")
        return torch.cat(list(self.iter_decode(z)), dim=2)
