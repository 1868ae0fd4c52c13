"""3-axis rotary position embedding of the Wan DiT (SPEC-flashtalk.md §2.5), as pure functions.

A head of ``head_dim`` channels holds ``c = head_dim // 2`` rotation pairs of *adjacent* channels
``(2i, 2i+1)`` (interleaved, "GPT-J" style). The pairs are split ``[c - 2(c//3), c//3, c//3]`` over the
(frame, height, width) axes -- [22, 21, 21] for the released head_dim 128. Each axis has its own frequency
table ``theta ** (-2j / axis_dim)`` with ``axis_dim = 2 * pairs``, exactly as the release's ``rope_params``.
Token ``(f, h, w)`` of a grid rotates its pairs by ``f``, ``h`` and ``w`` times the respective frequencies;
positions start at 0 for every call. Everything is computed in float64 and the result is cast to float32,
as in the release.

The tables are a function of the grid only (nothing is stored in a checkpoint), so callers compute them on
the device they need and may cache them; :func:`rope_cos_sin` for a token range serves sequence parallelism.
"""
from __future__ import annotations

import torch

__all__ = ["ROPE_THETA", "apply_rope", "rope_axis_pairs", "rope_cos_sin"]

ROPE_THETA = 10000.0


def rope_axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Rotation pairs given to the (frame, height, width) axes."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    c = head_dim // 2
    return c - 2 * (c // 3), c // 3, c // 3


def _axis_angles(positions: int, pairs: int, theta: float, device: torch.device | str | None) -> torch.Tensor:
    """``[positions, pairs]`` float64 angles ``p * theta ** (-2j / (2 * pairs))`` (the release's rope_params)."""
    dim = 2 * pairs
    inv_freq = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64, device=device).div(dim))
    return torch.outer(torch.arange(positions, dtype=torch.float64, device=device), inv_freq)


def rope_cos_sin(
    grid: tuple[int, int, int],
    head_dim: int,
    *,
    device: torch.device | str | None = None,
    token_range: tuple[int, int] | None = None,
    theta: float = ROPE_THETA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 ``(cos, sin)`` of shape ``[L, head_dim // 2]`` for the tokens of ``grid`` in (f, h, w) order.

    ``token_range = (start, stop)`` selects global token positions (a sequence-parallel shard); positions at
    or beyond ``f*h*w`` get the identity rotation (cos 1, sin 0), like the release's padded tokens.
    """
    f, h, w = grid
    pf, ph, pw = rope_axis_pairs(head_dim)
    angles = torch.cat(
        [
            _axis_angles(f, pf, theta, device)[:, None, None, :].expand(f, h, w, pf),
            _axis_angles(h, ph, theta, device)[None, :, None, :].expand(f, h, w, ph),
            _axis_angles(w, pw, theta, device)[None, None, :, :].expand(f, h, w, pw),
        ],
        dim=-1,
    ).reshape(f * h * w, pf + ph + pw)
    cos, sin = torch.cos(angles), torch.sin(angles)
    if token_range is not None:
        start, stop = token_range
        pad = max(0, stop - f * h * w)
        cos = torch.cat([cos[start:stop], cos.new_ones(pad, cos.shape[1])])
        sin = torch.cat([sin[start:stop], sin.new_zeros(pad, sin.shape[1])])
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of ``x [B, L, heads, head_dim]`` in float64; returns float32.

    ``cos``/``sin`` are ``[L, head_dim // 2]`` (from :func:`rope_cos_sin`).
    """
    b, length, heads, dim = x.shape
    pairs = x.to(torch.float64).reshape(b, length, heads, dim // 2, 2)
    real, imag = pairs[..., 0], pairs[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.stack([real * c - imag * s, real * s + imag * c], dim=-1)
    return rotated.reshape(b, length, heads, dim).float()
