"""The released ``SoulX-FlashTalk-14B`` folder layout (SPEC-flashtalk.md §2.9): file names and the folder check.

The loaders (:mod:`engine.loading.dit`, :mod:`engine.loading.encoders`, :mod:`engine.loading.vae`) and the
daemon's ``doctor`` read the names from here, so the layout is written down once. This module imports only the
standard library: the daemon checks a weights folder without importing torch.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CLIP_CHECKPOINT",
    "CLIP_TOKENIZER_DIR",
    "DIT_CONFIG_NAME",
    "DIT_WEIGHTS_STEM",
    "FLASHHEAD_MODEL_DIR",
    "FLASHHEAD_VAE",
    "FLASHHEAD_WAV2VEC_DIR",
    "T5_CHECKPOINT",
    "T5_TOKENIZER_DIR",
    "VAE_CHECKPOINT",
    "WAV2VEC_DIR",
    "WEIGHT_DIRS",
    "WEIGHT_FILES",
    "find_flashhead_wav2vec",
    "find_wav2vec",
    "flashhead_weights_problems",
    "weights_problems",
]

DIT_CONFIG_NAME = "config.json"
DIT_WEIGHTS_STEM = "diffusion_pytorch_model"  # one .safetensors file, or shards named by its .index.json
T5_CHECKPOINT = "models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER_DIR = "google/umt5-xxl"
CLIP_CHECKPOINT = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
CLIP_TOKENIZER_DIR = "xlm-roberta-large"  # shipped with the release; the visual tower alone does not read it
VAE_CHECKPOINT = "Wan2.1_VAE.pth"
#: The audio encoder (TencentGameMate/chinese-wav2vec2-base), inside or beside the weights folder.
WAV2VEC_DIR = "chinese-wav2vec2-base"

#: The released ``SoulX-FlashHead-1_3B`` folder (Pro model): the DiT folder, the VAE file, and the audio encoder
#: (facebook/wav2vec2-base-960h, downloaded beside or inside the weights folder as the release's README says).
FLASHHEAD_MODEL_DIR = "Model_Pro"
FLASHHEAD_VAE = f"VAE_Wan/{VAE_CHECKPOINT}"
FLASHHEAD_WAV2VEC_DIR = "wav2vec2-base-960h"

#: Plain files every complete folder holds (the DiT's weights are checked separately: single file or shards).
WEIGHT_FILES = (DIT_CONFIG_NAME, T5_CHECKPOINT, CLIP_CHECKPOINT, VAE_CHECKPOINT)
#: Sub-folders every complete folder holds.
WEIGHT_DIRS = (T5_TOKENIZER_DIR, CLIP_TOKENIZER_DIR)


def find_wav2vec(weights: Path, name: str = WAV2VEC_DIR, repo: str = "TencentGameMate/chinese-wav2vec2-base") -> Path:
    """The ``chinese-wav2vec2-base`` (or ``name``) folder inside ``weights``, else beside it.

    Raises FileNotFoundError naming where to put it.
    """
    for base in (weights, weights.parent):
        if (base / name).is_dir():
            return base / name
    raise FileNotFoundError(f"no {name}/ inside or beside {weights}: download {repo} there or pass wav2vec_dir")


def find_flashhead_wav2vec(weights: Path) -> Path:
    """FlashHead's ``wav2vec2-base-960h`` folder inside or beside its weights folder (FileNotFoundError naming it)."""
    return find_wav2vec(weights, FLASHHEAD_WAV2VEC_DIR, "facebook/wav2vec2-base-960h")


def flashhead_weights_problems(folder: Path) -> list[str]:
    """Everything missing or empty in a ``SoulX-FlashHead-1_3B`` folder for the Pro model (empty: looks complete)."""
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    model = folder / FLASHHEAD_MODEL_DIR
    if not model.is_dir():
        problems = [f"missing {FLASHHEAD_MODEL_DIR}/ (the Pro DiT: config.json + {DIT_WEIGHTS_STEM}.safetensors)"]
    else:
        problems = [f"{FLASHHEAD_MODEL_DIR}/{p}" for p in _file_problems(model, (DIT_CONFIG_NAME,)) + _dit_problems(model)]
    problems += _file_problems(folder, (FLASHHEAD_VAE,))
    try:
        find_flashhead_wav2vec(folder)
    except FileNotFoundError:
        problems.append(f"missing {FLASHHEAD_WAV2VEC_DIR}/ (inside or beside the weights folder)")
    return problems


def weights_problems(folder: Path) -> list[str]:
    """Everything missing or empty in a FlashTalk weights folder (empty list: looks complete)."""
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    problems = [f"missing {name}" for name in WEIGHT_DIRS if not (folder / name).is_dir()]
    problems += _file_problems(folder, WEIGHT_FILES)
    problems += _dit_problems(folder)
    try:
        find_wav2vec(folder)
    except FileNotFoundError:
        problems.append(f"missing {WAV2VEC_DIR}/ (inside or beside the weights folder)")
    return problems


def _dit_problems(folder: Path) -> list[str]:
    """The DiT's weights: the shards its index names, or the single file when there is no index."""
    index = folder / f"{DIT_WEIGHTS_STEM}.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError, OSError):
            return [f"{index.name} is not a valid shard index (needs 'weight_map')"]
        return _file_problems(folder, shards)
    problems = _file_problems(folder, (f"{DIT_WEIGHTS_STEM}.safetensors",))
    if problems and problems[-1].startswith("missing"):
        problems[-1] = f"missing {index.name} (or a single {DIT_WEIGHTS_STEM}.safetensors)"
    return problems


def _file_problems(folder: Path, names: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        path = folder / name
        if not path.is_file():
            out.append(f"missing {name}")
        elif path.stat().st_size == 0:
            out.append(f"{name} is empty")
    return out
