"""Load the audio DiT from a diffusers folder: ``config.json`` + ``diffusion_pytorch_model*.safetensors``.

The folder is the released ``SoulX-FlashTalk-14B`` layout (SPEC-flashtalk.md §2.9): one safetensors file or
shards listed in ``diffusion_pytorch_model.safetensors.index.json``. The model is built on the meta device and
the file tensors are assigned into it after a strict key/shape check, cast to ``dtype`` (bf16 -> fp32 is exact).
RoPE tables are not state; the model computes them on first use, so no step is needed after loading.

The released FlashHead ``Model_Pro/`` folder has the same layout (class ``WanModelAudioProject`` in its
config.json selects the FlashHead variant). Its release hard-codes the audio projection (512 / 1536 / 32); a
folder whose weights were made with other widths (the golden bundle's tiny model) says so in
``audio_proj_patch.json`` beside the config, and the widths are checked against the weights' shapes either way.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from engine.loading.layout import DIT_CONFIG_NAME, DIT_WEIGHTS_STEM
from engine.loading.state_dict import CheckpointError, build_on_meta, load_into, read_safetensors_folder
from engine.models.transformer import DiTConfig, WanAudioTransformer

__all__ = ["AUDIO_PROJ_PATCH_NAME", "DIT_CONFIG_NAME", "DIT_WEIGHTS_STEM", "load_dit", "read_dit_config"]

#: FlashHead audio-projection width overrides (not a released file: the golden bundle's tiny model has one).
AUDIO_PROJ_PATCH_NAME = "audio_proj_patch.json"
_AUDIO_PROJ_KEYS = ("intermediate_dim", "output_dim", "context_tokens")

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
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{path} must hold a JSON object")
        patch = Path(folder) / AUDIO_PROJ_PATCH_NAME
        if patch.is_file():
            overrides = json.loads(patch.read_text())
            raw = {**raw, **{k: int(overrides[k]) for k in _AUDIO_PROJ_KEYS if k in overrides}}
        return DiTConfig.from_dict(raw)
    except (ValueError, TypeError) as exc:
        hint = ""
        if "output_dim" in str(exc):
            hint = (f" (a FlashHead model made with other audio-projection widths than the release's names them in "
                    f"{AUDIO_PROJ_PATCH_NAME} beside config.json)")
        raise CheckpointError(f"invalid DiT config {path}: {exc}{hint}") from exc


def _check_audio_projection(config: DiTConfig, state: dict[str, torch.Tensor], folder: Path) -> None:
    """The audio-projection widths of ``config`` against the weights' shapes (a clear error naming the fix)."""
    shapes = {
        "intermediate_dim": state.get("audio_proj.proj1.weight"),
        "output_dim": state.get("audio_proj.norm.weight"),
    }
    found = {k: int(v.shape[0]) for k, v in shapes.items() if v is not None}
    proj3 = state.get("audio_proj.proj3.weight")
    if proj3 is not None and found.get("output_dim"):
        found["context_tokens"] = int(proj3.shape[0]) // found["output_dim"]
    wrong = {k: v for k, v in found.items() if getattr(config, k) != v}
    if wrong:
        said = {k: getattr(config, k) for k in wrong}
        raise CheckpointError(
            f"{folder}: the weights' audio projection has {wrong}, the config says {said}. A FlashHead model "
            f"made with other widths than the release's must say so in {AUDIO_PROJ_PATCH_NAME} beside config.json"
        )


def load_dit(
    folder: Path | str, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> WanAudioTransformer:
    """Build the DiT of ``folder`` on meta and load its weights strictly; eval mode, no grad."""
    folder = Path(folder)
    config = read_dit_config(folder)
    state, files = read_safetensors_folder(folder, DIT_WEIGHTS_STEM)
    if config.variant == "flashhead":
        _check_audio_projection(config, state, folder)
    model = build_on_meta(lambda: WanAudioTransformer(config))
    source = str(files[0]) if len(files) == 1 else f"{folder} ({len(files)} shards)"
    load_into(model, state, source, dtype=dtype, device=device)
    log.info("loaded %s DiT from %s: %d layers, dim %d, %s on %s", config.variant, folder, config.num_layers,
             config.dim, dtype, device)
    return model.eval().requires_grad_(False)
