"""Strict, copy-free loading of state dicts from the released file formats.

Every model loader follows the same recipe (gpt-fast / diffusers): build the module under
``torch.device("meta")``, read tensors from disk, check the key set and every shape, then
``load_state_dict(assign=True)`` so no second copy of the weights is ever made.
Errors name the offending key and file so a user can tell a wrong folder from a corrupt file.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)


class CheckpointError(RuntimeError):
    """A checkpoint file or folder cannot be used; the message says which file and why."""


def build_on_meta(factory: Callable[[], M]) -> M:
    """Construct a module without allocating its parameters."""
    with torch.device("meta"):
        return factory()


def read_safetensors_file(path: Path) -> dict[str, torch.Tensor]:
    """Read one .safetensors file (memory-mapped by safetensors), with a clear error if it is damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read {path}: {exc}. The file is truncated or not a safetensors file; "
            "download or copy it again."
        ) from exc


def read_safetensors_folder(folder: Path, stem: str) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """Read ``{stem}.safetensors`` or the shards listed in ``{stem}.safetensors.index.json``.

    Returns the merged state dict and the files it came from.
    """
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    single = folder / f"{stem}.safetensors"
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            weight_map: Mapping[str, str] = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a valid shard index (needs a 'weight_map')") from exc
        shards = sorted(set(weight_map.values()))
        state: dict[str, torch.Tensor] = {}
        files = []
        for shard in shards:
            shard_path = folder / shard
            part = read_safetensors_file(shard_path)
            expected = {k for k, v in weight_map.items() if v == shard}
            missing = expected - part.keys()
            if missing:
                raise CheckpointError(
                    f"{shard_path} lacks {len(missing)} tensor(s) its index promises, e.g. {sorted(missing)[0]!r}"
                )
            state.update(part)
            files.append(shard_path)
        return state, files
    if single.is_file():
        return read_safetensors_file(single), [single]
    raise CheckpointError(
        f"{folder} holds neither {single.name} nor {index.name}; point the config at the folder "
        "that contains the model's config.json and weights"
    )


def read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a torch zip-pickle of a flat tensor dict (e.g. ``Wan2.1_VAE.pth``) safely."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}. The file is truncated or not a torch checkpoint.") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a flat dict of tensors")
    return dict(obj)


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError unless ``state`` has exactly the module's keys and shapes."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
    for key in sorted(expected.keys() & state.keys()):
        if tuple(expected[key].shape) != tuple(state[key].shape):
            problems.append(
                f"shape mismatch for {key!r}: file has {tuple(state[key].shape)}, "
                f"model expects {tuple(expected[key].shape)}"
            )
            break
    if problems:
        raise CheckpointError(
            f"{source} does not match {type(module).__name__}: " + "; ".join(problems)
            + ". Is the config (config.json / vae_config.json) the one that belongs to these weights?"
        )


def load_into(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Check ``state`` strictly and assign it into ``module`` (built on meta), casting as asked.

    A cast from bf16 to fp32 is exact, which is how the reference loads BF16 checkpoints.
    """
    check_state_dict(module, state, source)
    cast: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        if device is not None:
            tensor = tensor.to(device)
        cast[key] = tensor
    module.load_state_dict(cast, strict=True, assign=True)
    return module
