"""The benchmark loop: stream ``cfg.chunks`` chunks through the engine's own functions and time every stage.

Per chunk, in the release's order (SPEC-flashtalk.md §6.3): audio encode of the 8 s buffer -> ``steps`` DiT
steps (x0 prediction, fresh-noise re-noising, motion latents re-imposed) -> VAE decode -> colour correction ->
VAE re-encode of the last 5 frames -> uint8 on the device -> device-to-host copy. T5/CLIP run once per session
(``engine.conditioning`` caches them), so random context/CLIP tokens of the released shapes stand in.

``dit_step_<i>`` is the DiT forward of step i; the sampler's element-wise update between steps is in
``chunk_ms`` only. Stage times come from :class:`engine.profiling.StageTimer` (CUDA events, read once per chunk:
no host sync inside the chunk). With ``world_size > 1`` every rank runs this loop under torchrun with Ulysses x
Ring sequence parallelism on the DiT and the VAE split into bands of rows (``engine.parallel``). The speed levers
are flags: cached cross-attention K/V (on by default), ``--compile`` (regional, optional CUDA graphs), ``--fp8``;
the memory modes too: ``--offload`` (the random DiT is built on the host, then its blocks are streamed) and
``--fp8-weights`` (:mod:`engine.memory` derives each mode's peak; the report puts it next to the measured one).
After the chunks, on a GPU, the device's matmul ceiling (bf16 and FP8, :mod:`engine.bench.ceiling`) is measured
under the same conditions, for the report to put beside the datasheet peak.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.audio_encoder import AudioEncoder, StreamingAudioWindow, samples_per_chunk
from engine.bench.ceiling import device_ceilings
from engine.bench.config import MOTION_FRAMES, BenchConfig, torch_dtype
from engine.bench.models import build_models
from engine.bench.widths import TEXT_DIM, dit_config
from engine.models.vae import WanVAE
from engine.postprocess import match_and_blend_colors, to_uint8_frames
from engine.prepare import (
    PreparedReference,
    prepare_flashhead_reference,
    prepare_reference,
    reference_pixels,
    token_count,
)
from engine.profiling import StageTimer
from engine.sampler import SeededNoise, denoise, shifted_timesteps

__all__ = ["RawRun", "Session", "prepare_session", "run_chunk", "run_chunks"]

log = logging.getLogger(__name__)

SHIFT = 5.0
TEXT_TOKENS = 32  # a typical trimmed prompt length; the DiT pads to 512 either way
CLIP_TOKENS, CLIP_DIM = 257, 1280


@dataclass
class Session:
    ref: PreparedReference  # cond_image (colour reference), y, first motion latent
    context: torch.Tensor | None  # (1, L_txt, 4096); None for FlashHead
    clip_fea: torch.Tensor | None  # (1, 257, 1280); None for FlashHead
    motion: torch.Tensor  # (1, 16, T_m, h, w)
    timesteps: torch.Tensor  # shifted, steps + 1 values ending in 0
    seq_len: int
    noise: SeededNoise
    cross: Any = None  # the DiT's cached text/image K/V (None: recomputed every step, as the release)


@dataclass
class RawRun:
    """What the loop measured, before summarising."""

    per_chunk: list[dict[str, float]]  # ms per stage, per chunk
    wall_ms: list[float]  # wall time per chunk, start to frames on the host
    prepare_ms: float  # session preparation (reference encode), before chunk 0
    build_s: float
    dit_params: int
    frame_shape: tuple[int, ...]  # (frames_out, H, W, 3)
    peak_memory_gib: float | None
    peak_reserved_gib: float | None
    rank: int
    world_size: int
    matmul_ceiling: dict[str, dict[str, Any]] | None = None  # engine.bench.ceiling.device_ceilings, per precision


def prepare_session(cfg: BenchConfig, vae: WanVAE, device: torch.device, dit: Any = None) -> Session:
    """Per-session state as ``engine.prepare`` builds it, from a random reference image (with the DiT's cached
    cross-attention K/V when ``dit`` is given and ``cfg.cross_kv_cache``)."""
    dtype = torch_dtype(cfg)
    image = np.random.default_rng(cfg.seed).integers(0, 256, (cfg.height, cfg.width, 3), dtype=np.uint8)
    pixels = reference_pixels(image, dtype=dtype, device=device)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    lat_hw = (cfg.height // vae.config.spatial_factor, cfg.width // vae.config.spatial_factor)
    context = clip_fea = cross = None
    if cfg.model == "flashhead":  # y = the reference latent over the chunk; no text, no CLIP
        ref = prepare_flashhead_reference(pixels, vae, cfg.frames)
    else:
        ref = prepare_reference(pixels, vae, cfg.frames)
        context = torch.randn(1, TEXT_TOKENS, TEXT_DIM, device=device, dtype=dtype, generator=gen)
        clip_fea = torch.randn(1, CLIP_TOKENS, CLIP_DIM, device=device, dtype=dtype, generator=gen)
        cross = dit.context_kv(context, clip_fea) if dit is not None and cfg.cross_kv_cache else None
    return Session(
        ref=ref,
        context=context,
        clip_fea=clip_fea,
        motion=ref.motion_latent,
        timesteps=shifted_timesteps(cfg.steps, SHIFT),
        seq_len=token_count(cfg.frames, lat_hw),
        noise=SeededNoise(gen),
        cross=cross,
    )


def _timed_dit(dit: Any, s: Session, audio: torch.Tensor, timer: StageTimer) -> Any:
    """The sampler's ``dit_fn`` with the session's conditioning bound; each call is stage ``dit_step_<i>``."""
    calls = [0]

    def dit_fn(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with timer.stage(f"dit_step_{calls[0]}"):
            calls[0] += 1
            cached = {} if s.cross is None else {"cross": s.cross}
            return dit(latent, t, s.context, s.clip_fea, s.ref.y, audio, seq_len=s.seq_len, **cached)

    return dit_fn


def run_chunk(
    cfg: BenchConfig, dit: Any, vae: WanVAE, audio_enc: AudioEncoder,
    window: StreamingAudioWindow, s: Session, timer: StageTimer, pcm: np.ndarray,
) -> np.ndarray:
    """One streaming chunk (SPEC §6.3); returns the emitted uint8 frames ``(F - 5, H, W, 3)`` on the host."""
    dtype = torch_dtype(cfg)
    with timer.stage("audio_encode"):
        window.push(pcm)
        audio, _ = audio_enc.embed_window(window, cfg.frames)  # (1, F, 5, 12, 768) fp32
    shape = (1, 16, *s.ref.y.shape[2:])
    latent = s.noise.initial(shape, dtype, s.ref.y.device)
    latent = denoise(_timed_dit(dit, s, audio, timer), latent, s.motion, s.timesteps, s.noise)
    with timer.stage("vae_decode"):
        video = vae.decode(latent.to(dtype))
    with timer.stage("colour_correction"):
        video = match_and_blend_colors(video, s.ref.cond_image, 1.0)
    with timer.stage("motion_encode"):
        s.motion = vae.encode(video[:, :, -MOTION_FRAMES:])
    with timer.stage("device_to_host"):
        host = to_uint8_frames(video[:, :, MOTION_FRAMES:]).cpu().numpy()
    return host


def _parallel(cfg: BenchConfig, dit: torch.nn.Module, vae: WanVAE) -> Any:
    """Join the torchrun group; Ulysses x Ring on the DiT, the VAE in bands of rows (``world_size > 1`` only)."""
    from engine.parallel.mesh import init_parallel
    from engine.parallel.usp import apply_sequence_parallel
    from engine.parallel.vae import apply_parallel_vae

    rank = int(os.environ.get("RANK", "-1"))
    if rank < 0 or int(os.environ.get("WORLD_SIZE", "0")) != cfg.world_size:
        raise RuntimeError(
            f"--world-size {cfg.world_size} needs torchrun: run it through `soulx-live bench` (it launches "
            f"torchrun itself) or `torchrun --nproc_per_node {cfg.world_size} -m engine.bench ...`"
        )
    backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
    ctx = init_parallel(cfg.world_size, rank, backend=backend, num_heads=dit.config.num_heads,
                        ulysses_degree=cfg.ulysses_degree, ring_degree=cfg.ring_degree)
    backend_name = None if cfg.attention_backend == "auto" else cfg.attention_backend
    apply_sequence_parallel(dit, ctx, backend=backend_name, sp_backend="native")
    if cfg.parallel_vae:
        apply_parallel_vae(vae, rank=ctx.rank, world=ctx.world_size, group=ctx.group)
    return ctx


def run_chunks(cfg: BenchConfig) -> RawRun:
    """Build the models, prepare a session and stream ``cfg.chunks`` chunks, timing each stage."""
    if cfg.attention_backend != "auto":
        from engine.ops.attention import set_attention_backend

        set_attention_backend(cfg.attention_backend)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    device = torch.device(cfg.device)
    ctx = None
    if cfg.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dit, vae, audio_enc = build_models(cfg, device)
    if cfg.world_size > 1:
        ctx = _parallel(cfg, dit, vae)
    if cfg.fp8 or cfg.offload or cfg.fp8_weights:
        from engine.memory import MemoryMode
        from engine.placement import place_dit

        place_dit(dit, device, MemoryMode(offload=cfg.offload, fp8_weights=cfg.fp8_weights), fp8_gemms=cfg.fp8)
    if cfg.compile:
        from engine.ops.compile import compile_dit_blocks

        compile_dit_blocks(dit, cfg.compile_mode)  # type: ignore[arg-type]
    dit_call: Any = dit
    build_s = time.perf_counter() - t0
    try:
        return _stream(cfg, dit, dit_call, vae, audio_enc, device, build_s, ctx)
    finally:
        if ctx is not None:
            from engine.parallel.mesh import destroy_parallel

            destroy_parallel(ctx)


def _stream(
    cfg: BenchConfig, dit: torch.nn.Module, dit_call: Any, vae: WanVAE, audio_enc: AudioEncoder,
    device: torch.device, build_s: float, ctx: Any,
) -> RawRun:
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        session = prepare_session(cfg, vae, device, dit)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        prepare_ms = (time.perf_counter() - start) * 1e3
        timer = StageTimer(device, enabled=True)
        window = StreamingAudioWindow()
        n_samples = samples_per_chunk(cfg.frames, MOTION_FRAMES)
        rng = np.random.default_rng(cfg.seed)
        per_chunk: list[dict[str, float]] = []
        wall_ms: list[float] = []
        frames = np.zeros((0,))
        for _ in range(cfg.chunks):
            pcm = (0.1 * rng.standard_normal(n_samples)).astype(np.float32)
            start = time.perf_counter()
            frames = run_chunk(cfg, dit_call, vae, audio_enc, window, session, timer, pcm)
            per_chunk.append(timer.read())  # the one wait per chunk
            wall_ms.append((time.perf_counter() - start) * 1e3)
            log.info("chunk %d: %.1f ms", len(wall_ms) - 1, wall_ms[-1])
    peak = reserved = None
    if device.type == "cuda":
        peak = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        reserved = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
    ceiling = device_ceilings(device)  # after the memory peaks are read; on a CPU only the reason, no work
    return RawRun(
        per_chunk=per_chunk,
        wall_ms=wall_ms,
        prepare_ms=prepare_ms,
        build_s=build_s,
        dit_params=sum(p.numel() for p in dit.parameters()),
        frame_shape=tuple(frames.shape),
        peak_memory_gib=peak,
        peak_reserved_gib=reserved,
        rank=0 if ctx is None else ctx.rank,
        world_size=cfg.world_size,
        matmul_ceiling=ceiling,
    )


def dit_config_for(cfg: BenchConfig) -> Any:
    return dit_config(cfg.tiny, cfg.model)
