"""Strict loading of DiT folders (config.json + single or sharded safetensors) and config parsing."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.loading.dit import load_dit
from engine.loading.state_dict import CheckpointError
from engine.models.transformer import DiTConfig, WanAudioTransformer

TINY = dict(
    model_type="i2v", dim=16, ffn_dim=32, num_heads=2, num_layers=1, text_len=4, text_dim=8, in_dim=36,
    out_dim=16, intermediate_dim=4, output_dim=8, context_tokens=2,
)


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = WanAudioTransformer(DiTConfig(**TINY))
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _write_config(folder: Path, **extra: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "WanModel", "weight_init": True, **TINY, **extra}))


def _write_single(folder: Path, state: dict[str, torch.Tensor]) -> None:
    _write_config(folder)
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))


def _write_sharded(folder: Path, state: dict[str, torch.Tensor], shards: int = 2) -> list[Path]:
    _write_config(folder)
    keys = list(state)
    names = [f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {}
    for i, name in enumerate(names):
        part = {k: state[k] for k in keys[i::shards]}
        save_file(part, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return [folder / n for n in names]


def _inputs(batch: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 16, 2, 4, 4, generator=g)
    t = torch.tensor([700.0] * batch)
    context = torch.randn(batch, 3, 8, generator=g)
    clip = torch.randn(batch, 257, 1280, generator=g)
    y = torch.randn(batch, 20, 2, 4, 4, generator=g)
    audio = torch.randn(batch, 5, 5, 12, 768, generator=g)
    return x, t, context, clip, y, audio


def test_single_file_loads_exactly_and_runs(tmp_path: Path) -> None:
    state = _state()
    _write_single(tmp_path, state)
    model = load_dit(tmp_path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    # meta-built and loaded model computes its RoPE itself and matches a normally built one
    reference = WanAudioTransformer(DiTConfig(**TINY)).eval()
    reference.load_state_dict(state)
    with torch.no_grad():
        out = model(*_inputs())
        assert out.dtype == torch.float32 and out.shape == (1, 16, 2, 4, 4)
        # (not bit-equal: GEMM kernels may differ for memory-mapped vs freshly allocated weights)
        torch.testing.assert_close(out, reference(*_inputs()), rtol=1e-5, atol=1e-5)


def test_missing_key_is_named(tmp_path: Path) -> None:
    state = _state()
    del state["blocks.0.audio_cross_attn.kv_linear.bias"]
    _write_single(tmp_path, state)
    with pytest.raises(CheckpointError, match=r"missing key.*blocks\.0\.audio_cross_attn\.kv_linear\.bias"):
        load_dit(tmp_path)


def test_unexpected_key_is_named(tmp_path: Path) -> None:
    state = _state()
    state["blocks.0.audio_cross_attn.add_q_norm.weight"] = torch.ones(8)
    _write_single(tmp_path, state)
    with pytest.raises(CheckpointError, match=r"unexpected key.*add_q_norm"):
        load_dit(tmp_path)


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    state = _state()
    state["head.head.weight"] = torch.zeros(32, 16)
    _write_single(tmp_path, state)
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'head\.head\.weight'.*\(32, 16\).*\(64, 16\)"):
        load_dit(tmp_path)


def test_truncated_shard_is_named(tmp_path: Path) -> None:
    shard = _write_sharded(tmp_path, _state())[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=shard.name):
        load_dit(tmp_path)


def test_folder_without_weights(tmp_path: Path) -> None:
    _write_config(tmp_path)
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model\.safetensors"):
        load_dit(tmp_path)


def test_folder_without_config(tmp_path: Path) -> None:
    save_file(_state(), str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_dit(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nowhere"):
        load_dit(tmp_path / "nowhere")


def test_bf16_shards_load_with_exact_upcast(tmp_path: Path) -> None:
    state = {k: v.to(torch.bfloat16) for k, v in _state().items()}
    _write_sharded(tmp_path, state, shards=3)
    model = load_dit(tmp_path, dtype=torch.float32)
    loaded = model.state_dict()
    assert all(loaded[k].dtype == torch.float32 and torch.equal(loaded[k], v.float()) for k, v in state.items())
    as_bf16 = load_dit(tmp_path, dtype=torch.bfloat16)
    assert all(torch.equal(as_bf16.state_dict()[k], v) for k, v in state.items())


def test_bf16_model_keeps_fp32_islands(tmp_path: Path) -> None:
    """bf16 weights: output is float32 and close to the float32 model (time path, norms, head in fp32)."""
    state = _state()
    _write_single(tmp_path, state)
    fp32, bf16 = load_dit(tmp_path), load_dit(tmp_path, dtype=torch.bfloat16)
    with torch.no_grad():
        a, b = fp32(*_inputs()), bf16(*_inputs())
    assert b.dtype == torch.float32
    rel = (a - b).abs().max() / a.abs().max()
    assert 1e-6 < rel < 5e-2


def test_batch_items_are_independent(tmp_path: Path) -> None:
    _write_single(tmp_path, _state())
    model = load_dit(tmp_path)
    batched = _inputs(batch=2)
    with torch.no_grad():
        both = model(*batched)
        second = model(*(v[1:] for v in batched))
    torch.testing.assert_close(both[1:], second, rtol=1e-5, atol=1e-5)


def test_seq_len_is_checked_and_padding_is_inert(tmp_path: Path) -> None:
    _write_single(tmp_path, _state())
    model = load_dit(tmp_path)
    with torch.no_grad():
        base = model(*_inputs())
        assert torch.equal(model(*_inputs(), seq_len=8), base)
        assert torch.equal(model(*_inputs(), seq_len=40), base)
        with pytest.raises(ValueError, match="seq_len 7"):
            model(*_inputs(), seq_len=7)


def test_audio_frame_count_must_match_latents(tmp_path: Path) -> None:
    _write_single(tmp_path, _state())
    model = load_dit(tmp_path)
    x, t, context, clip, y, audio = _inputs()
    with pytest.raises(ValueError, match="1 \\+ 4\\*n"):
        model(x, t, context, clip, y, audio[:, :4])
    with pytest.raises(ValueError, match="pass 1 \\+ 4\\*\\(2-1\\) = 5 audio frames"):
        model(x, t, context, clip, y, torch.cat([audio, audio[:, :4]], dim=1))
    with pytest.raises(ValueError, match="context must be"):
        model(x, t, torch.zeros(1, 5, 8), clip, y, audio)


# -- config ----------------------------------------------------------------------------------------------------
def test_config_unknown_key_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_config(tmp_path, _diffusers_version="0.36.0", new_feature=3)
    with caplog.at_level(logging.WARNING, logger="engine.models.transformer"):
        config = DiTConfig.from_json(tmp_path / "config.json")
    assert config.dim == 16 and config.patch_size == (1, 2, 2) and config.text_len == 4
    assert "new_feature" in caplog.text
    assert not any(key in caplog.text for key in ("_diffusers_version", "weight_init", "_class_name"))


def test_config_rejects_other_model_types(tmp_path: Path) -> None:
    _write_config(tmp_path, model_type="t2v")
    with pytest.raises(CheckpointError, match=r"model_type must be 'i2v'"):
        load_dit(tmp_path)


def test_config_absent_keys_take_released_defaults() -> None:
    config = DiTConfig.from_dict({"model_type": "i2v", "dim": 64, "num_heads": 4})
    assert (config.patch_size, config.text_dim, config.qk_norm, config.cross_attn_norm) == ((1, 2, 2), 4096, True, True)
    assert (config.window_size, config.audio_window, config.intermediate_dim) == ((-1, -1), 5, 512)
    assert (config.output_dim, config.context_tokens, config.vae_scale) == (768, 32, 4)
    assert config.norm_input_visual and config.norm_output_audio
    assert DiTConfig.from_dict({"patch_size": [1, 2, 2], "window_size": [-1, -1]}).patch_size == (1, 2, 2)
