"""Attention backends agree; RoPE and the frame-local audio attention behave as the release (and shard cleanly)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from engine.models.audio_attention import AudioCrossAttention, FrameRun, SeqShard, assemble_audio_windows
from engine.ops import attention as attn_mod
from engine.ops.attention import attention, flash_available, resolve_backend, set_attention_backend
from engine.ops.rope import apply_rope, rope_axis_pairs, rope_cos_sin


@pytest.fixture(autouse=True)
def _automatic_backend() -> Iterator[None]:
    set_attention_backend(None)
    yield
    set_attention_backend(None)


def _qkv(b: int = 2, lq: int = 7, lk: int = 11, h: int = 3, d: int = 16, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(b, n, h, d, generator=g).to(dtype) for n in (lq, lk, lk))


def test_sdpa_matches_math_fp32() -> None:
    q, k, v = _qkv()
    sdpa, math = attention(q, k, v, backend="sdpa"), attention(q, k, v, backend="math")
    torch.testing.assert_close(sdpa, math, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k_len", [torch.tensor([11, 4]), 5])
def test_key_lengths_mask_keys(k_len: torch.Tensor | int) -> None:
    q, k, v = _qkv()
    sdpa = attention(q, k, v, backend="sdpa", k_len=k_len)
    torch.testing.assert_close(sdpa, attention(q, k, v, backend="math", k_len=k_len), rtol=1e-6, atol=1e-6)
    lengths = k_len.tolist() if isinstance(k_len, torch.Tensor) else [k_len, k_len]
    for b, n in enumerate(lengths):  # masking == dropping the keys
        torch.testing.assert_close(sdpa[b : b + 1], attention(q[b : b + 1], k[b : b + 1, :n], v[b : b + 1, :n]))
    if lengths[1] < 11:
        assert not torch.allclose(sdpa, attention(q, k, v))


def test_math_is_float32_for_half_inputs() -> None:
    q, k, v = _qkv(dtype=torch.bfloat16)
    ref = attention(q.float(), k.float(), v.float(), backend="math")
    out = attention(q, k, v, backend="math")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


def test_backend_selection_and_override() -> None:
    q, _, _ = _qkv()
    assert resolve_backend(q) == "sdpa"  # CPU float32: the parity path
    set_attention_backend("math")
    assert resolve_backend(q) == "math"
    assert resolve_backend(q, "sdpa") == "sdpa"  # the argument wins over the override
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'"):
        set_attention_backend("xformers")
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, q, q, backend="fast")


def test_forcing_flash_without_it_names_the_reason() -> None:
    if flash_available():
        pytest.skip("flash-attn is usable here")
    with pytest.raises(RuntimeError, match="flash.*not usable.*pip install flash-attn"):
        set_attention_backend("flash")
    q, _, _ = _qkv()
    assert resolve_backend(q) == "sdpa"  # the failed override left the automatic choice in place


def test_rejects_wrong_layout() -> None:
    with pytest.raises(ValueError, match=r"\[B, L, heads, head_dim\]"):
        attention(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))


@pytest.mark.gpu
def test_flash_matches_sdpa() -> None:
    if not flash_available():
        pytest.skip(f"flash-attn not usable: {attn_mod._flash_probe()[1]}")
    q, k, v = (t.cuda() for t in _qkv(lq=64, lk=80, d=64, dtype=torch.bfloat16))
    for k_len in (None, torch.tensor([80, 33])):
        flash = attention(q, k, v, backend="flash", k_len=k_len).float()
        ref = attention(q.float(), k.float(), v.float(), backend="math", k_len=k_len)
        torch.testing.assert_close(flash, ref, rtol=2e-2, atol=2e-2)


# -- RoPE ------------------------------------------------------------------------------------------------------
def _rope_reference(x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """The release's rope_params + rope_apply (complex128 tables, view_as_complex)."""
    d = x.shape[-1]

    def params(dim: int) -> torch.Tensor:
        inv = 1.0 / torch.pow(10000, torch.arange(0, dim, 2).to(torch.float64).div(dim))
        freqs = torch.outer(torch.arange(1024), inv)
        return torch.polar(torch.ones_like(freqs), freqs)

    freqs = torch.cat([params(d - 4 * (d // 6)), params(2 * (d // 6)), params(2 * (d // 6))], dim=1)
    c = d // 2
    parts = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    f, h, w = grid
    table = torch.cat(
        [
            parts[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            parts[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
            parts[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(f * h * w, 1, -1)
    xc = torch.view_as_complex(x[0].to(torch.float64).reshape(f * h * w, x.shape[2], -1, 2))
    return torch.view_as_real(xc * table).flatten(2)[None].float()


@pytest.mark.parametrize("head_dim", [16, 128])
def test_rope_matches_the_release(head_dim: int) -> None:
    grid = (3, 4, 5)
    x = torch.randn(1, 60, 2, head_dim)
    ours = apply_rope(x, *rope_cos_sin(grid, head_dim))
    torch.testing.assert_close(ours, _rope_reference(x, grid), rtol=0, atol=1e-6)
    assert ours.dtype == torch.float32


def test_rope_axis_split() -> None:
    assert rope_axis_pairs(128) == (22, 21, 21)
    assert rope_axis_pairs(16) == (4, 2, 2)
    cos, sin = rope_cos_sin((2, 3, 4), 16)
    assert cos.dtype == torch.float64 and cos.shape == (24, 8)
    # token (f=1, h=0, w=0) rotates only the 4 frame pairs; token 0 is the identity
    assert torch.equal(cos[0], torch.ones(8)) and torch.equal(sin[0], torch.zeros(8))
    assert torch.all(sin[12, :4] != 0) and torch.equal(sin[12, 4:], torch.zeros(4))


def test_rope_token_range_is_a_slice_with_identity_padding() -> None:
    full = rope_cos_sin((2, 3, 4), 16)
    cos, sin = rope_cos_sin((2, 3, 4), 16, token_range=(20, 28))
    assert torch.equal(cos[:4], full[0][20:]) and torch.equal(sin[:4], full[1][20:])
    assert torch.equal(cos[4:], torch.ones(4, 8)) and torch.equal(sin[4:], torch.zeros(4, 8))


# -- frame-local audio attention -------------------------------------------------------------------------------
def test_frame_runs_of_the_released_8_gpu_split() -> None:
    """SPEC §7.2: 9 latent frames x 1344 tokens over 8 ranks -> per-rank frame token counts."""
    counts = []
    for rank in range(8):
        runs = SeqShard(rank * 1512, (rank + 1) * 1512).frame_runs(1344, 9)
        counts.append([r.tokens_per_frame for r in runs for _ in range(r.num_frames)])
    assert counts[0] == [1344, 168] and counts[1] == [1176, 336] and counts[7] == [168, 1344]
    assert SeqShard.full(9 * 1344).frame_runs(1344, 9) == [FrameRun(0, 9, 1344)]
    assert SeqShard(100, 5000).frame_runs(1000, 3) == [FrameRun(0, 1, 900), FrameRun(1, 2, 1000)]


def _audio_attention() -> tuple[AudioCrossAttention, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    module = AudioCrossAttention(dim=16, audio_dim=8, num_heads=2).eval()
    x = torch.randn(2, 3 * 6, 16)  # 3 latent frames x 6 tokens
    audio = torch.randn(2, 3, 4, 8)  # 4 audio tokens per frame
    return module, x, audio


def test_audio_attention_is_frame_local() -> None:
    module, x, audio = _audio_attention()
    with torch.no_grad():
        base = module(x, audio, tokens_per_frame=6)
        changed = audio.clone()
        changed[:, 1] += 1.0
        moved = module(x, changed, tokens_per_frame=6)
    assert torch.equal(base[:, :6], moved[:, :6]) and torch.equal(base[:, 12:], moved[:, 12:])
    assert not torch.allclose(base[:, 6:12], moved[:, 6:12])


def test_audio_attention_matches_per_frame_release_math() -> None:
    module, x, audio = _audio_attention()
    with torch.no_grad():
        ours = module(x, audio, tokens_per_frame=6)
        q = module.q_linear(x).view(2 * 3, 6, 2, 8)
        kv = module.kv_linear(audio.flatten(0, 1)).view(6, 4, 2, 2, 8)
        ref = attention(q, kv[:, :, 0], kv[:, :, 1], backend="math").reshape(2, 18, 16)
    torch.testing.assert_close(ours, module.proj(ref), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cuts", [(0, 5, 18), (0, 6, 18), (0, 4, 9, 16, 18), (0, 7, 20)])
def test_audio_attention_shards_reassemble_the_full_result(cuts: tuple[int, ...]) -> None:
    module, x, audio = _audio_attention()
    padded = torch.cat([x, torch.zeros(2, max(0, cuts[-1] - 18), 16)], dim=1)
    with torch.no_grad():
        full = module(x, audio, tokens_per_frame=6)
        parts = [
            module(padded[:, a:b], audio, tokens_per_frame=6, shard=SeqShard(a, b)) for a, b in zip(cuts, cuts[1:])
        ]
    torch.testing.assert_close(torch.cat(parts, dim=1)[:, :18], full, rtol=1e-6, atol=1e-6)


def test_audio_window_assembly_is_a_contiguous_span() -> None:
    """Latent frame j >= 1 gets audio frames (4j-3)-2 .. 4j+2 when each window holds frames t-2..t+2."""
    frames, window = 9, 5
    index = torch.arange(frames)[:, None] + torch.arange(window)[None, :] - 2  # unclamped frame ids
    audio = index[None, :, :, None, None].float().expand(1, frames, window, 1, 1)
    first, later = assemble_audio_windows(audio, vae_scale=4, audio_window=window)
    assert first[0, 0, :, 0, 0].tolist() == [-2, -1, 0, 1, 2]
    for j in range(1, 3):
        assert later[0, j - 1, :, 0, 0].tolist() == list(range(4 * j - 5, 4 * j + 3))
    with pytest.raises(ValueError, match=r"1 \+ 4\*n"):
        assemble_audio_windows(audio[:, :8], vae_scale=4, audio_window=window)


def test_config_key_selects_the_kernel_or_names_the_fix() -> None:
    """``engine.flashtalk.attention`` goes through build_engine's selector (the tiny preset builds in ms)."""
    from engine.build import build_engine
    from engine.config import FlashTalkConfigError
    from engine.ops.attention import flash_available, get_attention_backend, set_attention_backend
    from soulx_live.config import EngineConfig

    try:
        build_engine(EngineConfig(kind="flashtalk", flashtalk={"preset": "tiny-random", "attention": "math"}))
        assert get_attention_backend() == "math"
        build_engine(EngineConfig(kind="flashtalk", flashtalk={"preset": "tiny-random", "attention": "auto"}))
        assert get_attention_backend() is None
        if not flash_available():
            with pytest.raises(FlashTalkConfigError, match=r"attention=flash.*flash-attn"):
                build_engine(EngineConfig(kind="flashtalk", flashtalk={"preset": "tiny-random", "attention": "flash"}))
    finally:
        set_attention_backend(None)
