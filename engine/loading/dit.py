"""Load the audio DiT from a diffusers folder: ``config.json`` + ``diffusion_pytorch_model*.safetensors``.

The folder is the released ``SoulX-FlashTalk-14B`` layout (SPEC-flashtalk.md §2.9): one safetensors file or
shards listed in ``diffusion_pytorch_model.safetensors.index.json``. The model is built on the meta device and
the file tensors are assigned into it after a strict key/shape check, cast to ``dtype`` (bf16 -> fp32 is exact).
RoPE tables are not state; the model computes them on first use, so no step is needed after loading.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from engine.loading.layout import DIT_CONFIG_NAME, DIT_WEIGHTS_STEM
from engine.loading.state_dict import CheckpointError, build_on_meta, load_into, read_safetensors_folder
from engine.models.transformer import DiTConfig, WanAudioTransformer

__all__ = ["DIT_CONFIG_NAME", "DIT_WEIGHTS_STEM", "load_dit", "read_dit_config"]

log = logging.getLogger(__name__)


def read_dit_config(folder: Path | str) -> DiTConfig:
    """The DiT config of a checkpoint folder; CheckpointError when it is missing or invalid."""
    path = Path(folder) / DIT_CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{path} not found: the DiT folder must hold the model's {DIT_CONFIG_NAME} next to its "
            f"{DIT_WEIGHTS_STEM}*.safetensors (point the config at the SoulX-FlashTalk-14B folder)"
        )
    try:
        return DiTConfig.from_json(path)
    except ValueError as exc:
        raise CheckpointError(f"invalid DiT config: {exc}") from exc


def load_dit(
    folder: Path | str, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> WanAudioTransformer:
    """Build the DiT of ``folder`` on meta and load its weights strictly; eval mode, no grad."""
    folder = Path(folder)
    config = read_dit_config(folder)
    state, files = read_safetensors_folder(folder, DIT_WEIGHTS_STEM)
    model = build_on_meta(lambda: WanAudioTransformer(config))
    source = str(files[0]) if len(files) == 1 else f"{folder} ({len(files)} shards)"
    load_into(model, state, source, dtype=dtype, device=device)
    log.info("loaded DiT from %s: %d layers, dim %d, %s on %s", folder, config.num_layers, config.dim, dtype, device)
    return model.eval().requires_grad_(False)
