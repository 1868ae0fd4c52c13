"""Reference-check tasks of the streaming loop (golden README §7 "prepare", "sampler", "stream_chunk").

Golden inputs and outputs are unbatched (``latent [16,F,h,w]``, ``context [L,4096]``); the engine works
on batch 1. The batch dimension is added and removed here only. The cases supply the sampler's noise
(``noise_init``, ``noise_steps``), replayed with :class:`~engine.sampler.GivenNoise`.
"""
from __future__ import annotations

from typing import Any

import torch

from engine.config import FlashTalkConfig
from engine.flashtalk import ChunkOutput, FlashTalkModels, generate_chunk
from engine.loading.dit import load_dit
from engine.loading.vae import load_vae
from engine.prepare import prepare_reference, reference_pixels, token_count
from engine.refcheck.request import RefRequest
from engine.sampler import GivenNoise, StepCallback, denoise, shifted_timesteps
from engine.state import StreamConditioning


def stream_config(params: dict[str, Any], height: int, width: int) -> FlashTalkConfig:
    """A FlashTalkConfig from the request params at the case's resolution."""
    return FlashTalkConfig(
        height=height,
        width=width,
        frame_num=int(params["frame_num"]),
        motion_frames=int(params["motion_frames_num"]),
        sampling_steps=int(params["sampling_steps"]),
        shift=float(params["shift"]),
        num_timesteps=int(params.get("num_timesteps", 1000)),
        color_correction_strength=float(params.get("color_correction_strength", 1.0)),
        seed=int(params.get("seed", 9999)),
        device="cpu",
        dtype="fp32",
    )


def _conditioning(inputs: dict[str, torch.Tensor]) -> StreamConditioning:
    """Batched conditioning from unbatched golden inputs (the case's motion latent stands in for the
    reference latent, which these cases do not carry; it is also the chunk's motion context)."""
    return StreamConditioning(
        cond_image=inputs["cond_image"].float(),
        y=inputs["y"].float(),
        context=inputs["context"].float().unsqueeze(0),
        clip_fea=inputs["clip_fea"].float(),
        reference_latent=inputs["latent_motion_frames"].float().unsqueeze(0),
        seq_len=int(inputs["seq_len"].reshape(-1)[0]),
    )


def sampler_debug(request: RefRequest, debug: dict[str, torch.Tensor]) -> StepCallback:
    """A sampler step observer recording the requested ``debug.step{i}.dit_in/t/dit_out`` (unbatched) into ``debug``."""

    def record(i: int, dit_in: torch.Tensor, t: torch.Tensor, dit_out: torch.Tensor) -> None:
        for name, value in (("dit_in", dit_in[0]), ("t", t), ("dit_out", dit_out[0])):
            if request.wants(f"debug.step{i}.{name}"):
                debug[f"debug.step{i}.{name}"] = value.clone()

    return record


def _noise(inputs: dict[str, torch.Tensor]) -> GivenNoise:
    return GivenNoise(inputs["noise_init"].float().unsqueeze(0), inputs["noise_steps"].float())


def prepare(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """``cond_image_u8 [H,W,3]`` -> cond_image, y, latent_motion_frames, timesteps, seq_len (int64)."""
    image = inputs["cond_image_u8"].numpy()
    cfg = stream_config(request.params, *image.shape[:2])
    vae = load_vae(request.model("vae"))
    with torch.inference_mode():
        cond_image = reference_pixels(image, dtype=torch.float32, device="cpu")
        prepared = prepare_reference(cond_image, vae, cfg.frame_num, temporal_stride=cfg.vae_stride[0])
    seq_len = token_count(cfg.frame_num, cfg.latent_hw, vae_stride_t=cfg.vae_stride[0], patch_hw=cfg.patch_size[1:])
    return {
        "cond_image": prepared.cond_image,
        "y": prepared.y,
        "latent_motion_frames": prepared.motion_latent[0],
        "timesteps": shifted_timesteps(cfg.sampling_steps, cfg.shift, cfg.num_timesteps),
        "seq_len": torch.tensor([seq_len], dtype=torch.int64),
    }


def sampler(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """The denoising loop alone -> ``latent [16,F,h,w]`` (+ ``debug.step{i}.dit_in/t/dit_out``)."""
    return run_sampler(inputs, request, _conditioning(inputs))


def stream_chunk(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """One whole chunk -> latent, video_decoded, gen_video (corrected frames motion..end), motion_latent_next."""
    out, cfg = run_chunk(inputs, request, _conditioning(inputs))
    return {
        "latent": out.latent[0],
        "video_decoded": out.video_decoded,
        "gen_video": out.video[0, :, cfg.motion_frames :],
        "motion_latent_next": out.motion_latent_next[0],
    }


def run_sampler(inputs: dict[str, torch.Tensor], request: RefRequest, cond: StreamConditioning) -> dict[str, torch.Tensor]:
    """The sampler of a sampler case (FlashTalk's or FlashHead's) on ``cond``, with the case's replayed noise."""
    height, width = inputs["cond_image"].shape[-2:]
    cfg = stream_config(request.params, int(height), int(width))
    dit = load_dit(request.model("dit"))
    audio = inputs["audio"].float()
    debug: dict[str, torch.Tensor] = {}

    def dit_fn(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return dit(latent, t, cond.context, cond.clip_fea, cond.y, audio, seq_len=cond.seq_len)

    noise = _noise(inputs)
    timesteps = shifted_timesteps(cfg.sampling_steps, cfg.shift, cfg.num_timesteps)
    with torch.inference_mode():
        latent_init = noise.initial(cond.latent_shape, torch.float32, torch.device("cpu"))
        latent = denoise(
            dit_fn, latent_init, cond.reference_latent, timesteps, noise,
            num_timesteps=cfg.num_timesteps, on_step=sampler_debug(request, debug),
        )
    return {"latent": latent[0], **debug}


def run_chunk(
    inputs: dict[str, torch.Tensor], request: RefRequest, cond: StreamConditioning
) -> tuple[ChunkOutput, FlashTalkConfig]:
    """One whole chunk of a stream_chunk case (FlashTalk's or FlashHead's) on ``cond``, and the case's config."""
    height, width = inputs["cond_image"].shape[-2:]
    cfg = stream_config(request.params, int(height), int(width))
    models = FlashTalkModels(dit=load_dit(request.model("dit")), vae=load_vae(request.model("vae")))
    with torch.inference_mode():
        out = generate_chunk(models, cond, cond.reference_latent, inputs["audio"].float(), _noise(inputs), cfg)
    return out, cfg
