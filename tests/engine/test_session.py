"""A tiny FlashTalk engine on the CPU, end to end through ``engine.interface``.

Models: the golden bundle's random-weight DiT (dim 32), VAE (width 8) and wav2vec2 (hidden 32); output
48x32, 17 frames per chunk with 5 motion frames (12 emitted). The released DiT's audio projection takes
12 wav2vec2 layers x 768 channels whatever the wav2vec2 size, so the tiny wav2vec2's [.., 2, 32] windows
are mapped to [.., 12, 768] by a fixed random linear adapter. Text context and CLIP tokens are stub
tensors (T5/CLIP are engine.conditioning's job).
"""
from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason='the FlashTalk audio front end needs the [engine] extra: pip install -e ".[engine]" (or ".[all]")')
from golden_support import golden_models

from engine.audio_encoder import AudioEncoder, StreamingAudioWindow
from engine.config import (
    FlashTalkConfig,
    FlashTalkConfigError,
    resolve_device,
    resolve_dtypes,
)
from engine.flashtalk import FlashTalkEngine, stream_step
from engine.interface import AvatarEngine, AvatarSession, SessionRequest
from engine.postprocess import match_and_blend_colors, rgb_to_lab, to_uint8_frames
from engine.prepare import center_crop_box, condition_mask, fit_reference, token_count

SR = 16000
CFG = FlashTalkConfig(height=48, width=32, frame_num=17, motion_frames=5, device="cpu", dtype="fp32", seed=7)


class WidthAdapter:
    """Tiny wav2vec2 windows [1,F,5,L,C] -> the DiT's [1,F,5,12,768] by a fixed random projection."""

    def __init__(self, encoder: AudioEncoder) -> None:
        self.encoder = encoder
        self._weight: torch.Tensor | None = None

    def embed_window(self, window: StreamingAudioWindow, frame_num: int) -> tuple[torch.Tensor, torch.Tensor]:
        emb, hidden = self.encoder.embed_window(window, frame_num)
        b, f, k, layers, channels = emb.shape
        if self._weight is None:
            g = torch.Generator().manual_seed(5)
            self._weight = torch.randn(layers * channels, 12 * 768, generator=g) / (layers * channels) ** 0.5
        return (emb.reshape(b, f, k, layers * channels) @ self._weight).reshape(b, f, k, 12, 768), hidden


class StubConditioning:
    """Fixed text context and CLIP tokens; counts calls."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.context = torch.randn(10, 4096, generator=g)
        self.clip = torch.randn(1, 257, 1280, generator=g)
        self.images: list[np.ndarray] = []

    def text_context(self, prompt: str) -> torch.Tensor:
        return self.context

    def image_tokens(self, image_u8: np.ndarray) -> torch.Tensor:
        self.images.append(image_u8)
        return self.clip

    def reference_latents(self, image_u8: np.ndarray, params: str, compute):  # no disk cache in this stub
        return compute()


@pytest.fixture(scope="module")
def engine() -> FlashTalkEngine:
    golden = golden_models()
    from engine.loading.dit import load_dit
    from engine.loading.vae import load_vae

    return FlashTalkEngine.from_components(
        load_dit(golden / "dit"),
        load_vae(golden / "vae_dim8" / "Wan2.1_VAE.pth"),
        WidthAdapter(AudioEncoder.from_folder(golden / "wav2vec2")),
        StubConditioning(),
        CFG,
    )


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced-looking signal: harmonics of a wandering pitch under a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None)
    return (0.2 * voice * envelope + 0.005 * rng.standard_normal(t.shape)).astype(np.float32)


def avatar(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:60, 0:40]
    img = np.stack([yy * 4, xx * 6, (yy + xx) * 2], axis=-1) + rng.integers(0, 40, (60, 40, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is torch.Tensor or type(o) is torch.nn.Parameter)


# -- the session through engine.interface ------------------------------------------------------------------
def test_engine_and_session_satisfy_the_interface(engine: FlashTalkEngine) -> None:
    assert isinstance(engine, AvatarEngine)
    assert engine.spec.frames_per_chunk == 12 and engine.spec.samples_per_chunk == 12 * 640
    assert (engine.spec.height, engine.spec.width) == (48, 32)
    session = engine.start_session(SessionRequest("iface", avatar=avatar()))
    assert isinstance(session, AvatarSession)
    assert engine.conditioning.images[-1].shape == (48, 32, 3)  # CLIP sees the fitted reference


def test_streams_chunks_with_contiguous_timestamps_and_flat_memory(engine: FlashTalkEngine) -> None:
    """Eight chunks: uint8 frames of the right shape, audio and frame timelines contiguous, memory flat.

    Memory bounds, measured over chunks 3..8 (after the first chunks warmed caches and allocator arenas):
    * live torch tensors: no growth at all (a per-chunk tensor kept anywhere, e.g. the release's
      ``generated_list.append(video.cpu())``, adds at least one per chunk);
    * numpy bytes still allocated (tracemalloc): < 256 KiB growth (one chunk's uint8 frames are 55 KiB and
      its audio 30 KiB; the pending-audio queue and the window are preallocated and reused);
    * process RSS: < 24 MiB growth. A chunk allocates ~10 MiB of short-lived buffers (the 8 s window in
      float64, wav2vec2 activations); glibc may keep a few such arenas mapped, which is noise of that size,
      not growth. Retaining the per-chunk wav2vec2 activations (~8 MiB) would exceed the bound in 3 chunks.
    """
    session = engine.start_session(SessionRequest("stream", avatar=avatar(), seed=3))
    audio = speech_like(8 * 12 * 640 / SR + 0.1)
    session.push_audio(audio)
    assert session.chunks_ready() == 8
    spc, spf = engine.spec.samples_per_chunk, engine.spec.samples_per_frame
    tracemalloc.start()
    try:
        marks = {}
        for k in range(8):
            chunk = session.next_chunk()
            assert chunk.seq == k and chunk.first_frame == 12 * k and chunk.audio_t0 == 12 * k * spf
            assert chunk.frames.shape == (12, 48, 32, 3) and chunk.frames.dtype == np.uint8
            assert chunk.frames.flags["C_CONTIGUOUS"]
            assert chunk.audio.dtype == np.float32 and chunk.audio.shape == (12 * spf,)
            np.testing.assert_array_equal(chunk.audio, audio[k * spc : (k + 1) * spc])
            assert session.chunks_ready() == 7 - k
            assert 0 < chunk.frames.std()  # an actual image, not a constant
            del chunk
            if k in (2, 7):
                marks[k] = (live_tensors(), tracemalloc.get_traced_memory()[0], rss_bytes())
    finally:
        tracemalloc.stop()
    (t2, py2, rss2), (t7, py7, rss7) = marks[2], marks[7]
    assert t7 - t2 == 0, f"{t7 - t2} torch tensors accumulated over 5 chunks"
    assert py7 - py2 < 256 * 1024, f"numpy memory grew {py7 - py2} bytes over 5 chunks"
    assert rss7 - rss2 < 24 * 2**20, f"RSS grew {(rss7 - rss2) / 2**20:.1f} MiB over 5 chunks"
    assert session.state.chunk_index == 8 and session.state.frame_index == 96


def test_short_audio_is_padded_with_silence(engine: FlashTalkEngine) -> None:
    session = engine.start_session(SessionRequest("short", avatar=avatar()))
    session.push_audio(np.full(1000, 0.1, dtype=np.float32))
    assert session.chunks_ready() == 0
    chunk = session.next_chunk()
    assert chunk.frames.shape == (12, 48, 32, 3)
    assert np.all(chunk.audio[:1000] == np.float32(0.1)) and not chunk.audio[1000:].any()
    assert session.buffered_samples == 0
    with pytest.raises(ValueError, match="mono"):
        session.push_audio(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        session.push_audio(np.array([np.nan], dtype=np.float32))


def test_snapshot_restore_reproduces_the_next_chunk_exactly(engine: FlashTalkEngine) -> None:
    session = engine.start_session(SessionRequest("snap", avatar=avatar(), seed=11))
    session.push_audio(speech_like(4 * 12 * 640 / SR, seed=2))
    for _ in range(2):
        session.next_chunk()
    snap = session.snapshot()
    first = session.next_chunk()
    after = session.next_chunk()
    session.restore(snap)
    again = session.next_chunk()
    assert (again.seq, again.first_frame, again.audio_t0) == (first.seq, first.first_frame, first.audio_t0)
    np.testing.assert_array_equal(again.frames, first.frames)
    np.testing.assert_array_equal(again.audio, first.audio)
    assert not np.array_equal(after.frames, first.frames)  # the chunks do differ, so equality means something


def test_stream_step_is_pure(engine: FlashTalkEngine) -> None:
    """Same state + same audio -> identical frames and next state; the input state is left untouched."""
    session = engine.start_session(SessionRequest("pure", avatar=avatar()))
    state = session.state
    motion_before, rng_before = state.motion_latent.clone(), state.rng_state.clone()
    window = StreamingAudioWindow(SR, 25, CFG.audio_buffer_s)
    window.push(speech_like(1.0, seed=4))
    with torch.inference_mode():
        emb, _ = engine.audio_encoder.embed_window(window, CFG.frame_num)
        s1, v1 = stream_step(engine.models, state, emb, CFG)
        s2, v2 = stream_step(engine.models, state, emb, CFG)
    assert torch.equal(v1, v2) and torch.equal(s1.motion_latent, s2.motion_latent)
    assert torch.equal(s1.rng_state, s2.rng_state) and not torch.equal(s1.rng_state, rng_before)
    assert torch.equal(state.motion_latent, motion_before) and torch.equal(state.rng_state, rng_before)
    assert v1.shape == (1, 3, 12, 48, 32)
    assert state.motion_latent.shape[2] == 1 and s1.motion_latent.shape[2] == 2  # 1 latent on chunk 0, then 2
    assert (s1.chunk_index, s1.frame_index) == (1, 12)


def test_reset_returns_to_the_reference(engine: FlashTalkEngine) -> None:
    """After reset, the same audio gives exactly a fresh session's first chunk; the timeline continues."""
    speech = speech_like(12 * 640 / SR, seed=5)
    fresh = engine.start_session(SessionRequest("fresh", avatar=avatar(), seed=9))
    fresh.push_audio(speech)
    reference_chunk = fresh.next_chunk()

    session = engine.start_session(SessionRequest("reset", avatar=avatar(), seed=9))
    session.push_audio(speech_like(3 * 12 * 640 / SR + 0.2, seed=6))
    for _ in range(3):
        session.next_chunk()
    assert session.buffered_samples > 0
    session.reset()
    assert session.buffered_samples == 0 and session.chunks_ready() == 0
    state = session.state
    assert state.chunk_index == 0 and state.frame_index == 36
    assert torch.equal(state.motion_latent, state.conditioning.reference_latent)
    session.push_audio(speech)
    chunk = session.next_chunk()
    assert chunk.first_frame == 36 and chunk.seq == 3 and chunk.audio_t0 == 36 * 640
    np.testing.assert_array_equal(chunk.frames, reference_chunk.frames)


def test_re_anchor_only_resets_the_motion_context(engine: FlashTalkEngine) -> None:
    session = engine.start_session(SessionRequest("anchor", avatar=avatar()))
    session.push_audio(speech_like(2 * 12 * 640 / SR, seed=7))
    session.next_chunk()
    before = session.state
    session.re_anchor()
    after = session.state
    assert after.motion_latent.shape[2] == 1 and torch.equal(after.motion_latent, after.conditioning.reference_latent)
    assert torch.equal(after.rng_state, before.rng_state) and after.chunk_index == before.chunk_index == 1
    assert session.next_chunk().frames.shape == (12, 48, 32, 3)


def test_default_avatar_when_none_is_given(engine: FlashTalkEngine) -> None:
    session = engine.start_session(SessionRequest("default"))
    assert session.state.conditioning.cond_image.shape == (1, 3, 1, 48, 32)
    session.push_audio(speech_like(12 * 640 / SR))
    assert session.next_chunk().frames.shape == (12, 48, 32, 3)


# -- the pieces the session relies on ----------------------------------------------------------------------
def test_fit_reference_covers_then_center_crops() -> None:
    img = avatar()  # 60 x 40 -> scale max(48/60, 32/40) = 0.8 -> 48 x 32: no crop needed
    assert fit_reference(img, (48, 32)).shape == (48, 32, 3)
    same = fit_reference(img, (60, 40))
    assert same is not img and np.array_equal(same, img)  # already target-sized: unchanged
    wide = np.zeros((10, 40, 3), dtype=np.uint8)
    wide[:, 18:22] = 255  # a centred bar survives the centre crop
    out = fit_reference(wide, (20, 20))  # scale 2 -> 20 x 80, crop columns 30..50
    assert out.shape == (20, 20, 3) and out[:, 8:12].min() > 0 and out[:, :4].max() == 0
    assert center_crop_box((21, 80), (20, 20)) == (0, 30)  # torchvision: int(round(0.5)) == 0
    with pytest.raises(ValueError, match="uint8"):
        fit_reference(np.zeros((4, 4, 3), dtype=np.float32), (4, 4))


def test_condition_mask_and_token_count_as_released() -> None:
    mask = condition_mask(33, 96, 56, dtype=torch.float32, device="cpu")
    assert mask.shape == (1, 4, 9, 96, 56)
    assert mask[:, :, 0].min() == 1 and mask[:, :, 1:].max() == 0
    assert token_count(33, (96, 56)) == 12096 == FlashTalkConfig().seq_len()
    assert token_count(33, (90, 52), sp_size=8) == 10536  # 9*45*26 = 10530 rounded up to 8


def test_to_uint8_truncates_like_the_release() -> None:
    video = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).reshape(1, 1, 1, 6).expand(3, 1, 1, 6)
    frames = to_uint8_frames(video)
    assert frames.shape == (1, 1, 6, 3) and frames.dtype == torch.uint8
    # (x+1)/2*255 = 0, 63.75, 127.5, 254.87, 255, clipped 255 -> truncated, not rounded
    assert frames[0, 0, :, 0].tolist() == [0, 63, 127, 254, 255, 255]


def test_colour_correction_properties() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 3, 1, 8, 6, generator=g) * 0.8 - 0.4  # no clipping anywhere below
    video = (ref * 0.8 + 0.1).expand(1, 3, 4, 8, 6).contiguous()  # same image, other brightness/contrast

    def lab_stats(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lab = rgb_to_lab(((v + 1) / 2).permute(0, 2, 3, 4, 1))
        return lab.mean(dim=(2, 3)), lab.std(dim=(2, 3), unbiased=False)

    corrected = match_and_blend_colors(video, ref, 1.0)
    assert corrected.shape == video.shape and corrected.dtype == video.dtype
    (ref_mean, ref_std), (mean, std) = lab_stats(ref), lab_stats(corrected)
    torch.testing.assert_close(mean, ref_mean.expand_as(mean), rtol=0, atol=1e-3)  # every frame's Lab
    torch.testing.assert_close(std, ref_std.expand_as(std), rtol=1e-3, atol=1e-3)  # statistics now match
    assert (corrected - ref).abs().max() < (video - ref).abs().max() / 4
    assert torch.equal(match_and_blend_colors(video, ref, 0.0), video)
    half = match_and_blend_colors(video, ref, 0.5)
    torch.testing.assert_close(half, (video + corrected) / 2, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="strength"):
        match_and_blend_colors(video, ref, 1.5)


def test_config_validation_and_device_policy() -> None:
    assert FlashTalkConfig().frames_per_chunk == 28 and FlashTalkConfig().samples_per_chunk == 17920
    with pytest.raises(FlashTalkConfigError, match="4k\\+1"):
        FlashTalkConfig(frame_num=32)
    with pytest.raises(FlashTalkConfigError, match="multiples of 16"):
        FlashTalkConfig(height=760)
    device, why = resolve_device("cpu")
    assert device.type == "cpu" and why
    policy = resolve_dtypes(device)
    assert policy.dit == policy.vae == policy.audio == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(FlashTalkConfigError, match="CUDA"):
            resolve_device("cuda")
    cuda = resolve_dtypes(torch.device("cuda"))  # policy only; touches no GPU
    assert cuda.dit == cuda.vae == torch.bfloat16 and cuda.audio == torch.float32


def test_from_folder_and_the_daemon_entry_point(tmp_path: Path) -> None:
    """A weights folder in the released layout (tiny files) loads through ``build_engine``."""
    golden = golden_models()
    from engine.build import build_engine
    from soulx_live.config import EngineConfig
    from soulx_live.config import FlashTalkConfig as FlashTalkSettings

    weights = tmp_path / "SoulX-FlashTalk-14B"
    weights.mkdir()
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        (weights / name).symlink_to(golden / "dit" / name)
    for name in ("Wan2.1_VAE.pth", "vae_config.json"):
        (weights / name).symlink_to(golden / "vae_dim8" / name)
    (tmp_path / "chinese-wav2vec2-base").symlink_to(golden / "wav2vec2")  # beside the folder, as doctor allows

    settings = EngineConfig(
        kind="flashtalk",
        weights_dir=weights,
        device="cpu",
        flashtalk=FlashTalkSettings(height=48, width=32, frame_num=17, motion_frames=5, dtype="fp32"),
    )
    engine = build_engine(settings)
    assert engine.cfg.frame_num == 17 and engine.cfg.sampling_steps == 4 and engine.dtype == torch.float32
    assert engine.spec.frames_per_chunk == 12 and engine.device.type == "cpu"
    engine.audio_encoder = WidthAdapter(engine.audio_encoder)  # tiny wav2vec2 -> the DiT's 12 x 768
    engine.conditioning = StubConditioning()  # no T5/CLIP files in this folder
    session = engine.start_session(SessionRequest("folder", avatar=avatar()))
    session.push_audio(speech_like(12 * 640 / SR))
    assert session.next_chunk().frames.shape == (12, 48, 32, 3)
    with pytest.raises(FlashTalkConfigError, match="world_size"):
        build_engine(settings.model_copy(update={"flashtalk": FlashTalkSettings(world_size=2)}))
