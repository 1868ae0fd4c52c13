"""One-command GPU benchmark of the full FlashTalk configuration with random weights.

Builds the 14B audio DiT (``WanAudioTransformer`` at its released widths, ~18.9 B parameters, bf16), the
released-width Wan VAE (bf16) and a wav2vec2-base (fp32) directly on the device with random weights — no
checkpoint needed — then streams ``--chunks`` chunks exactly as the release does per chunk (spec §6.3):
audio encode of the 8 s buffer -> 4 DiT steps (x0 prediction, fresh-noise re-noising, motion latents
re-imposed) -> VAE decode -> colour correction -> VAE re-encode of the last 5 frames -> uint8 on the device
-> device-to-host copy. T5/CLIP are once-per-session (``engine.conditioning`` caches them), so random
context/CLIP tokens of the released shapes are used.

Everything timed is the engine's own code: models (``engine.models.transformer``/``vae``/``wav2vec2``),
``engine.audio_encoder``, ``engine.prepare``, ``engine.sampler.denoise`` and ``engine.postprocess``, driven
by a loop written out here over those pure functions (the per-chunk order of spec §6.3). ``dit_step_<i>`` is
the DiT forward of step i; the sampler's element-wise update between steps is in ``chunk_ms`` only. Eager mode (no ``torch.compile``); attention backend as ``engine.ops.attention``
resolves it (reported).

Per-stage times come from ``engine.profiling.StageTimer`` (CUDA events, read once per chunk). The first
chunk is reported separately (allocator warm-up, kernel selection); averages are over the later chunks.

Usage::

    python benchmarks/engine_14b.py [--frames 33 --height 768 --width 448 --steps 4 --dtype bf16
                                     --chunks 3 --out benchmarks/results/engine_14b.json]
    python benchmarks/engine_14b.py --tiny --chunks 2     # CPU, tiny widths: checks the script itself

Prints the JSON report and writes it to ``--out``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.audio_encoder import AudioEncoder, StreamingAudioWindow, samples_per_chunk  # noqa: E402
from engine.postprocess import match_and_blend_colors, to_uint8_frames  # noqa: E402
from engine.prepare import PreparedReference, prepare_reference, reference_pixels, token_count  # noqa: E402
from engine.sampler import SeededNoise, denoise, shifted_timesteps  # noqa: E402
from engine.models.vae import VAEConfig, WanVAE  # noqa: E402
from engine.models.wav2vec2 import FlashTalkWav2Vec2  # noqa: E402
from engine.profiling import StageTimer  # noqa: E402

log = logging.getLogger("benchmarks.engine_14b")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MOTION_FRAMES = 5
SHIFT = 5.0
TEXT_TOKENS = 32  # a typical trimmed prompt length; the DiT pads to 512 either way
CLIP_TOKENS, CLIP_DIM, TEXT_DIM = 257, 1280, 4096
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "engine_14b.json"


# ----------------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class BenchConfig:
    frames: int
    height: int
    width: int
    steps: int
    dtype: str
    chunks: int
    tiny: bool
    device: str
    seed: int


def parse_args(argv: list[str] | None) -> tuple[BenchConfig, Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=None, help="pixel frames per chunk (33 released; 9 with --tiny)")
    p.add_argument("--height", type=int, default=None, help="768 released; 32 with --tiny")
    p.add_argument("--width", type=int, default=None, help="448 released; 32 with --tiny")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="bf16 released; fp32 with --tiny")
    p.add_argument("--chunks", type=int, default=3)
    p.add_argument("--seed", type=int, default=9999)
    p.add_argument("--tiny", action="store_true", help="tiny widths on the CPU (checks the script, not speed)")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    p.add_argument("--out", type=Path, default=None, help=f"JSON report path (default {DEFAULT_OUT})")
    a = p.parse_args(argv)
    cfg = BenchConfig(
        frames=a.frames or (9 if a.tiny else 33),
        height=a.height or (32 if a.tiny else 768),
        width=a.width or (32 if a.tiny else 448),
        steps=a.steps,
        dtype=a.dtype or ("fp32" if a.tiny else "bf16"),
        chunks=a.chunks,
        tiny=a.tiny,
        device=a.device or ("cpu" if a.tiny else "cuda"),
        seed=a.seed,
    )
    if cfg.frames <= MOTION_FRAMES or (cfg.frames - 1) % 4:
        p.error(f"--frames must be 4k+1 and > {MOTION_FRAMES}, got {cfg.frames}")
    if cfg.height % 16 or cfg.width % 16:
        p.error("--height and --width must be multiples of 16")
    if cfg.chunks < 1 or cfg.steps < 1:
        p.error("--chunks and --steps must be >= 1")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device: run on a GPU machine, or use --tiny for the CPU check")
    out = a.out or (DEFAULT_OUT.with_name("engine_14b_tiny.json") if a.tiny else DEFAULT_OUT)
    return cfg, out


# ----------------------------------------------------------------------------------------------- models

@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_random(factory: Callable[[], torch.nn.Module], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Construct directly on ``device`` in ``dtype`` (no fp32 copy of 18.9 B parameters), default init."""
    with torch.device(device), _default_dtype(dtype):
        module = factory()
    return module.to(dtype).eval().requires_grad_(False)


def dit_config(tiny: bool) -> Any:
    from engine.models.transformer import DiTConfig

    if not tiny:
        return DiTConfig()
    if hasattr(DiTConfig, "tiny"):
        return DiTConfig.tiny()
    names = {f.name for f in dataclasses.fields(DiTConfig)}
    wanted = {"dim": 64, "ffn_dim": 96, "num_heads": 4, "num_layers": 2, "text_dim": TEXT_DIM}
    return DiTConfig(**{k: v for k, v in wanted.items() if k in names})


def wav2vec2_config(tiny: bool) -> Any:
    from transformers import Wav2Vec2Config

    if not tiny:
        return Wav2Vec2Config()  # wav2vec2-base: 12 layers x 768 (chinese-wav2vec2-base has the same shapes)
    # The DiT's audio projection takes 12 layers x 768 channels, so only the CNN and FFN shrink.
    return Wav2Vec2Config(conv_dim=(32,) * 7, intermediate_size=64, num_attention_heads=4,
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def build_models(cfg: BenchConfig, device: torch.device) -> tuple[torch.nn.Module, WanVAE, AudioEncoder]:
    from engine.models.transformer import WanAudioTransformer

    dtype = DTYPES[cfg.dtype]
    dit = build_random(lambda: WanAudioTransformer(dit_config(cfg.tiny)), device, dtype)
    vae_cfg = VAEConfig(dim=8) if cfg.tiny else VAEConfig()
    vae = build_random(lambda: WanVAE(vae_cfg), device, dtype)
    vae.reset_latent_stats()
    w2v = build_random(lambda: FlashTalkWav2Vec2(wav2vec2_config(cfg.tiny)), device, torch.float32)
    return dit, vae, AudioEncoder(w2v)


# ----------------------------------------------------------------------------------------------- session

@dataclass
class Session:
    ref: PreparedReference  # cond_image (colour reference), y, first motion latent
    context: torch.Tensor  # (1, L_txt, 4096)
    clip_fea: torch.Tensor  # (1, 257, 1280)
    motion: torch.Tensor  # (1, 16, T_m, h, w)
    timesteps: torch.Tensor  # shifted, steps + 1 values ending in 0
    seq_len: int
    noise: SeededNoise


def prepare_session(cfg: BenchConfig, vae: WanVAE, device: torch.device) -> Session:
    """Per-session state as ``engine.prepare`` builds it, from a random reference image."""
    dtype = DTYPES[cfg.dtype]
    image = np.random.default_rng(cfg.seed).integers(0, 256, (cfg.height, cfg.width, 3), dtype=np.uint8)
    ref = prepare_reference(reference_pixels(image, dtype=dtype, device=device), vae, cfg.frames)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    lat_hw = (cfg.height // vae.config.spatial_factor, cfg.width // vae.config.spatial_factor)
    return Session(
        ref=ref,
        context=torch.randn(1, TEXT_TOKENS, TEXT_DIM, device=device, dtype=dtype, generator=gen),
        clip_fea=torch.randn(1, CLIP_TOKENS, CLIP_DIM, device=device, dtype=dtype, generator=gen),
        motion=ref.motion_latent,
        timesteps=shifted_timesteps(cfg.steps, SHIFT),
        seq_len=token_count(cfg.frames, lat_hw),
        noise=SeededNoise(gen),
    )


# ----------------------------------------------------------------------------------------------- per chunk

def timed_dit(dit: torch.nn.Module, s: Session, audio: torch.Tensor, timer: StageTimer) -> Callable[..., torch.Tensor]:
    """The sampler's ``dit_fn`` with the session's conditioning bound; each call is stage ``dit_step_<i>``."""
    calls = [0]

    def dit_fn(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with timer.stage(f"dit_step_{calls[0]}"):
            calls[0] += 1
            return dit(latent, t, s.context, s.clip_fea, s.ref.y, audio, seq_len=s.seq_len)

    return dit_fn


def run_chunk(
    cfg: BenchConfig, dit: torch.nn.Module, vae: WanVAE, audio_enc: AudioEncoder,
    window: StreamingAudioWindow, s: Session, timer: StageTimer, pcm: np.ndarray,
) -> np.ndarray:
    """One streaming chunk (spec §6.3); returns the emitted uint8 frames (F - 5, H, W, 3) on the host."""
    dtype = DTYPES[cfg.dtype]
    with timer.stage("audio_encode"):
        window.push(pcm)
        audio, _ = audio_enc.embed_window(window, cfg.frames)  # (1, F, 5, 12, 768) fp32
    shape = (1, 16, *s.ref.y.shape[2:])
    latent = s.noise.initial(shape, dtype, s.ref.y.device)
    latent = denoise(timed_dit(dit, s, audio, timer), latent, s.motion, s.timesteps, s.noise)
    with timer.stage("vae_decode"):
        video = vae.decode(latent.to(dtype))
    with timer.stage("colour_correction"):
        video = match_and_blend_colors(video, s.ref.cond_image, 1.0)
    with timer.stage("motion_encode"):
        s.motion = vae.encode(video[:, :, -MOTION_FRAMES:])
    with timer.stage("device_to_host"):
        host = to_uint8_frames(video[:, :, MOTION_FRAMES:]).cpu().numpy()
    return host


# ----------------------------------------------------------------------------------------------- report

def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {"device_name": props.name, "device_memory_gib": round(props.total_memory / 2**30, 1),
                "cudnn": torch.backends.cudnn.version()}
    return env


def attention_backend(device: torch.device, dtype: torch.dtype) -> str:
    """Which kernel ``engine.ops.attention`` picks for the DiT's q/k/v on this device and dtype."""
    from engine.ops.attention import resolve_backend

    return resolve_backend(torch.empty(1, 1, 1, 8, device=device, dtype=dtype))


def summarize(per_chunk: list[dict[str, float]], wall_ms: list[float], frames_out: int) -> dict[str, Any]:
    """First chunk alone (warm-up); mean and min of the steady chunks (all chunks when only one).

    ``chunk_ms`` is wall time from the start of a chunk to its frames on the host (the previous chunk's
    ``read()`` left the device idle), so it includes the untimed gaps; ``stages_sum_ms`` does not.
    """
    steady, steady_wall = (per_chunk[1:], wall_ms[1:]) if len(per_chunk) > 1 else (per_chunk, wall_ms)
    stages = {k: round(statistics.fmean(c[k] for c in steady), 3) for k in steady[0]}
    mean_ms = statistics.fmean(steady_wall)
    return {
        "stages_ms": stages,
        "stages_sum_ms": round(sum(stages.values()), 3),
        "dit_ms": round(sum(v for k, v in stages.items() if k.startswith("dit_step_")), 3),
        "chunk_ms": round(mean_ms, 3),
        "chunk_ms_min": round(min(steady_wall), 3),
        "first_chunk_ms": round(wall_ms[0], 3),
        "frames_per_chunk": frames_out,
        "fps": round(frames_out / (mean_ms / 1e3), 3),
        "real_time_factor": round((frames_out / 25.0) / (mean_ms / 1e3), 3),
    }


def run(cfg: BenchConfig) -> dict[str, Any]:
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    dit, vae, audio_enc = build_models(cfg, device)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in dit.parameters())
    with torch.inference_mode():
        session = prepare_session(cfg, vae, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        timer = StageTimer(device, enabled=True)
        window = StreamingAudioWindow()
        n_samples = samples_per_chunk(cfg.frames, MOTION_FRAMES)
        rng = np.random.default_rng(cfg.seed)
        per_chunk: list[dict[str, float]] = []
        wall_ms: list[float] = []
        for _ in range(cfg.chunks):
            pcm = (0.1 * rng.standard_normal(n_samples)).astype(np.float32)
            start = time.perf_counter()
            frames = run_chunk(cfg, dit, vae, audio_enc, window, session, timer, pcm)
            per_chunk.append(timer.read())  # the one wait per chunk
            wall_ms.append((time.perf_counter() - start) * 1e3)
            log.info("chunk %d: %.1f ms", len(wall_ms) - 1, wall_ms[-1])
    report: dict[str, Any] = {
        "benchmark": "engine_14b",
        **environment(device),
        "config": dataclasses.asdict(cfg)
        | {"motion_frames": MOTION_FRAMES, "shift": SHIFT, "text_tokens": TEXT_TOKENS},
        "dit_params": params,
        "attention_backend": attention_backend(device, DTYPES[cfg.dtype]),
        "build_s": round(build_s, 2),
        "per_chunk_ms": [{k: round(v, 3) for k, v in c.items()} for c in per_chunk],
        "wall_ms": [round(v, 3) for v in wall_ms],
        **summarize(per_chunk, wall_ms, frames.shape[0]),
        "output_frame_shape": list(frames.shape[1:]),
    }
    report["peak_memory_gib"] = report["peak_reserved_gib"] = None  # CPU: not tracked
    if device.type == "cuda":
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        report["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    cfg, out = parse_args(argv)
    report = run(cfg)
    text = json.dumps(report, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    if not all(math.isfinite(v) for v in report["stages_ms"].values()):
        log.error("non-finite stage timings")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
