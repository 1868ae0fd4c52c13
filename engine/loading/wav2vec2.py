"""Load FlashTalk's wav2vec2 (``engine.models.wav2vec2``) from a transformers model folder.

The folder is what the release points ``--wav2vec_dir`` at (``models/chinese-wav2vec2-base``) or
FlashHead's ``wav2vec2-base-960h``: ``config.json`` plus ``model.safetensors`` (or its shard index) or a
legacy ``pytorch_model.bin``. Only local files are read; there is never a hub lookup.

Key names are normalised before the strict check:

* a ``wav2vec2.`` prefix (checkpoints saved from ``Wav2Vec2ForPreTraining`` / ``Wav2Vec2ForCTC``) is removed;
* the positional-conv weight norm is accepted under both namings: ``conv.parametrizations.weight.original0/1``
  (torch parametrizations, transformers >= 4.3x) and ``conv.weight_g / conv.weight_v`` (legacy); each is
  mapped to the one the built model uses;
* the tensors listed in ``IGNORED_PREFIXES`` / ``IGNORED_KEYS`` are dropped by name (why: see there).

Anything else that is missing, unexpected or of the wrong shape is a ``CheckpointError``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from engine.loading.state_dict import (
    CheckpointError,
    build_on_meta,
    load_into,
    read_safetensors_folder,
    read_torch_file,
)
from engine.models.wav2vec2 import FlashTalkWav2Vec2

if TYPE_CHECKING:
    from transformers import Wav2Vec2Config

log = logging.getLogger(__name__)

__all__ = ["IGNORED_KEYS", "IGNORED_PREFIXES", "load_wav2vec2", "normalize_wav2vec2_keys", "read_wav2vec2_config"]

CONFIG_NAME = "config.json"
SAFETENSORS_STEM = "model"
LEGACY_BIN = "pytorch_model.bin"
BASE_PREFIX = "wav2vec2."

# Heads of the task models the released base checkpoints were saved from. FlashTalk only runs the base
# model (it loads them with ``Wav2Vec2Model.from_pretrained``, which drops these the same way):
IGNORED_PREFIXES = (
    "quantizer.",    # Wav2Vec2ForPreTraining: Gumbel vector quantizer (codevectors, weight_proj) - pretraining loss
    "project_q.",    # Wav2Vec2ForPreTraining: projection of quantized targets - pretraining loss
    "project_hid.",  # Wav2Vec2ForPreTraining: projection of context vectors - pretraining loss
    "lm_head.",      # Wav2Vec2ForCTC (wav2vec2-base-960h): CTC character head - speech recognition only
)
# SpecAugment's learned mask vector: only used when masking during training. Dropped from the checkpoint
# when the config builds no such parameter, and from the model when the checkpoint lacks it.
IGNORED_KEYS = ("masked_spec_embed",)

_WN_NEW = ("parametrizations.weight.original0", "parametrizations.weight.original1")
_WN_OLD = ("weight_g", "weight_v")


def read_wav2vec2_config(folder: Path) -> "Wav2Vec2Config":
    """The ``Wav2Vec2Config`` of ``folder/config.json`` (local file only)."""
    from transformers import Wav2Vec2Config

    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no {CONFIG_NAME} in {folder}: point the engine at the wav2vec2 model folder "
            "(e.g. models/chinese-wav2vec2-base) that holds config.json and the weights"
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if raw.get("model_type", "wav2vec2") != "wav2vec2":
        raise CheckpointError(f"{path} describes a {raw.get('model_type')!r} model, not wav2vec2")
    try:
        return Wav2Vec2Config.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a valid Wav2Vec2 config: {exc}") from exc


def _read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    has_st = (folder / f"{SAFETENSORS_STEM}.safetensors").is_file() or (
        folder / f"{SAFETENSORS_STEM}.safetensors.index.json"
    ).is_file()
    if has_st:
        state, files = read_safetensors_folder(folder, SAFETENSORS_STEM)
        return state, ", ".join(str(f) for f in files)
    legacy = folder / LEGACY_BIN
    if legacy.is_file():
        return read_torch_file(legacy), str(legacy)
    raise CheckpointError(
        f"{folder} has a {CONFIG_NAME} but no weights: expected {SAFETENSORS_STEM}.safetensors, "
        f"{SAFETENSORS_STEM}.safetensors.index.json or {LEGACY_BIN}. Download the wav2vec2 folder completely."
    )


def normalize_wav2vec2_keys(
    state: dict[str, torch.Tensor], model_keys: set[str], source: str
) -> dict[str, torch.Tensor]:
    """Map a released state dict onto ``model_keys`` (prefix, weight-norm naming, named ignores)."""
    if any(k.startswith(BASE_PREFIX) for k in state):
        state = {(k[len(BASE_PREFIX):] if k.startswith(BASE_PREFIX) else k): v for k, v in state.items()}
    model_uses_new = any(k.endswith(_WN_NEW[0]) for k in model_keys)
    src, dst = (_WN_OLD, _WN_NEW) if model_uses_new else (_WN_NEW, _WN_OLD)
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, tensor in state.items():
        if key.startswith(IGNORED_PREFIXES) or (key in IGNORED_KEYS and key not in model_keys):
            ignored.append(key)
            continue
        for old, new in zip(src, dst):
            if key.endswith("." + old):
                key = key[: -len(old)] + new
                break
        if key in out:
            raise CheckpointError(f"{source} holds {key!r} under both weight-norm namings; remove one")
        out[key] = tensor
    if ignored:
        log.debug("%s: ignored %d tensor(s) FlashTalk does not use, e.g. %s", source, len(ignored), ignored[:3])
    return out


def load_wav2vec2(
    folder: Path | str,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> FlashTalkWav2Vec2:
    """Build ``FlashTalkWav2Vec2`` from ``folder/config.json`` on meta and assign the weights strictly.

    The release runs it in fp32 (its CNN frozen); the result is in eval mode without gradients.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"wav2vec2 folder not found: {folder}")
    config = read_wav2vec2_config(folder)
    model = build_on_meta(lambda: FlashTalkWav2Vec2(config))
    state, source = _read_weights(folder)
    model_keys = set(model.state_dict())
    state = normalize_wav2vec2_keys(state, model_keys, source)
    for key in IGNORED_KEYS:
        if key in model_keys and key not in state:
            delattr(model, key)  # training-only parameter the checkpoint does not carry
    load_into(model, state, source, dtype=dtype, device=device)
    log.info("loaded wav2vec2 (%d layers, hidden %d) from %s", model.num_layers, config.hidden_size, source)
    return model.eval().requires_grad_(False)
