"""The 4-step denoising loop never waits for the device: no tensor value is read on the host inside it.

On a GPU any ``.item()``, ``bool(tensor)``, ``int(tensor)``, ``.tolist()`` or data-dependent shape (``nonzero``,
``masked_select``) stalls the CPU until the GPU catches up and breaks CUDA-graph capture. All of them reach the
dispatcher as the ops below, on every device, so the check runs on the CPU: a ``TorchDispatchMode`` records every
op of the real tiny-random DiT + sampler loop (with the cached cross-attention K/V the session uses).
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.build import build_tiny_engine
from engine.config import FlashTalkConfig
from engine.flashtalk import generate_chunk
from engine.interface import SessionRequest
from engine.sampler import denoise, shifted_timesteps

HOST_READS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique2", "aten.item"}


class _HostReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = str(func.overloadpacket)
        if name in HOST_READS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def _session_inputs():  # type: ignore[no-untyped-def]
    engine = build_tiny_engine(FlashTalkConfig(), seed=0)
    session = engine.start_session(SessionRequest(session_id="s", avatar=None, seed=1))
    cond = session.state.conditioning
    frames = engine.cfg.frame_num
    audio = torch.randn(1, frames, 5, 12, 768)
    return engine, cond, audio


def test_the_denoising_loop_reads_nothing_back() -> None:
    engine, cond, audio = _session_inputs()
    cfg = engine.cfg
    timesteps = shifted_timesteps(cfg.sampling_steps, cfg.shift, cfg.num_timesteps)
    motion = cond.reference_latent
    latent = torch.randn(cond.latent_shape)
    draws = [torch.randn(cond.latent_shape) for _ in range(cfg.sampling_steps)]

    class _Noise:
        def step(self, i, shape, dtype, device):  # type: ignore[no-untyped-def]
            return draws[i]

    def dit_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return engine.models.dit(x, t, cond.context, cond.clip_fea, cond.y, audio, seq_len=cond.seq_len,
                                 cross=cond.cross)

    with torch.no_grad():
        dit_fn(latent, timesteps[:1])  # warm caches (RoPE tables are built once per grid, outside the loop)
        with _HostReads() as mode:
            denoise(dit_fn, latent, motion, timesteps, _Noise(), num_timesteps=cfg.num_timesteps)
    assert mode.seen == [], f"host reads inside the loop: {sorted(set(mode.seen))}"


def test_the_detector_sees_a_host_read() -> None:
    with _HostReads() as mode:
        x = torch.ones(3)
        if bool(x.sum() > 0):  # what a careless loop does
            x = x * 2
    assert mode.seen == ["aten._local_scalar_dense"]


def test_a_whole_chunk_reads_back_only_at_its_end() -> None:
    """VAE decode, colour correction and motion re-encode follow the loop; they may read back only for output."""
    engine, cond, audio = _session_inputs()
    state = engine.start_session(SessionRequest(session_id="t", avatar=None, seed=1)).state
    with torch.no_grad(), _HostReads() as mode:
        generate_chunk(engine.models, cond, state.motion_latent, audio, _ZeroNoise(), engine.cfg)
    assert mode.seen == [], f"host reads in generate_chunk: {sorted(set(mode.seen))}"


class _ZeroNoise:
    def initial(self, shape, dtype, device):  # type: ignore[no-untyped-def]
        return torch.zeros(shape, dtype=dtype, device=device)

    def step(self, i, shape, dtype, device):  # type: ignore[no-untyped-def]
        return torch.zeros(shape, dtype=dtype, device=device)


def test_the_wan_vae_reads_nothing_back() -> None:
    from engine.models.vae import VAEConfig, WanVAE

    torch.manual_seed(0)
    vae = WanVAE(VAEConfig(dim=8)).eval()
    with torch.no_grad(), _HostReads() as mode:
        video = vae.decode(torch.randn(1, 16, 2, 4, 4))
        vae.encode(video[:, :, -5:])
    assert mode.seen == [], f"host reads in the VAE: {sorted(set(mode.seen))}"
