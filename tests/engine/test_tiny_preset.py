"""C6: ``engine.build.build_engine`` with ``engine.flashtalk.preset: tiny-random``.

A seeded random tiny DiT / VAE / wav2vec2 on the CPU, no weight files, through the same
``FlashTalkSession`` code path as the released model (sampler, colour correction, motion re-encode,
audio window, drift monitor), fast enough for daemon and worker tests.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from engine.build import build_engine
from engine.config import FlashTalkConfigError
from engine.drift import DriftReport
from engine.flashtalk import FlashTalkEngine, FlashTalkSession
from engine.interface import AvatarEngine, AvatarSession, SessionRequest
from soulx_live.config import EngineConfig, load_config

SR = 16000


def tiny_settings(**overrides: object) -> EngineConfig:
    """The packaged defaults (768x448, no weights_dir, device null) with the preset switched on."""
    return load_config(
        None, env={}, overrides={"engine.kind": "flashtalk", "engine.flashtalk.preset": "tiny-random", **overrides}
    ).engine


@pytest.fixture(scope="module")
def engine() -> FlashTalkEngine:
    torch.set_num_threads(1)
    return build_engine(tiny_settings())


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 180 * t) * np.clip(np.sin(2 * np.pi * 3 * t), 0, None)).astype(np.float32)


def test_builds_without_weights_on_the_cpu(engine: FlashTalkEngine) -> None:
    assert isinstance(engine, AvatarEngine) and engine.name == "flashtalk-tiny-random"
    assert engine.device.type == "cpu" and engine.dtype == torch.float32
    spec = engine.spec
    assert (spec.height, spec.width, spec.frames_per_chunk, spec.sample_rate) == (64, 48, 4, 16000)
    assert spec.samples_per_chunk == 4 * 640 and engine.cfg.sampling_steps == 4  # the configured steps
    assert engine.drift is not None and engine.drift.enabled  # engine.drift comes along
    session = engine.start_session(SessionRequest("iface"))
    assert isinstance(session, AvatarSession) and isinstance(session, FlashTalkSession)
    assert session.monitor is not None and session.stats.corrections == 0 and session.stats.drift is None


def test_chunks_are_fast_contiguous_and_monitored(engine: FlashTalkEngine) -> None:
    session = engine.start_session(SessionRequest("stream", seed=5))
    spc = engine.spec.samples_per_chunk
    audio = tone(12 * spc / SR)
    session.push_audio(audio)
    session.next_chunk()  # warm-up (first-call allocations)
    times = []
    for k in range(1, 12):
        start = time.perf_counter()
        chunk = session.next_chunk()
        times.append(time.perf_counter() - start)
        assert chunk.seq == k and chunk.first_frame == 4 * k and chunk.audio_t0 == 4 * k * 640
        assert chunk.frames.shape == (4, 64, 48, 3) and chunk.frames.dtype == np.uint8 and chunk.frames.std() > 5
        np.testing.assert_array_equal(chunk.audio, audio[k * spc : (k + 1) * spc])
    assert isinstance(session.stats.drift, DriftReport) and session.stats.chunks == 12
    assert session.stats.corrections == 0
    assert float(np.median(times)) < 1.0, f"tiny chunk took {np.median(times):.3f} s (C6: < 1 s on one core)"


def test_seeded_models_and_sessions_are_reproducible(engine: FlashTalkEngine) -> None:
    other = build_engine(tiny_settings())
    frames = []
    for eng in (engine, other):
        session = eng.start_session(SessionRequest("same", seed=7))
        session.push_audio(tone(2 * eng.spec.samples_per_chunk / SR))
        frames.append(np.concatenate([session.next_chunk().frames for _ in range(2)]))
    np.testing.assert_array_equal(frames[0], frames[1])
    session = engine.start_session(SessionRequest("different", seed=8))
    session.push_audio(tone(2 * engine.spec.samples_per_chunk / SR))
    assert not np.array_equal(np.concatenate([session.next_chunk().frames for _ in range(2)]), frames[0])


def test_reset_snapshot_and_avatar_go_through_the_same_session(engine: FlashTalkEngine) -> None:
    rng = np.random.default_rng(0)
    avatar = (rng.integers(0, 255, (90, 70, 3))).astype(np.uint8)
    session = engine.start_session(SessionRequest("avatar", avatar=avatar, seed=2))
    assert session.state.conditioning.cond_image.shape == (1, 3, 1, 64, 48)  # fitted to the preset's size
    session.push_audio(tone(4 * engine.spec.samples_per_chunk / SR))
    session.next_chunk()
    snap = session.snapshot()
    first = session.next_chunk()
    session.restore(snap)
    np.testing.assert_array_equal(session.next_chunk().frames, first.frames)
    session.reset()
    assert session.state.chunk_index == 0 and session.state.frame_index == 8
    assert session.next_chunk().first_frame == 8


def test_preset_ignores_size_device_and_weights_but_checks_the_14b_path() -> None:
    settings = tiny_settings(**{"engine.device": "cuda", "engine.flashtalk.height": 768, "engine.drift.enabled": False})
    tiny = build_engine(settings)
    assert tiny.device.type == "cpu" and tiny.spec.height == 64 and tiny.drift is not None
    assert tiny.start_session(SessionRequest("off")).monitor is None  # engine.drift.enabled: false
    real = settings.model_copy(update={"flashtalk": settings.flashtalk.model_copy(update={"preset": "14b"})})
    with pytest.raises(FlashTalkConfigError, match="weights_dir"):
        build_engine(real)


def test_tiny_vae_round_trip_is_exact_on_latents() -> None:
    from engine.tiny import TinyPatchVAE

    vae = TinyPatchVAE(seed=3)
    g = torch.Generator().manual_seed(0)
    z = 0.1 * torch.randn(1, 16, 3, 8, 6, generator=g)  # small: decoding stays inside [-1, 1] (no clamping)
    video = vae.decode(z)
    assert video.shape == (1, 3, 9, 64, 48) and video.abs().max() < 1
    torch.testing.assert_close(vae.encode(video), z, rtol=0, atol=1e-5)
    assert torch.equal(video[:, :, 4], vae.decode(z[:, :, :2])[:, :, 4])  # latent k is pixel frame 4k


def test_degrees_that_do_not_fit_are_refused_before_joining_a_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun (env only: no process group is joined), wrong degrees fail fast with the setting to change."""
    from engine.build import build_engine
    from engine.config import FlashTalkConfigError
    from soulx_live.config import EngineConfig

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    bad = {"preset": "tiny-random", "world_size": 4}
    with pytest.raises(FlashTalkConfigError, match="Ulysses degree 4 does not divide the model's 2 heads"):
        build_engine(EngineConfig(kind="flashtalk", flashtalk={**bad, "ulysses_degree": 4}))
    with pytest.raises(FlashTalkConfigError, match="must equal world_size"):
        build_engine(EngineConfig(kind="flashtalk", flashtalk={**bad, "ulysses_degree": 2, "ring_degree": 3}))
