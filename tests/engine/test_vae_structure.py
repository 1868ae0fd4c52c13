"""Structure of the Wan2.1 VAE (released width on the meta device), its loader, and its causal cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.loading.state_dict import CheckpointError, build_on_meta
from engine.loading.vae import load_vae
from engine.models.vae import (
    CACHE_T,
    LATENT_MEAN,
    LATENT_STD,
    CausalConvCache,
    VAEConfig,
    WanVAE,
    encode_chunk_bounds,
)

# Counted from this construction with the released config (dim 96); the spec and the golden README say
# "127M parameters" for Wan2.1_VAE.pth.
RELEASED_PARAMS = 126_892_531
RELEASED_TENSORS = 194
TINY_PTH = Path("models") / "vae_dim8" / "Wan2.1_VAE.pth"


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def released() -> WanVAE:
    return build_on_meta(lambda: WanVAE(VAEConfig()))


@pytest.fixture
def tiny_pth(golden_dir: Path) -> Path:
    return golden_dir / TINY_PTH


@pytest.fixture
def tiny(tiny_pth: Path) -> WanVAE:
    return load_vae(tiny_pth)


# -- config ---------------------------------------------------------------------------------------------------


def test_config_defaults_are_the_release() -> None:
    cfg = VAEConfig()
    assert (cfg.dim, cfg.z_dim, cfg.dim_mult, cfg.num_res_blocks) == (96, 16, (1, 2, 4, 4), 2)
    assert cfg.attn_scales == () and cfg.dropout == 0.0
    assert cfg.temporal_downsample == (False, True, True)
    assert cfg.temporal_upsample == (True, True, False)
    assert (cfg.temporal_factor, cfg.spatial_factor) == (4, 8)


def test_config_reads_official_names() -> None:
    raw = {"_class_name": "WanVAE_", "dim": 8, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
           "attn_scales": [], "temperal_downsample": [False, True, True], "dropout": 0.0}
    cfg = VAEConfig.from_dict(raw)
    assert cfg == VAEConfig(dim=8)
    with pytest.raises(ValueError, match="unknown VAE config key 'dimm'"):
        VAEConfig.from_dict({"dimm": 8})
    with pytest.raises(ValueError, match="temporal_downsample"):
        VAEConfig(temporal_downsample=(True,))


# -- released structure -----------------------------------------------------------------------------------------


def test_released_vae_tensors_and_parameter_count(released: WanVAE) -> None:
    state = released.state_dict()
    assert len(state) == RELEASED_TENSORS
    count = sum(t.numel() for t in state.values())
    assert count == RELEASED_PARAMS
    assert round(count / 1e6) == 127  # the spec's figure
    assert sum(p.numel() for p in released.parameters()) == count  # no buffer is saved
    assert [k.split(".")[0] for k in state][:1] == ["encoder"]
    assert {k.split(".")[0] for k in state} == {"encoder", "conv1", "conv2", "decoder"}
    shapes = _shapes(released)
    assert shapes["encoder.conv1.weight"] == (96, 3, 3, 3, 3)
    assert shapes["encoder.head.2.weight"] == (32, 384, 3, 3, 3)
    assert shapes["encoder.middle.1.to_qkv.weight"] == (1152, 384, 1, 1)
    assert shapes["encoder.downsamples.5.time_conv.weight"] == (192, 192, 3, 1, 1)
    assert shapes["conv1.weight"] == (32, 32, 1, 1, 1)
    assert shapes["conv2.weight"] == (16, 16, 1, 1, 1)
    assert shapes["decoder.conv1.weight"] == (384, 16, 3, 3, 3)
    assert shapes["decoder.upsamples.3.time_conv.weight"] == (768, 384, 3, 1, 1)
    assert shapes["decoder.upsamples.4.residual.2.weight"] == (384, 192, 3, 3, 3)
    assert shapes["decoder.upsamples.11.resample.1.weight"] == (96, 192, 3, 3)
    assert shapes["decoder.head.2.weight"] == (3, 96, 3, 3, 3)


def test_names_match_the_tiny_golden_vae_and_shapes_scale_with_width(released: WanVAE, golden_dir: Path) -> None:
    manifest_path = golden_dir / "manifest.json"
    if not manifest_path.is_file():
        pytest.skip(f"no manifest at {manifest_path}")
    entry = json.loads(manifest_path.read_text())["models"]["vae"]
    golden_shapes = {name: tuple(shape) for name, shape, _dtype in entry["keys"]}
    tiny_cfg = VAEConfig.from_dict(entry["config"])
    tiny = build_on_meta(lambda: WanVAE(tiny_cfg))

    assert list(golden_shapes) == list(released.state_dict())  # same names, same order
    assert _shapes(tiny) == golden_shapes
    assert sum(p.numel() for p in tiny.parameters()) == entry["params"]
    factor = VAEConfig().dim // tiny_cfg.dim
    for name, small in golden_shapes.items():
        big = _shapes(released)[name]
        assert len(big) == len(small), name
        assert all(b in (s, s * factor) for b, s in zip(big, small)), (name, small, big)
    # Width is not the only channel count: 3 pixels, 16 latents, 32 = 2 * z_dim at the encoder head.
    assert _shapes(released)["encoder.conv1.weight"][0] == factor * golden_shapes["encoder.conv1.weight"][0]


def test_latent_stats_are_buffers_rebuilt_after_loading(tiny: WanVAE) -> None:
    assert "latent_mean" not in tiny.state_dict()
    assert tiny.latent_mean.device.type == "cpu"
    assert torch.equal(tiny.latent_mean, torch.tensor(LATENT_MEAN))
    assert torch.equal(tiny.latent_inv_std, 1.0 / torch.tensor(LATENT_STD))
    assert not tiny.training
    assert not any(p.requires_grad for p in tiny.parameters())


# -- loader ----------------------------------------------------------------------------------------------------


def test_wrong_width_config_names_the_key(tiny_pth: Path, tmp_path: Path) -> None:
    pth = tmp_path / "Wan2.1_VAE.pth"
    pth.symlink_to(tiny_pth)
    (tmp_path / "vae_config.json").write_text(json.dumps({"dim": 16, "temperal_downsample": [False, True, True]}))
    with pytest.raises(CheckpointError, match=r"encoder\.conv1\.weight.*8 output channels.*dim=16"):
        load_vae(pth)


def test_missing_config_means_released_width(tiny_pth: Path, tmp_path: Path) -> None:
    pth = tmp_path / "Wan2.1_VAE.pth"
    pth.symlink_to(tiny_pth)
    with pytest.raises(CheckpointError, match=r"encoder\.conv1\.weight.*released defaults.*dim=96"):
        load_vae(pth)


def test_bad_config_and_file_errors(tiny_pth: Path, tmp_path: Path) -> None:
    pth = tmp_path / "Wan2.1_VAE.pth"
    pth.symlink_to(tiny_pth)
    (tmp_path / "vae_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid VAE config"):
        load_vae(pth)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not found"):
        load_vae(tmp_path / "empty" / "Wan2.1_VAE.pth")


# -- computation -------------------------------------------------------------------------------------------------


def test_chunk_bounds() -> None:
    assert encode_chunk_bounds(1) == [(0, 1)]
    assert encode_chunk_bounds(9) == [(0, 1), (1, 5), (5, 9)]
    assert len(encode_chunk_bounds(33)) == 9
    assert encode_chunk_bounds(7) == [(0, 1), (1, 5)]  # trailing frames are dropped, as in the release


@pytest.mark.parametrize(("size", "latent"), [((40, 56), (5, 7)), ((36, 44), (4, 5)), ((8, 8), (1, 1))])
def test_odd_sizes_round_trip(tiny: WanVAE, size: tuple[int, int], latent: tuple[int, int]) -> None:
    torch.manual_seed(0)
    video = torch.rand(2, 3, 5, *size) * 2 - 1
    with torch.inference_mode():
        z = tiny.encode(video)
        assert tuple(z.shape) == (2, 16, 2, *latent)
        out = tiny.decode(z)
    assert tuple(out.shape) == (2, 3, 5, latent[0] * 8, latent[1] * 8)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0


def test_batch_items_are_independent(tiny: WanVAE) -> None:
    torch.manual_seed(1)
    video = torch.rand(2, 3, 5, 16, 24) * 2 - 1
    with torch.inference_mode():
        both = tiny.encode(video)
        second = tiny.encode(video[1:])
    torch.testing.assert_close(both[1:], second, rtol=1e-5, atol=1e-5)


def test_encode_chunk_by_chunk_equals_one_call(tiny: WanVAE) -> None:
    """The cache is the only state: chunked encoding, interleaved with an unrelated clip, matches one call."""
    torch.manual_seed(2)
    video = torch.rand(1, 3, 13, 24, 16) * 2 - 1
    other = torch.rand(1, 3, 13, 24, 16) * 2 - 1
    with torch.inference_mode():
        whole = tiny.encode(video)
        cache, other_cache = tiny.new_cache(), CausalConvCache()
        parts = []
        for a, b in encode_chunk_bounds(video.shape[2]):
            parts.append(tiny.encode_chunk(video[:, :, a:b], cache))
            tiny.encode_chunk(other[:, :, a:b], other_cache)
        chunked = torch.cat(parts, dim=2)
        # The history is in the cache: the same frames after another clip's frame 0 encode differently.
        after_other = tiny.new_cache()
        tiny.encode_chunk(other[:, :, :1], after_other)
        wrong = tiny.encode_chunk(video[:, :, 1:5], after_other)
        with pytest.raises(ValueError, match="frame 0 alone"):
            tiny.encode_chunk(video[:, :, :5], tiny.new_cache())
        with pytest.raises(ValueError, match="multiple of 4"):
            tiny.encode_chunk(video[:, :, 1:3], cache)
    assert tuple(whole.shape) == (1, 16, 4, 3, 2)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
    assert (wrong - whole[:, :, 1:2]).abs().max() > 1e-3
    assert len(cache) > 0 and cache.nbytes() > 0


def test_decode_latent_by_latent_equals_one_call(tiny: WanVAE) -> None:
    torch.manual_seed(3)
    z = torch.randn(1, 16, 4, 3, 2)
    other = torch.randn(1, 16, 4, 3, 2)
    with torch.inference_mode():
        whole = tiny.decode(z)
        cache, other_cache = tiny.new_cache(), tiny.new_cache()
        parts = []
        for i in range(z.shape[2]):
            parts.append(tiny.decode_chunk(z[:, :, i : i + 1], cache))
            tiny.decode_chunk(other[:, :, i : i + 1], other_cache)
        streamed = list(tiny.iter_decode(z))
        # Several latents per call continue the clip the same way.
        cache2 = tiny.new_cache()
        grouped = torch.cat([tiny.decode_chunk(z[:, :, :1], cache2), tiny.decode_chunk(z[:, :, 1:], cache2)], dim=2)
        # A fresh cache restarts the clip: latent 1 is then decoded as an image (1 frame).
        restarted = tiny.decode_chunk(z[:, :, 1:2], tiny.new_cache())
    assert tuple(whole.shape) == (1, 3, 13, 24, 16)
    assert [p.shape[2] for p in parts] == [1, 4, 4, 4]
    assert restarted.shape[2] == 1
    # decode() runs conv2 (1x1x1) over all latents at once, as the release does; per-latent calls round
    # differently at the 1e-6 level. Missing history would show up as O(0.1) errors.
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, rtol=0, atol=2e-5)
    torch.testing.assert_close(grouped, whole, rtol=0, atol=2e-5)
    assert torch.equal(torch.cat(streamed, dim=2), whole)


def test_cache_keeps_cache_t_frames() -> None:
    conv = torch.nn.Conv3d(1, 1, 1)
    cache = CausalConvCache()
    assert cache.past(conv) is None
    frame = torch.arange(4.0).reshape(1, 1, 4, 1, 1)
    cache.remember(conv, frame[:, :, :1], keep=CACHE_T)
    assert cache.past(conv).flatten().tolist() == [0.0]
    cache.remember(conv, frame[:, :, 1:2], keep=CACHE_T)
    assert cache.past(conv).flatten().tolist() == [0.0, 1.0]
    cache.remember(conv, frame, keep=CACHE_T)
    assert cache.past(conv).flatten().tolist() == [2.0, 3.0]
    assert not cache.seen(conv)
    cache.mark_seen(conv)
    assert cache.seen(conv)
    cache.clear()
    assert len(cache) == 0 and not cache.seen(conv)


def test_input_dtype_follows_the_weights(tiny_pth: Path) -> None:
    vae = load_vae(tiny_pth, dtype=torch.bfloat16)
    assert vae.latent_inv_std.dtype == torch.bfloat16
    with torch.inference_mode():
        z = vae.encode(torch.zeros(1, 3, 1, 16, 16))
        assert z.dtype == torch.bfloat16
        assert vae.decode(z.float()).dtype == torch.bfloat16
