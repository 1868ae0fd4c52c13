"""ConditioningCache and Conditioner: compute once, reuse from disk, never load encoders on a hit."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import engine.conditioning as conditioning
from engine.conditioning import Conditioner, ConditioningCache, file_identity
from engine.loading.encoders import T5_CHECKPOINT, T5_TOKENIZER_DIR, load_umt5_tokenizer, tokenize_prompts
from engine.models.clip import CLIPVisionConfig, clip_preprocess
from engine.models.t5 import T5Config
from engine.prepare import reference_pixels

sys.path.insert(0, str(Path(__file__).parent))
from encoder_fixtures import write_weights_folder  # noqa: E402


class Counter:
    def __init__(self, value: torch.Tensor) -> None:
        self.value, self.calls = value, 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return self.value


def _image(seed: int, h: int = 24, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- ConditioningCache

def test_text_hit_does_not_call_compute(tmp_path):
    cache = ConditioningCache(tmp_path, text_model_id="t5:1")
    compute = Counter(torch.randn(7, 8, dtype=torch.bfloat16))
    first = cache.get_text("a person is talking", compute)
    second = cache.get_text("a person is talking", compute)
    assert compute.calls == 1
    assert second.dtype == torch.bfloat16 and torch.equal(first, second)
    # A new cache object on the same folder (a new process) hits as well.
    fresh = ConditioningCache(tmp_path, text_model_id="t5:1")
    assert torch.equal(fresh.get_text("a person is talking", compute), first)
    assert compute.calls == 1


def test_key_changes_with_prompt_model_image_and_size(tmp_path):
    cache = ConditioningCache(tmp_path, text_model_id="t5:1", image_model_id="clip:1")
    other_model = ConditioningCache(tmp_path, text_model_id="t5:2", image_model_id="clip:2")
    assert cache.text_key("a") != cache.text_key("b")
    assert cache.text_key("a") != other_model.text_key("a")
    img = _image(0)
    assert cache.image_key(img) == cache.image_key(img.copy())
    assert cache.image_key(img) != other_model.image_key(img)
    assert cache.image_key(img, (24, 16)) != cache.image_key(img, (48, 32))
    flipped = img.copy()
    flipped[0, 0, 0] ^= 1
    assert cache.image_key(img) != cache.image_key(flipped)
    assert cache.image_key(img) != cache.image_key(img.reshape(16, 24, 3))


def test_different_image_misses(tmp_path):
    cache = ConditioningCache(tmp_path)
    compute = Counter(torch.randn(1, 5, 8))
    cache.get_image(_image(0), compute, target_hw=(24, 16))
    cache.get_image(_image(0), compute, target_hw=(24, 16))
    assert compute.calls == 1
    cache.get_image(_image(1), compute, target_hw=(24, 16))
    assert compute.calls == 2
    cache.get_image(torch.from_numpy(_image(1)), compute, target_hw=(24, 16))  # tensors hash the same
    assert compute.calls == 2


def test_corrupted_entry_is_recomputed_with_a_warning(tmp_path, caplog):
    cache = ConditioningCache(tmp_path)
    compute = Counter(torch.arange(6.0).view(2, 3))
    cache.get_text("p", compute)
    path = cache.path_for("text", cache.text_key("p"))
    path.write_bytes(path.read_bytes()[:20])  # truncated
    with caplog.at_level(logging.WARNING, logger="engine.conditioning"):
        value = cache.get_text("p", compute)
    assert compute.calls == 2 and torch.equal(value, compute.value)
    assert any("unreadable" in r.message and path.name in r.getMessage() for r in caplog.records)
    cache.get_text("p", compute)  # the rewritten entry is good again
    assert compute.calls == 2


def test_entry_under_the_wrong_name_is_not_trusted(tmp_path):
    cache = ConditioningCache(tmp_path)
    cache.get_text("p", Counter(torch.zeros(2)))
    os.replace(cache.path_for("text", cache.text_key("p")), cache.path_for("text", cache.text_key("q")))
    compute = Counter(torch.ones(2))
    assert torch.equal(cache.get_text("q", compute), torch.ones(2)) and compute.calls == 1


def test_writes_are_atomic(tmp_path, monkeypatch):
    cache = ConditioningCache(tmp_path / "cache")
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy_replace(src, dst):
        # At the moment of the rename the final name does not exist yet and the temp file is complete.
        assert not Path(dst).exists()
        assert Path(src).parent == Path(dst).parent and Path(src).stat().st_size > 0
        seen.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(conditioning.os, "replace", spy_replace)
    cache.get_text("p", Counter(torch.randn(3, 4)))
    assert len(seen) == 1 and Path(seen[0][1]).name.endswith(".safetensors")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(seen[0][1]).name]

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(conditioning.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.get_text("other", Counter(torch.randn(3, 4)))
    assert not cache.path_for("text", cache.text_key("other")).exists()
    assert len(list((tmp_path / "cache").iterdir())) == 1  # no temp file left behind


def test_file_identity_changes_with_content_not_with_copy(tmp_path):
    a = tmp_path / "w.pth"
    a.write_bytes(b"x" * 3_000_000)
    b = tmp_path / "copy" / "w.pth"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    assert file_identity(a) == file_identity(b)
    b.write_bytes(b"x" * 2_999_999 + b"y")
    assert file_identity(a) != file_identity(b)


# ---------------------------------------------------------------- Conditioner (tiny released-layout folder)

@pytest.fixture
def weights(tmp_path):
    return write_weights_folder(tmp_path / "weights")


def _conditioner(folder: Path, cache_dir: Path) -> Conditioner:
    return Conditioner(folder, cache_dir=cache_dir, device="cpu", t5_dtype=torch.float32,
                       t5_config=T5Config.tiny(), clip_config=CLIPVisionConfig.tiny())


def _count_loads(monkeypatch) -> dict[str, int]:
    counts = {"t5": 0, "clip": 0}
    real_t5, real_clip = conditioning.load_t5_encoder, conditioning.load_clip_visual

    def t5(*args, **kwargs):
        counts["t5"] += 1
        return real_t5(*args, **kwargs)

    def clip(*args, **kwargs):
        counts["clip"] += 1
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(conditioning, "load_t5_encoder", t5)
    monkeypatch.setattr(conditioning, "load_clip_visual", clip)
    return counts


def test_conditioner_loads_encoders_only_on_a_miss(weights, tmp_path, monkeypatch):
    folder, t5, clip = weights
    counts = _count_loads(monkeypatch)
    cond = _conditioner(folder, tmp_path / "cache")

    ctx = cond.text_context("a person is talking")
    assert ctx.shape == (5, 32) and ctx.dtype == torch.bfloat16  # 4 words + EOS
    img = _image(2)
    tokens = cond.image_tokens(img)
    assert tokens.shape == (1, 5, 32) and tokens.dtype == torch.bfloat16
    assert counts == {"t5": 1, "clip": 1}

    again = _conditioner(folder, tmp_path / "cache")  # e.g. the next session / process
    assert torch.equal(again.text_context("a person is talking"), ctx)
    assert torch.equal(again.image_tokens(img.copy()), tokens)
    assert counts == {"t5": 1, "clip": 1}

    again.image_tokens(_image(3))
    assert counts == {"t5": 1, "clip": 2}


def test_conditioner_outputs_equal_direct_encoder_calls(weights, tmp_path):
    folder, t5, clip = weights
    cond = _conditioner(folder, tmp_path / "cache")
    ctx = cond.text_context("the person is moving")
    # The file holds bf16 weights (like the release); the conditioner loads them into fp32.
    t5_bf16 = t5.to(torch.bfloat16).float()
    tokenizer = load_umt5_tokenizer(folder / T5_TOKENIZER_DIR)
    ids, mask = tokenize_prompts(tokenizer, ["the person is moving"], text_len=T5Config.tiny().text_len)
    with torch.no_grad():
        want = t5_bf16.encode(ids, mask)[0]
    torch.testing.assert_close(ctx, want.to(torch.bfloat16))

    img = _image(4)
    video = reference_pixels(img, device=torch.device("cpu"), dtype=torch.bfloat16)
    with torch.no_grad():
        want = clip(clip_preprocess(video, clip.cfg))
    torch.testing.assert_close(cond.image_tokens(img), want.to(torch.bfloat16))


def test_new_weights_invalidate_entries(weights, tmp_path, monkeypatch):
    folder, _, _ = weights
    counts = _count_loads(monkeypatch)
    _conditioner(folder, tmp_path / "cache").text_context("a person")
    state = torch.load(folder / T5_CHECKPOINT, weights_only=True)
    state["norm.weight"] = state["norm.weight"] * 2
    torch.save(state, folder / T5_CHECKPOINT)
    _conditioner(folder, tmp_path / "cache").text_context("a person")
    assert counts["t5"] == 2


def test_reference_pixels_casts_before_scaling():
    img = np.full((2, 2, 3), 77, dtype=np.uint8)
    x = reference_pixels(img, device=torch.device("cpu"), dtype=torch.bfloat16)
    assert x.shape == (1, 3, 1, 2, 2) and x.dtype == torch.bfloat16
    want = (torch.tensor(77, dtype=torch.bfloat16) / 255 - 0.5) * 2
    assert torch.equal(x.flatten()[0], want)


def test_reference_latents_cached_per_image_and_params(tmp_path):
    cache = ConditioningCache(tmp_path / "cache", vae_model_id="vae-a")
    calls = []

    def compute():
        calls.append(1)
        return {"y": torch.arange(6.0).reshape(1, 2, 3), "motion_latent": torch.ones(1, 16, 1, 2, 2)}

    img = _image(5)
    first = cache.get_reference(img, "frames=33", compute)
    again = cache.get_reference(img, "frames=33", compute)
    assert len(calls) == 1
    assert set(again) == {"y", "motion_latent"} and all(torch.equal(first[k], again[k]) for k in first)
    cache.get_reference(img, "frames=17", compute)  # other params: a miss
    cache.get_reference(_image(6), "frames=33", compute)  # other image: a miss
    ConditioningCache(tmp_path / "cache", vae_model_id="vae-b").get_reference(img, "frames=33", compute)  # other VAE
    assert len(calls) == 4
