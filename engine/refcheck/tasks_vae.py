"""Reference-check tasks of the Wan2.1 VAE (golden README §7 "vae_encode / vae_decode")."""
from __future__ import annotations

import torch

from engine.loading.vae import load_vae
from engine.refcheck.request import RefRequest


def vae_encode(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """``video [1,3,T,H,W]`` -> ``latent [16,(T-1)//4+1,H//8,W//8]`` (normalised mean, batch squeezed)."""
    vae = load_vae(request.model("vae"))
    with torch.inference_mode():
        latent = vae.encode(inputs["video"].float())
    return {"latent": latent[0]}


def vae_decode(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """``latent [16,T',h,w]`` -> ``video [1,3,4(T'-1)+1,8h,8w]`` clamped to [-1, 1]."""
    vae = load_vae(request.model("vae"))
    with torch.inference_mode():
        video = vae.decode(inputs["latent"].float().unsqueeze(0))
    return {"video": video}
