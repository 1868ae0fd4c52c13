"""The FlashHead engine behind ``engine.interface``: the tiny-random preset through the factory, a session's
conditioning (no text, no CLIP, y = the reference latent), the released folder layout (doctor and strict loading,
built from the golden-flashhead bundle's tiny models), and ``soulx-live render``."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from golden_support import flashhead_golden_or_skip

from engine.flashhead import FlashHeadEngine, flashhead_config
from engine.flashtalk import stream_step
from engine.interface import SessionRequest
from engine.loading.layout import (
    FLASHHEAD_MODEL_DIR,
    FLASHHEAD_VAE,
    FLASHHEAD_WAV2VEC_DIR,
    flashhead_weights_problems,
)
from engine.state import SessionState
from soulx_live.config import SoulxConfig
from soulx_live.doctor import check_weights
from soulx_live.factory.engine import build_engine, diffusion_problems


def _tiny_config(**engine: object) -> SoulxConfig:
    return SoulxConfig.model_validate(
        {"engine": {"kind": "flashhead", "flashhead": {"preset": "tiny-random"}, "drift": {"enabled": False}, **engine}}
    )


def test_tiny_preset_streams_through_the_interface() -> None:
    engine = build_engine(_tiny_config())
    assert isinstance(engine, FlashHeadEngine) and engine.name == "flashhead-tiny-random"
    assert engine.models.dit.transformer.config.variant == "flashhead"
    session = engine.start_session(SessionRequest(session_id="s", avatar=None, prompt="ignored", seed=3))
    cond = session.state.conditioning
    assert cond.context is None and cond.clip_fea is None
    assert cond.y.shape[1] == 16 and torch.equal(cond.reference_latent, cond.y[:, :, :1])  # no mask channels
    spec = engine.spec
    t = np.arange(3 * spec.samples_per_chunk) / spec.sample_rate
    session.push_audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    chunks = [session.next_chunk() for _ in range(session.chunks_ready())]
    assert [c.first_frame for c in chunks] == [0, 4, 8]
    assert all(c.frames.shape == (4, spec.height, spec.width, 3) and c.frames.dtype == np.uint8 for c in chunks)
    assert all(c.audio.shape[0] == spec.samples_per_chunk for c in chunks)
    assert chunks[0].frames.std() > 1.0  # a picture, not a blank


def test_released_defaults() -> None:
    cfg = flashhead_config()
    assert (cfg.height, cfg.width, cfg.frame_num, cfg.motion_frames, cfg.sampling_steps) == (512, 512, 33, 5, 4)
    assert cfg.samples_per_chunk == 17920 and cfg.seq_len() == 9 * 32 * 32
    settings = SoulxConfig.model_validate({"engine": {"kind": "flashhead"}}).engine.flashhead
    assert (settings.height, settings.width, settings.preset) == (512, 512, "pro")
    from soulx_live.config import load_config

    shipped = load_config(Path(__file__).parents[2] / "configs" / "engine-flashhead-pro.yaml", env={}).engine
    assert shipped.kind == "flashhead" and shipped.flashhead.dtype == "bf16" and shipped.device == "cuda"


@pytest.fixture
def released_folder(tmp_path: Path) -> Path:
    """A SoulX-FlashHead-1_3B layout holding the golden bundle's tiny models, wav2vec2-base-960h beside it."""
    models = flashhead_golden_or_skip() / "models"
    root = tmp_path / "SoulX-FlashHead-1_3B"
    shutil.copytree(models / "dit", root / FLASHHEAD_MODEL_DIR)
    (root / FLASHHEAD_VAE).parent.mkdir(parents=True)
    shutil.copy(models / "vae_dim8" / "Wan2.1_VAE.pth", root / FLASHHEAD_VAE)
    shutil.copy(models / "vae_dim8" / "vae_config.json", (root / FLASHHEAD_VAE).parent / "vae_config.json")
    shutil.copytree(models / "wav2vec2", tmp_path / FLASHHEAD_WAV2VEC_DIR)
    return root


def test_doctor_checks_the_released_layout(released_folder: Path) -> None:
    assert flashhead_weights_problems(released_folder) == []
    assert check_weights(released_folder, "flashhead").ok
    (released_folder / FLASHHEAD_VAE).unlink()
    shutil.rmtree(released_folder / FLASHHEAD_MODEL_DIR)
    problems = flashhead_weights_problems(released_folder)
    assert any(FLASHHEAD_MODEL_DIR in p for p in problems) and any("Wan2.1_VAE.pth" in p for p in problems)
    row = check_weights(released_folder, "flashhead")
    assert not row.ok and "Model_Pro" in row.detail and "SoulX-FlashHead-1_3B" in row.fix
    config = SoulxConfig.model_validate({"engine": {"kind": "flashhead", "weights_dir": str(released_folder)}})
    assert any("Model_Pro" in p for p in diffusion_problems(config))


def test_loads_the_released_layout_and_runs_a_chunk(released_folder: Path, tmp_path: Path) -> None:
    cfg = flashhead_config(None)
    from dataclasses import replace

    cfg = replace(cfg, height=32, width=32, frame_num=9, device="cpu", dtype="fp32")
    engine = FlashHeadEngine.from_folder(released_folder, cfg, cache_dir=tmp_path / "cache")
    assert engine.audio_encoder.loudness_norm is False  # FlashHead's release does not normalise loudness
    image = np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    cond = engine.conditioning_for(image, "")
    again = engine.conditioning_for(image, "")  # from the disk cache
    assert torch.equal(cond.y, again.y) and cond.y.shape == (1, 16, 3, 4, 4)
    state = SessionState.initial(cond, seed=7)
    audio = torch.randn(1, 9, 5, 12, 768, generator=torch.Generator().manual_seed(0))
    state2, video = stream_step(engine.models, state, audio, cfg)
    assert video.shape == (1, 3, 4, 32, 32) and state2.motion_latent.shape == (1, 16, 2, 4, 4)
    assert torch.isfinite(video).all()


def test_render_with_the_tiny_flashhead(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "daemon"))
    from daemon_fakes import tone, write_audio

    from plugins.recorder import probe_media
    from soulx_live import cli

    wav = write_audio(tmp_path / "speech.wav", tone(1.0, 16000, 220.0), 16000)
    out = tmp_path / "render.mp4"
    code = cli.main(["render", str(wav), "-o", str(out), "--no-progress", "--set", "engine.kind=flashhead",
                     "--set", "engine.flashhead.preset=tiny-random", "--set", "engine.drift.enabled=false"])
    assert code == cli.EXIT_OK
    info = probe_media(out)
    assert (info.width, info.height) == (48, 64) and info.frames == 28  # 1 s -> 7 chunks of 4 frames
    assert abs(info.video_s - info.audio_s) <= 1 / 25


def test_drift_self_correction_runs_on_flashhead() -> None:
    """FlashTalk's drift monitor needs nothing FlashHead lacks: with an impossible colour threshold every chunk
    is corrected (re-anchored to the reference latent)."""
    engine = build_engine(_tiny_config(drift={"enabled": True, "color_shift_max": 0.001, "regenerate": False}))
    session = engine.start_session(SessionRequest(session_id="d", avatar=None, seed=1))
    session.push_audio(np.zeros(2 * engine.spec.samples_per_chunk, np.float32))
    session.next_chunk()
    session.next_chunk()
    assert session.stats.chunks == 2 and session.stats.corrections == 2
    assert torch.equal(session.state.motion_latent, session.state.conditioning.reference_latent)


def test_build_engine_loads_the_released_layout(released_folder: Path) -> None:
    """``engine.kind: flashhead`` with a weights folder goes through the same build path as FlashTalk 14B (here with
    the offload memory mode: the DiT's blocks are loaded on the host and streamed)."""
    from engine.build import build_engine as build_from_settings
    from soulx_live.config import EngineConfig

    settings = EngineConfig(kind="flashhead", weights_dir=released_folder, device="cpu",
                            flashhead={"height": 32, "width": 32, "frame_num": 9, "dtype": "fp32", "memory": "offload"})
    engine = build_from_settings(settings)
    assert isinstance(engine, FlashHeadEngine) and engine.spec.frames_per_chunk == 4
    assert getattr(engine.models.dit, "offloader", None) is not None
    with pytest.raises(Exception, match="SoulX-FlashHead-1_3B"):
        build_from_settings(EngineConfig(kind="flashhead", device="cpu"))
