"""umT5-XXL and CLIP ViT-H/14 encoders: released key names/shapes, numerics, strict loading, tokenizer.

There is no golden reference for these two encoders, so correctness rests on:

* structure: the full released configs, built on the meta device, have exactly the state-dict keys
  and shapes of ``models_t5_umt5-xxl-enc-bf16.pth`` and of the ``visual.*`` part of
  ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (key names from Wan2.1's
  ``wan/modules/{t5,clip}.py``, which builds the released files; widths from spec §3);
* numerics, checked against independent implementations with the same tiny random weights:
  transformers' ``UMT5EncoderModel`` (per-layer relative bias, unscaled logits, RMS norm, gated
  tanh-GELU FFN, padding mask) and transformers' ``CLIPVisionModel`` (its hidden state after
  ``output_layers`` blocks is what FlashTalk's ``use_31_block`` returns).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from engine.loading.encoders import (
    clean_prompt,
    clip_visual_state,
    load_clip_visual,
    load_t5_encoder,
    load_umt5_tokenizer,
    tokenize_prompts,
)
from engine.loading.state_dict import CheckpointError
from engine.models.clip import CLIPVisionConfig, CLIPVisionEncoder, clip_preprocess
from engine.models.t5 import T5Config, UMT5Encoder

sys.path.insert(0, str(Path(__file__).parent))
from encoder_fixtures import clip_file_state, tiny_clip, tiny_t5, write_tokenizer  # noqa: E402


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def released_t5_shapes() -> dict[str, tuple[int, ...]]:
    d, f = 4096, 10240
    out = {"token_embedding.weight": (256384, d), "norm.weight": (d,)}
    for i in range(24):
        p = f"blocks.{i}."
        out |= {p + "norm1.weight": (d,), p + "norm2.weight": (d,), p + "pos_embedding.embedding.weight": (32, 64)}
        out |= {p + f"attn.{n}.weight": (d, d) for n in "qkvo"}
        out |= {p + "ffn.gate.0.weight": (f, d), p + "ffn.fc1.weight": (f, d), p + "ffn.fc2.weight": (d, f)}
    return out


def released_clip_visual_shapes() -> dict[str, tuple[int, ...]]:
    """``visual.*`` of the open-clip file, prefix removed."""
    d = 1280
    out = {
        "patch_embedding.weight": (d, 3, 14, 14),
        "cls_embedding": (1, 1, d),
        "pos_embedding": (1, 257, d),
        "pre_norm.weight": (d,), "pre_norm.bias": (d,),
        "post_norm.weight": (d,), "post_norm.bias": (d,),
        "head": (d, 1024),
    }
    for i in range(32):
        p = f"transformer.{i}."
        out |= {p + f"{n}.{w}": (d,) for n in ("norm1", "norm2") for w in ("weight", "bias")}
        out |= {p + "attn.to_qkv.weight": (3 * d, d), p + "attn.to_qkv.bias": (3 * d,)}
        out |= {p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,)}
        out |= {p + "mlp.0.weight": (4 * d, d), p + "mlp.0.bias": (4 * d,)}
        out |= {p + "mlp.2.weight": (d, 4 * d), p + "mlp.2.bias": (d,)}
    return out


# ---------------------------------------------------------------- released structure (meta device)

def test_full_t5_matches_released_keys_shapes_and_size():
    with torch.device("meta"):
        model = UMT5Encoder(T5Config())
    assert _shapes(model) == released_t5_shapes()
    # 5.68 B parameters -> 11.4 GB in bf16, the "~11 GB" of spec §3.1.
    assert sum(p.numel() for p in model.parameters()) == 5_680_910_336


def test_full_clip_visual_matches_released_keys_and_shapes():
    with torch.device("meta"):
        model = CLIPVisionEncoder(CLIPVisionConfig())
    assert _shapes(model) == released_clip_visual_shapes()


def test_full_configs_produce_released_output_shapes_on_meta():
    with torch.device("meta"):
        t5, clip = UMT5Encoder(), CLIPVisionEncoder()
        ids = torch.zeros(1, 512, dtype=torch.long)
        assert t5(ids, torch.ones_like(ids)).shape == (1, 512, 4096)
        assert clip(torch.zeros(1, 3, 224, 224)).shape == (1, 257, 1280)


# ---------------------------------------------------------------- numerics vs independent implementations

def _hf_umt5_from(ours: UMT5Encoder):
    transformers = pytest.importorskip("transformers")
    cfg = ours.cfg
    hf = transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=cfg.vocab_size, d_model=cfg.dim, d_kv=cfg.dim_attn // cfg.num_heads, d_ff=cfg.dim_ffn,
        num_layers=cfg.num_layers, num_heads=cfg.num_heads, relative_attention_num_buckets=cfg.num_buckets,
        relative_attention_max_distance=cfg.max_distance, layer_norm_epsilon=cfg.eps,
        feed_forward_proj="gated-gelu", dropout_rate=0.0,
    )).eval()
    state = {"shared.weight": ours.token_embedding.weight, "encoder.embed_tokens.weight": ours.token_embedding.weight,
             "encoder.final_layer_norm.weight": ours.norm.weight}
    for i, b in enumerate(ours.blocks):
        p = f"encoder.block.{i}.layer."
        state |= {p + f"0.SelfAttention.{n}.weight": getattr(b.attn, n).weight for n in "qkvo"}
        state |= {
            p + "0.layer_norm.weight": b.norm1.weight,
            p + "0.SelfAttention.relative_attention_bias.weight": b.pos_embedding.embedding.weight,
            p + "1.layer_norm.weight": b.norm2.weight,
            p + "1.DenseReluDense.wi_0.weight": b.ffn.gate[0].weight,  # GELU branch
            p + "1.DenseReluDense.wi_1.weight": b.ffn.fc1.weight,
            p + "1.DenseReluDense.wo.weight": b.ffn.fc2.weight,
        }
    hf.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return hf


def test_t5_matches_transformers_umt5_encoder():
    """Per-layer bucketed bias (incl. the log buckets past 16 and the 128 cap), no logit scaling,
    RMS norms, gated tanh-GELU FFN and the key padding mask all agree with transformers' umT5."""
    ours = tiny_t5()
    hf = _hf_umt5_from(ours)
    ids = torch.randint(0, ours.cfg.vocab_size, (2, 150), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 90:] = 0
    with torch.no_grad():
        got = ours(ids, mask)
        want = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_t5_encode_trims_to_real_tokens_and_padding_does_not_leak():
    model = tiny_t5()
    ids = torch.randint(3, model.cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(4))
    mask = torch.zeros_like(ids)
    mask[0, :5] = 1
    mask[1, :11] = 1
    out = model.encode(ids, mask)
    assert [tuple(o.shape) for o in out] == [(5, 32), (11, 32)]
    # The padded keys are masked: encoding the 5 real tokens alone gives the same states.
    alone = model.encode(ids[:1, :5], mask[:1, :5])[0]
    torch.testing.assert_close(out[0], alone, rtol=1e-5, atol=1e-5)


def test_clip_matches_transformers_vision_model_penultimate_state():
    """Patch/class/position embeddings, pre-norm, fused-QKV attention (rows q|k|v) and erf-GELU MLP
    agree with transformers' CLIP ViT; forward stops after ``output_layers`` (= num_layers - 1)."""
    transformers = pytest.importorskip("transformers")
    ours = tiny_clip()
    cfg = ours.cfg
    assert cfg.output_layers == cfg.num_layers - 1
    hf = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=cfg.dim, intermediate_size=cfg.dim * cfg.mlp_ratio, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, image_size=cfg.image_size, patch_size=cfg.patch_size,
        hidden_act="gelu", layer_norm_eps=cfg.eps,
    )).eval()
    d = cfg.dim
    state = {
        "embeddings.patch_embedding.weight": ours.patch_embedding.weight,
        "embeddings.class_embedding": ours.cls_embedding[0, 0],
        "embeddings.position_embedding.weight": ours.pos_embedding[0],
        "pre_layrnorm.weight": ours.pre_norm.weight, "pre_layrnorm.bias": ours.pre_norm.bias,
        "post_layernorm.weight": ours.post_norm.weight, "post_layernorm.bias": ours.post_norm.bias,
    }
    for i, b in enumerate(ours.transformer):
        p = f"encoder.layers.{i}."
        for j, n in enumerate("qkv"):
            state[p + f"self_attn.{n}_proj.weight"] = b.attn.to_qkv.weight[j * d:(j + 1) * d]
            state[p + f"self_attn.{n}_proj.bias"] = b.attn.to_qkv.bias[j * d:(j + 1) * d]
        state |= {p + "self_attn.out_proj.weight": b.attn.proj.weight, p + "self_attn.out_proj.bias": b.attn.proj.bias,
                  p + "mlp.fc1.weight": b.mlp[0].weight, p + "mlp.fc1.bias": b.mlp[0].bias,
                  p + "mlp.fc2.weight": b.mlp[2].weight, p + "mlp.fc2.bias": b.mlp[2].bias}
        for n in ("1", "2"):
            state |= {p + f"layer_norm{n}.{w}": getattr(getattr(b, "norm" + n), w) for w in ("weight", "bias")}
    hf_keys = hf.state_dict().keys()
    prefix = "vision_model." if all(k.startswith("vision_model.") for k in hf_keys) else ""
    hf.load_state_dict({prefix + k: v.detach().clone() for k, v in state.items()}, strict=True)
    pixels = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = ours(pixels)
        hidden = hf(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert got.shape == (2, cfg.num_tokens, d)
    torch.testing.assert_close(got, hidden[cfg.output_layers], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, hidden[-2], rtol=1e-5, atol=1e-5)


def test_clip_preprocess_resizes_without_aspect_and_normalises_in_input_dtype():
    cfg = CLIPVisionConfig()
    video = torch.full((1, 3, 1, 48, 32), 0.2, dtype=torch.bfloat16)
    x = clip_preprocess(video, cfg)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.bfloat16
    mean = torch.tensor(cfg.mean, dtype=torch.bfloat16).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.bfloat16).view(1, 3, 1, 1)
    want = (torch.full((1, 3, 1, 1), 0.2, dtype=torch.bfloat16) * 0.5 + 0.5 - mean) / std
    torch.testing.assert_close(x[..., :1, :1], want)
    with pytest.raises(ValueError, match="single-frame"):
        clip_preprocess(torch.zeros(1, 3, 2, 8, 8), cfg)


# ---------------------------------------------------------------- strict loading

def test_load_t5_encoder_round_trip(tmp_path):
    model = tiny_t5()
    path = tmp_path / "t5.pth"
    torch.save(model.state_dict(), path)
    loaded = load_t5_encoder(path, dtype=torch.float32, device="cpu", config=T5Config.tiny())
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    ids = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids))


def test_load_t5_encoder_rejects_missing_and_misshaped_keys(tmp_path):
    state = tiny_t5().state_dict()
    missing = dict(state)
    del missing["blocks.1.pos_embedding.embedding.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing key.*blocks\.1\.pos_embedding"):
        load_t5_encoder(tmp_path / "missing.pth", dtype=torch.float32, config=T5Config.tiny())
    bad = dict(state)
    bad["norm.weight"] = torch.ones(7)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'norm\.weight'"):
        load_t5_encoder(tmp_path / "bad.pth", dtype=torch.float32, config=T5Config.tiny())
    with pytest.raises(CheckpointError, match="not found"):
        load_t5_encoder(tmp_path / "absent.pth", config=T5Config.tiny())


def test_load_clip_visual_skips_text_tower_and_rejects_foreign_keys(tmp_path):
    model = tiny_clip()
    state = clip_file_state(model)
    torch.save(state, tmp_path / "clip.pth")
    loaded = load_clip_visual(tmp_path / "clip.pth", dtype=torch.float32, config=CLIPVisionConfig.tiny())
    pixels = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), model(pixels))

    foreign = dict(state, **{"decoder.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="outside visual"):
        clip_visual_state(foreign, "x.pth")
    no_last_block = {k: v for k, v in state.items() if not k.startswith("visual.transformer.2.")}
    torch.save(no_last_block, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match=r"missing key.*transformer\.2\."):
        load_clip_visual(tmp_path / "short.pth", dtype=torch.float32, config=CLIPVisionConfig.tiny())


# ---------------------------------------------------------------- tokenizer and prompt cleaning

def test_missing_tokenizer_folder_names_the_folder(tmp_path):
    folder = tmp_path / "weights" / "google" / "umt5-xxl"
    with pytest.raises(CheckpointError, match=r"umT5 tokenizer folder not found: .*google/umt5-xxl"):
        load_umt5_tokenizer(folder)


def test_tokenize_prompts_pads_to_text_len_with_eos(tmp_path):
    tokenizer = load_umt5_tokenizer(write_tokenizer(tmp_path / "tok"))
    ids, mask = tokenize_prompts(tokenizer, ["a   person\n is talking"], text_len=10)
    assert ids.shape == mask.shape == (1, 10) and ids.dtype == torch.long
    assert mask[0].tolist() == [1] * 5 + [0] * 5  # 4 words + EOS
    assert ids[0, 4].item() == 1 and ids[0, 5:].tolist() == [0] * 5


def test_clean_prompt_collapses_whitespace():
    assert clean_prompt("  A  person\n\tis talking. ") == "A person is talking."


def test_clean_prompt_with_ftfy_unescapes_html_and_fixes_text():
    pytest.importorskip("ftfy")
    assert clean_prompt("  A  person&amp;amp;\n\ttalks. ") == "A person& talks."
    assert clean_prompt("\u201cquoted\u201d") == '"quoted"'  # ftfy straightens curly quotes


def test_clean_prompt_without_ftfy(monkeypatch):
    monkeypatch.setitem(sys.modules, "ftfy", None)  # import ftfy -> ImportError
    assert clean_prompt("A person is talking.  Only") == "A person is talking. Only"
    with pytest.raises(ImportError, match="pip install ftfy"):
        clean_prompt("一个人在说话")
