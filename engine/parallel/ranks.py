"""This process's place in a torchrun group, read from the environment torchrun sets.

Torch-free on purpose: the daemon's worker asks for its rank before (and whether) it imports the engine's
torch modules.
"""
from __future__ import annotations

import os

__all__ = ["torchrun_rank"]


def torchrun_rank() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment; ``(0, 1)`` outside a group."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
