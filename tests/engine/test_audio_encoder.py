"""Audio front end: streaming ring, window indices, normalisation, wav2vec2 model and loader.

The golden parity of the whole path is in ``test_audio_golden.py``; these tests pin the pieces, using
tiny random wav2vec2 folders written in both released formats.
"""
from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason='the FlashTalk audio front end needs the [engine] extra: pip install -e ".[engine]" (or ".[all]")')
from safetensors.torch import save_file
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from engine.audio_encoder import (
    AudioEncoder,
    StreamingAudioWindow,
    frames_for_samples,
    loudness_normalize,
    normalize_features,
    samples_per_chunk,
    window_embeddings,
)
from engine.loading.state_dict import CheckpointError
from engine.loading.wav2vec2 import load_wav2vec2
from engine.models.wav2vec2 import FlashTalkWav2Vec2

SR = 16000


def tiny_config(stable: bool = False) -> Wav2Vec2Config:
    return Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=[8] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_bias=False, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer" if stable else "group", do_stable_layer_norm=stable,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
        layerdrop=0.0, mask_time_prob=0.05,
    )


def random_model(config: Wav2Vec2Config, seed: int = 0) -> FlashTalkWav2Vec2:
    torch.manual_seed(seed)
    model = FlashTalkWav2Vec2(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)  # every tensor random, layer norms included
    return model.eval()


def write_folder(folder: Path, model: FlashTalkWav2Vec2, *, legacy: bool) -> Path:
    """``legacy``: a Wav2Vec2ForPreTraining-style ``pytorch_model.bin`` (prefix, weight_g/v, heads)."""
    folder.mkdir(parents=True)
    model.config.to_json_file(str(folder / "config.json"))
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if not legacy:
        save_file(state, str(folder / "model.safetensors"))
        return folder
    renamed = {}
    for key, tensor in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        renamed["wav2vec2." + key] = tensor
    renamed |= {"quantizer.codevectors": torch.zeros(1, 4, 3), "project_q.weight": torch.zeros(3, 3),
                "project_hid.weight": torch.zeros(3, 16)}
    torch.save(renamed, folder / "pytorch_model.bin")
    return folder


def speech_like(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.2 * env * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


# --- streaming ring -------------------------------------------------------------------------------

def test_ring_matches_release_deque_across_wraparound() -> None:
    win = StreamingAudioWindow(sample_rate=SR, fps=25, seconds=1)  # 16,000 samples: wraps quickly
    ref = deque([0.0] * win.capacity, maxlen=win.capacity)
    rng = np.random.default_rng(0)
    for n in [3000, 7000, 9000, 16000, 1, 20000, 5555, 0, 12345]:
        pcm = rng.standard_normal(n).astype(np.float32)
        win.push(pcm)
        ref.extend(pcm.tolist())
        got = win.window()
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, np.array(ref))


def test_ring_is_preallocated_and_never_reallocated() -> None:
    win = StreamingAudioWindow()
    assert win.capacity == 8 * SR
    np.testing.assert_array_equal(win.window(), np.zeros(8 * SR))  # starts as 8 s of silence
    ring = win._ring
    pointer = ring.__array_interface__["data"][0]
    out = np.empty(win.capacity)
    for _ in range(10):
        win.push(np.ones(17920, dtype=np.float32))
        assert win.window(out) is out
    assert win._ring is ring and win._ring.__array_interface__["data"][0] == pointer
    win.reset()
    assert win._ring is ring and not ring.any()


def test_push_int16_scales_like_librosa() -> None:
    win = StreamingAudioWindow(seconds=1)
    win.push(np.array([16384, -32768], dtype=np.int16))
    np.testing.assert_array_equal(win.window()[-2:], [0.5, -1.0])
    with pytest.raises(TypeError, match="int16"):
        win.push(np.array([1, 2], dtype=np.int64))


def test_released_chunk_indices_and_slice() -> None:
    win = StreamingAudioWindow()
    assert win.seq_len == 200
    assert win.chunk_indices(33) == (167, 200)
    assert win.chunk_indices(17) == (183, 200)
    assert win.samples_per_chunk(33, 5) == 17920 == samples_per_chunk(33, 5)
    assert win.samples_per_chunk(17, 5) == 12 * 640
    with pytest.raises(ValueError):
        win.chunk_indices(201)


# --- windows and normalisation --------------------------------------------------------------------

def test_window_embeddings_clamp_to_end() -> None:
    hidden = torch.arange(200, dtype=torch.float32).reshape(200, 1, 1).expand(200, 2, 3)
    emb = window_embeddings(hidden, 167, 200)
    assert emb.shape == (1, 33, 5, 2, 3)
    frames = emb[0, :, :, 0, 0].long()
    assert frames[0].tolist() == [165, 166, 167, 168, 169]
    assert frames[31].tolist() == [196, 197, 198, 199, 199]
    assert frames[32].tolist() == [197, 198, 199, 199, 199]
    inner = window_embeddings(hidden, 10, 20)[0, :, :, 0, 0].long()  # clamp is to end - 1, not seq_len - 1
    assert inner[-1].tolist() == [17, 18, 19, 19, 19]
    assert window_embeddings(hidden, -1, -1)[0, 0, :, 0, 0].long().tolist() == [0, 0, 0, 1, 2]


def test_seq_len_counts_like_release() -> None:
    assert frames_for_samples(128000) == 200
    assert frames_for_samples(20000) == 31
    assert frames_for_samples(639) == 0


def test_silence_is_left_unchanged_by_loudness_norm() -> None:
    silence = np.zeros(8 * SR)
    out = loudness_normalize(silence, SR)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, silence)


def test_loudness_norm_reaches_target() -> None:
    import pyloudnorm

    wave = speech_like(2 * SR).astype(np.float64)
    out = loudness_normalize(wave, SR)
    assert abs(pyloudnorm.Meter(SR).integrated_loudness(out) - (-23.0)) < 1e-6
    assert not np.array_equal(out, wave)


def test_normalize_features_matches_transformers() -> None:
    wave = loudness_normalize(speech_like(SR + 123), SR)
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=False)
    ref = np.squeeze(fe(wave, sampling_rate=SR).input_values)
    got = normalize_features(wave)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


# --- model ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("stable", [False, True])
def test_model_without_resampling_equals_transformers(stable: bool) -> None:
    """seq_len = number of CNN frames makes the interpolation an identity: the layer outputs must be
    those of transformers' own Wav2Vec2Model (pre-LN: the last one after the final LayerNorm)."""
    model = random_model(tiny_config(stable))
    ref = Wav2Vec2Model(model.config).eval()
    ref.load_state_dict(model.state_dict())
    x = torch.from_numpy(normalize_features(speech_like(SR)))[None]
    n_cnn = model.feature_extractor(x).shape[-1]
    with torch.inference_mode():
        got = model(x, n_cnn)
        out = ref(x, output_hidden_states=True)
    expected = torch.stack(out.hidden_states[1:], dim=2)
    if stable:
        expected[:, :, -1] = out.last_hidden_state
    assert got.shape == (1, n_cnn, 2, 16)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_resampling_is_linear_align_corners() -> None:
    model = random_model(tiny_config())
    x = torch.from_numpy(normalize_features(speech_like(8 * SR)))[None]
    feats = model.feature_extractor(x).transpose(1, 2)
    assert feats.shape[1] == 399
    from engine.models.wav2vec2 import resample_features

    torch.testing.assert_close(resample_features(feats, 200), feats[:, ::2], rtol=0, atol=1e-6)  # spec §5.2


# --- loader ---------------------------------------------------------------------------------------

def test_legacy_and_new_weight_norm_give_identical_hidden_states(tmp_path: Path) -> None:
    model = random_model(tiny_config())
    new = load_wav2vec2(write_folder(tmp_path / "new", model, legacy=False))
    old = load_wav2vec2(write_folder(tmp_path / "old", model, legacy=True))
    for loaded in (new, old):
        assert all(p.device.type == "cpu" and not p.requires_grad for p in loaded.parameters())
    x = torch.from_numpy(normalize_features(speech_like(SR + 500)))[None]
    with torch.inference_mode():
        a, b, ref = new(x, 26), old(x, 26), model(x, 26)
    assert a.shape == (1, 26, 2, 16)
    assert torch.equal(a, b)
    assert torch.equal(a, ref)


def test_folder_without_weights_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "w2v"
    folder.mkdir()
    tiny_config().to_json_file(str(folder / "config.json"))
    with pytest.raises(CheckpointError, match="no weights.*model.safetensors.*pytorch_model.bin"):
        load_wav2vec2(folder)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_wav2vec2(tmp_path)


def test_wrong_shape_and_unknown_keys_are_errors(tmp_path: Path) -> None:
    model = random_model(tiny_config())
    folder = write_folder(tmp_path / "w", model, legacy=False)
    state = dict(model.state_dict())
    state["encoder.layers.0.attention.q_proj.extra"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected key"):
        load_wav2vec2(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["hidden_size"] = 32
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatch|does not match"):
        load_wav2vec2(folder)


def test_checkpoint_without_masked_spec_embed_loads(tmp_path: Path) -> None:
    model = random_model(tiny_config())
    folder = tmp_path / "w"
    folder.mkdir()
    model.config.to_json_file(str(folder / "config.json"))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "masked_spec_embed"}
    save_file(state, str(folder / "model.safetensors"))
    loaded = load_wav2vec2(folder)
    assert not hasattr(loaded, "masked_spec_embed")


# --- encoder --------------------------------------------------------------------------------------

def test_audio_encoder_streaming_chunk(tmp_path: Path) -> None:
    model = random_model(tiny_config())
    encoder = AudioEncoder.from_folder(write_folder(tmp_path / "w", model, legacy=False))
    win = StreamingAudioWindow()
    win.push(speech_like(17920))
    emb, hidden = encoder.embed_window(win, 33)
    assert emb.shape == (1, 33, 5, 2, 16) and hidden.shape == (200, 2, 16)
    emb2, hidden2 = encoder.embed(win.window(), 167, 200)
    assert torch.equal(emb, emb2) and torch.equal(hidden, hidden2)
    torch.testing.assert_close(emb[0, :, 2], hidden[167:200])
    # loudness normalisation cancels in the standardisation (spec §5.3): dropping it barely matters
    quiet = AudioEncoder(encoder.model, loudness_norm=False)
    torch.testing.assert_close(quiet.embed_window(win, 33)[0], emb, rtol=1e-4, atol=1e-4)
