"""Reference-check task of the DiT (golden README §7 "dit_forward").

``out = DiT(x, t, context, clip_fea, y, audio, seq_len)`` with batch 1. The optional ``debug.*`` outputs are the
outputs of the named submodules, captured with forward hooks (the model's forward is not changed).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from engine.loading.dit import load_dit
from engine.refcheck.request import RefRequest

#: debug output name -> submodule whose output it is (block outputs are added per layer).
DEBUG_MODULES = (
    "patch_embedding",
    "time_embedding",
    "time_projection",
    "text_embedding",
    "img_emb",
    "audio_proj",
    "head",
)


def debug_module_names(model: nn.Module) -> list[str]:
    """Every submodule whose output can be recorded as ``debug.<name>``."""
    return [*DEBUG_MODULES, *(f"blocks.{i}" for i in range(len(model.blocks)))]


@contextmanager
def capture_outputs(model: nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the forward output of each named submodule into the yielded dict (hooks removed afterwards)."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        def hook(_module: nn.Module, _args: object, output: torch.Tensor, name: str = name) -> None:
            captured[name] = output.detach()
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def dit_forward(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """Unbatched golden inputs -> ``{"out": [16, F, H, W]}`` plus requested ``debug.*`` intermediates."""
    model = load_dit(request.model("dit"))
    wanted = [name for name in debug_module_names(model) if request.wants(f"debug.{name}")]
    with torch.inference_mode(), capture_outputs(model, wanted) as captured:
        out = model(
            inputs["x"].float().unsqueeze(0),
            inputs["t"].float().reshape(1),
            inputs["context"].float().unsqueeze(0),
            inputs["clip_fea"].float(),
            inputs["y"].float(),
            inputs["audio"].float(),
            seq_len=int(inputs["seq_len"].reshape(-1)[0]),
        )
    return {"out": out[0], **{f"debug.{name}": value for name, value in captured.items()}}
