"""Load the Wan2.1 VAE from ``Wan2.1_VAE.pth`` (a torch zip-pickle of a flat fp32 state dict).

The configuration comes from ``vae_config.json`` beside the file when there is one (official constructor
argument names), else the released defaults (width 96). The released file has no config of its own.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.loading.state_dict import CheckpointError, build_on_meta, load_into, read_torch_file
from engine.models.vae import VAEConfig, WanVAE

__all__ = ["VAE_CONFIG_NAME", "load_vae", "read_vae_config"]

VAE_CONFIG_NAME = "vae_config.json"
_WIDTH_KEY = "encoder.conv1.weight"


def read_vae_config(pth: Path) -> tuple[VAEConfig, str]:
    """The config for the VAE file ``pth`` and where it came from (a path, or "released defaults")."""
    path = Path(pth).parent / VAE_CONFIG_NAME
    if not path.is_file():
        return VAEConfig(), "released defaults (no vae_config.json beside the file)"
    try:
        return VAEConfig.from_dict(json.loads(path.read_text())), str(path)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a valid VAE config: {exc}") from exc


def load_vae(pth: Path | str, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> WanVAE:
    """Build the VAE on the meta device and assign the file's tensors into it (strict keys and shapes)."""
    pth = Path(pth)
    config, config_source = read_vae_config(pth)
    state = read_torch_file(pth)
    first = state.get(_WIDTH_KEY)
    if first is None:
        raise CheckpointError(f"{pth} has no {_WIDTH_KEY!r}: it is not a Wan2.1 VAE state dict")
    if first.shape[0] != config.dim:
        raise CheckpointError(
            f"{pth}: {_WIDTH_KEY!r} has {first.shape[0]} output channels, but the VAE config "
            f"({config_source}) says dim={config.dim}. Put the vae_config.json that belongs to this file beside it "
            f"(the released Wan2.1_VAE.pth needs none: its width is 96)."
        )
    vae = build_on_meta(lambda: WanVAE(config))
    load_into(vae, state, str(pth), dtype=dtype, device=device)
    vae.reset_latent_stats()
    return vae.eval().requires_grad_(False)
