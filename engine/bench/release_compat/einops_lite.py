"""A minimal ``einops.rearrange`` for the patterns the released code uses (named axes, parenthesised groups).

Only used when the real einops is not installed (the GPU machine gets the real wheel from ``.whl/``).
"""
from __future__ import annotations

import math
import re

import torch

__all__ = ["rearrange", "repeat"]

_TOKEN = re.compile(r"\(|\)|[A-Za-z_][A-Za-z0-9_]*|1")


def _groups(side: str) -> list[list[str]]:
    """``"b (n s) c"`` -> ``[["b"], ["n", "s"], ["c"]]``."""
    groups: list[list[str]] = []
    current: list[str] | None = None
    for token in _TOKEN.findall(side):
        if token == "(":
            current = []
        elif token == ")":
            assert current is not None
            groups.append(current)
            current = None
        elif current is not None:
            current.append(token)
        else:
            groups.append([token])
    return groups


def _axis_sizes(lhs: list[list[str]], shape: torch.Size, known: dict[str, int]) -> dict[str, int]:
    sizes = dict(known)
    if len(lhs) != len(shape):
        raise ValueError(f"einops_lite: pattern has {len(lhs)} groups, tensor has {len(shape)} dims")
    for group, dim in zip(lhs, shape):
        unknown = [a for a in group if a not in sizes and a != "1"]
        if len(unknown) > 1:
            raise ValueError(f"einops_lite: cannot infer {unknown} in group {group}")
        rest = math.prod(sizes.get(a, 1) for a in group if a not in unknown)
        if unknown:
            sizes[unknown[0]] = dim // rest
    return sizes


def rearrange(tensor: torch.Tensor, pattern: str, **axes: int) -> torch.Tensor:
    """Reshape/permute ``tensor`` as ``pattern`` says (no reductions, no repeats)."""
    left, right = (_groups(s) for s in pattern.split("->"))
    sizes = _axis_sizes(left, tensor.shape, axes)
    flat_left = [a for g in left for a in g if a != "1"]
    split = tensor.reshape([sizes[a] for a in flat_left])
    flat_right = [a for g in right for a in g if a != "1"]
    moved = split.permute([flat_left.index(a) for a in flat_right])
    return moved.reshape([math.prod(sizes[a] for a in g if a != "1") for g in right])


def repeat(tensor: torch.Tensor, pattern: str, **axes: int) -> torch.Tensor:
    raise NotImplementedError("einops_lite.repeat: not on the benchmarked path; install einops")
