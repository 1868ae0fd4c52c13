"""The DiT's state dict is exactly the released one: every name and shape of SPEC-flashtalk.md §2.8.

The 14B model is built on the meta device (no memory), so the full released configuration is checked here.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine.loading.state_dict import build_on_meta
from engine.models.transformer import DiTConfig, WanAudioTransformer

D = 5120
FFN = 13824
LAYERS = 40
RELEASED = dict(
    model_type="i2v", dim=D, ffn_dim=FFN, num_heads=40, num_layers=LAYERS, text_len=512, in_dim=36, out_dim=16,
    freq_dim=256, eps=1e-6,
)

#: Parameter count of the released DiT, summed by hand from the SPEC §2.8 table (≈ 18.88e9, SPEC "total").
RELEASED_PARAMS = 18_882_046_784


def _linear(prefix: str, out_dim: int, in_dim: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (out_dim, in_dim), f"{prefix}.bias": (out_dim,)}


def _affine_norm(prefix: str, dim: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (dim,), f"{prefix}.bias": (dim,)}


def released_table() -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the released SoulX-FlashTalk-14B DiT, written from SPEC §2.8."""
    table: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (D, 36, 1, 2, 2),
        "patch_embedding.bias": (D,),
        **_linear("text_embedding.0", D, 4096),
        **_linear("text_embedding.2", D, D),
        **_linear("time_embedding.0", D, 256),
        **_linear("time_embedding.2", D, D),
        **_linear("time_projection.1", 6 * D, D),
        **_linear("head.head", 64, D),
        "head.modulation": (1, 2, D),
        **_affine_norm("img_emb.proj.0", 1280),
        **_linear("img_emb.proj.1", 1280, 1280),
        **_linear("img_emb.proj.3", D, 1280),
        **_affine_norm("img_emb.proj.4", D),
        **_linear("audio_proj.proj1", 512, 46080),
        **_linear("audio_proj.proj1_vf", 512, 73728),
        **_linear("audio_proj.proj2", 512, 512),
        **_linear("audio_proj.proj3", 24576, 512),
        **_affine_norm("audio_proj.norm", 768),
    }
    for n in range(LAYERS):
        b = f"blocks.{n}"
        table[f"{b}.modulation"] = (1, 6, D)
        for name in ("q", "k", "v", "o"):
            table.update(_linear(f"{b}.self_attn.{name}", D, D))
        table[f"{b}.self_attn.norm_q.weight"] = (D,)
        table[f"{b}.self_attn.norm_k.weight"] = (D,)
        table.update(_affine_norm(f"{b}.norm3", D))
        for name in ("q", "k", "v", "o", "k_img", "v_img"):
            table.update(_linear(f"{b}.cross_attn.{name}", D, D))
        for name in ("norm_q", "norm_k", "norm_k_img"):
            table[f"{b}.cross_attn.{name}.weight"] = (D,)
        table.update(_linear(f"{b}.ffn.0", FFN, D))
        table.update(_linear(f"{b}.ffn.2", D, FFN))
        table.update(_linear(f"{b}.audio_cross_attn.q_linear", D, D))
        table.update(_linear(f"{b}.audio_cross_attn.kv_linear", 2 * D, 768))
        table.update(_linear(f"{b}.audio_cross_attn.proj", D, D))
        table.update(_affine_norm(f"{b}.norm_x", D))
    return table


@pytest.fixture(scope="module")
def released_model() -> WanAudioTransformer:
    return build_on_meta(lambda: WanAudioTransformer(DiTConfig(**RELEASED)))


def test_released_defaults_are_the_14b_model() -> None:
    """config.json of the release omits the audio and ignore_for_config keys: the defaults must fill them in."""
    assert DiTConfig.from_dict(RELEASED) == DiTConfig()


def test_14b_keys_and_shapes(released_model: WanAudioTransformer) -> None:
    expected = released_table()
    actual = {k: tuple(v.shape) for k, v in released_model.state_dict().items()}
    assert sorted(actual.keys() - expected.keys()) == [], "tensors the release does not have"
    assert sorted(expected.keys() - actual.keys()) == [], "released tensors the model lacks"
    wrong = {k: (actual[k], expected[k]) for k in expected if actual[k] != expected[k]}
    assert wrong == {}


def test_14b_tensor_and_parameter_counts(released_model: WanAudioTransformer) -> None:
    state = released_model.state_dict()
    assert len(state) == 40 * LAYERS + 33  # 40 tensors per block + 33 others (golden README §3)
    total = sum(math.prod(v.shape) for v in state.values())
    assert total == sum(math.prod(s) for s in released_table().values()) == RELEASED_PARAMS
    assert abs(total - 18.88e9) < 0.005e9  # SPEC §2.8: "total ≈ 18.88 B"
    # no parameter hides outside the state dict, and no state is non-persistent
    assert sum(p.numel() for p in released_model.parameters()) == total
    assert list(released_model.buffers()) == []


def test_tiny_golden_dit_matches_manifest(golden_dir: Path) -> None:
    manifest_path = golden_dir / "manifest.json"
    if not manifest_path.is_file():
        pytest.skip(f"{manifest_path} not found")
    entry = json.loads(manifest_path.read_text())["models"]["dit"]
    model = build_on_meta(lambda: WanAudioTransformer(DiTConfig.from_dict(entry["config"])))
    actual = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = {name: list(shape) for name, shape, _dtype in entry["keys"]}
    assert actual == expected
    assert list(actual) == list(expected), "same tensor order as the official module tree"
    assert sum(math.prod(s) for s in actual.values()) == entry["params"]
