"""Reference-check tasks of SoulX-FlashHead Pro (golden-flashhead README §4): ``fh_dit_forward``,
``fh_audio_embed``, ``fh_prepare``, ``fh_sampler``, ``fh_stream_chunk``.

Each runs the engine's own code: the FlashHead variant of the one DiT family (:mod:`engine.models.transformer`),
the shared audio front end without loudness normalisation, :func:`engine.prepare.prepare_flashhead_reference`,
and the FlashTalk sampler / chunk loop (:func:`engine.flashtalk.generate_chunk`) with no text or CLIP input.
Golden tensors are unbatched; the batch dimension is added and removed here only.
"""
from __future__ import annotations

import torch

from engine.audio_encoder import FPS, SAMPLE_RATE, AudioEncoder
from engine.loading.dit import load_dit
from engine.loading.vae import load_vae
from engine.loading.wav2vec2 import load_wav2vec2
from engine.postprocess import to_float_frames
from engine.prepare import prepare_flashhead_reference, reference_pixels, token_count
from engine.refcheck.request import RefRequest
from engine.refcheck.tasks_dit import capture_outputs, debug_module_names
from engine.refcheck.tasks_stream import run_chunk, run_sampler, stream_config
from engine.sampler import shifted_timesteps
from engine.state import StreamConditioning


def fh_dit_forward(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """``out = DiT(x[None], t, audio, y[None])[0]`` plus requested ``debug.*`` submodule outputs."""
    model = load_dit(request.model("dit"))
    if model.config.variant != "flashhead":
        raise SystemExit(f"{request.model('dit')} is not a FlashHead DiT (config class WanModelAudioProject)")
    wanted = [name for name in debug_module_names(model) if request.wants(f"debug.{name}")]
    with torch.inference_mode(), capture_outputs(model, wanted) as captured:
        out = model(
            inputs["x"].float().unsqueeze(0), inputs["t"].float().reshape(1), None, None,
            inputs["y"].float().unsqueeze(0), inputs["audio"].float(),
        )
    return {"out": out[0], **{f"debug.{name}": value for name, value in captured.items()}}


def fh_audio_embed(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """``wave [T]`` -> ``emb [1, end-start, 5, layers, C]``, ``hidden [seq_len, layers, C]`` (no loudness norm)."""
    params = request.params
    encoder = AudioEncoder(
        load_wav2vec2(request.model("wav2vec2")),
        sample_rate=int(params.get("sample_rate", SAMPLE_RATE)),
        fps=int(params.get("fps", FPS)),
        loudness_norm=False,
    )
    wave = inputs["wave"].numpy()
    emb, hidden = encoder.embed(wave, int(params.get("start_idx", -1)), int(params.get("end_idx", -1)))
    out = {"emb": emb, "hidden": hidden}
    if request.wants("debug.input_values"):
        out["debug.input_values"] = torch.from_numpy(encoder.input_values(wave))
    return out


def fh_prepare(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """``cond_image_u8 [H,W,3]`` -> cond_image, ref_img_latent, latent_motion_frames, timesteps."""
    image = inputs["cond_image_u8"].numpy()
    cfg = stream_config(request.params, *image.shape[:2])
    vae = load_vae(request.model("vae"))
    with torch.inference_mode():
        cond_image = reference_pixels(image, dtype=torch.float32, device="cpu")
        prepared = prepare_flashhead_reference(cond_image, vae, cfg.frame_num)
    return {
        "cond_image": prepared.cond_image,
        "ref_img_latent": prepared.y[0],
        "latent_motion_frames": prepared.motion_latent[0],
        "timesteps": shifted_timesteps(cfg.sampling_steps, cfg.shift, cfg.num_timesteps),
    }


def _conditioning(inputs: dict[str, torch.Tensor]) -> StreamConditioning:
    y = inputs["ref_img_latent"].float().unsqueeze(0)
    return StreamConditioning(
        cond_image=inputs["cond_image"].float(),
        y=y,
        context=None,
        clip_fea=None,
        reference_latent=inputs["latent_motion_frames"].float().unsqueeze(0),
        seq_len=token_count(4 * (y.shape[2] - 1) + 1, tuple(y.shape[3:]), patch_hw=(2, 2)),
    )


def fh_sampler(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """The denoising loop alone -> ``latent [16,F,h,w]`` (+ ``debug.step{i}.dit_in/t/dit_out``)."""
    return run_sampler(inputs, request, _conditioning(inputs))


def fh_stream_chunk(inputs: dict[str, torch.Tensor], request: RefRequest) -> dict[str, torch.Tensor]:
    """One whole chunk -> latent, video_decoded, gen_video (all frames), frames (emitted), motion_latent_next."""
    out, cfg = run_chunk(inputs, request, _conditioning(inputs))
    return {
        "latent": out.latent[0],
        "video_decoded": out.video_decoded,
        "gen_video": out.video[0],
        "frames": to_float_frames(out.video[:, :, cfg.motion_frames :]),
        "motion_latent_next": out.motion_latent_next[0],
    }
