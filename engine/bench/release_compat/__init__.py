"""Release compatibility: what the released SoulX-FlashTalk code needs to run beside ours, in one place.

The released code imports packages the benchmark never exercises (xformers, xfuser, optimum.quanto, diffusers,
flash-attn, loguru, easydict, ...) and assumes CUDA. :func:`release_environment` installs stand-ins for the
missing ones and patches the imported release for the duration of one reference run, then undoes everything;
it yields the list of what was replaced, one line each, which the reference result records (``stand_ins``) so
nobody mistakes the run for the release as shipped.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace

from engine.bench.release_compat.modules import STAND_INS, stand_in_modules
from engine.bench.release_compat.patches import (
    cuda_shims,
    patch_release,
    with_hidden_states,
)

__all__ = ["STAND_INS", "release_environment", "stand_in_modules", "with_hidden_states"]


@contextlib.contextmanager
def release_environment(import_release: Callable[[], SimpleNamespace], device: str,
                        compile_release: bool = False) -> Iterator[tuple[SimpleNamespace, list[str]]]:
    """Import the release (``import_release()``) with stand-ins in place; yields it and the stand-in lines."""
    with stand_in_modules() as modules, cuda_shims(device) as shims:
        release = import_release()
        with patch_release(release, device, compile_release) as patched:
            lines = [f"{name}: {line}" for name, line in {**modules, **shims, **patched}.items()]
            yield release, lines
