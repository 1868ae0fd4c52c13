"""The analytical memory table (engine.memory): exact against the models' tensors, checked against the bytes a tiny
DiT actually holds on its "device" in every mode, and the released 14B configuration's figures.

Measured = bytes of the parameters/buffers on the device: the non-block layers plus, resident, every block or,
offloaded, the device copies the offloader holds, sampled inside every block's forward. (tracemalloc cannot see
tensor memory: torch allocates through its own C++ allocator, not Python's.) Activations are not part of this
check; their estimate is in engine.memory's docstring and the GPU figure comes from ``soulx-live bench``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from engine.loading.state_dict import build_on_meta
from engine.memory import (
    GIB,
    MEMORY_MODES,
    T5_PARAMS,
    VAE_PARAMS,
    WAV2VEC2_PARAMS,
    MemoryMode,
    dit_host_bytes,
    dit_weight_bytes,
    format_table,
    memory_table,
    peak_memory,
)
from engine.models.transformer import DiTConfig, WanAudioTransformer
from engine.placement import place_dit

sys.path.insert(0, str(Path(__file__).parent))
from test_offload import golden_dit, golden_forward  # noqa: E402

ALIGNMENT_SLACK = 64  # offload pads every tensor of a block's flat buffer to 64 bytes


def _bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _measured_device_bytes(model: WanAudioTransformer, inputs: dict[str, torch.Tensor]) -> int:
    """The most weight bytes on the device at any block of a forward."""
    offloader = getattr(model, "offloader", None)
    outside = [t for name, t in [*model.named_parameters(), *model.named_buffers()] if not name.startswith("blocks.")]
    blocks = [t for t in [*model.blocks.parameters(), *model.blocks.buffers()]]
    samples: list[int] = []
    for block in model.blocks:
        block.norm2.register_forward_pre_hook(lambda _m, _a: samples.append(
            _bytes(outside) + (offloader.device_bytes() if offloader else _bytes(blocks))))
    golden_forward(model, inputs)
    return max(samples)


@pytest.mark.parametrize("mode", MEMORY_MODES, ids=lambda m: m.label)
def test_derived_weights_match_the_tiny_dit_on_its_device(golden_dir: Path, mode: MemoryMode) -> None:
    model, inputs = golden_dit(golden_dir)
    place_dit(model, "cpu", mode)
    measured = _measured_device_bytes(model, inputs)
    derived = dit_weight_bytes(model.config, mode, dtype_bytes=4)  # the golden DiT is float32
    tensors_per_block = sum(1 for _ in [*model.blocks[0].parameters(), *model.blocks[0].buffers()])
    slack = 2 * tensors_per_block * ALIGNMENT_SLACK if mode.offload else 0
    assert derived <= measured <= derived + slack, (measured, derived)
    if mode.offload:
        assert model.offloader.host_bytes() >= dit_host_bytes(model.config, mode, dtype_bytes=4)


def test_the_formula_counts_every_parameter_of_the_released_models() -> None:
    cfg = DiTConfig()
    released = build_on_meta(lambda: WanAudioTransformer(cfg))
    assert dit_weight_bytes(cfg, MemoryMode()) == 2 * sum(p.numel() for p in released.parameters()) == 2 * 18_882_046_784
    from engine.models.t5 import T5Config, UMT5Encoder
    from engine.models.vae import VAEConfig, WanVAE

    assert sum(p.numel() for p in build_on_meta(lambda: WanVAE(VAEConfig())).parameters()) == VAE_PARAMS
    assert sum(p.numel() for p in build_on_meta(lambda: UMT5Encoder(T5Config())).parameters()) == T5_PARAMS
    from transformers import Wav2Vec2Config

    from engine.models.wav2vec2 import FlashTalkWav2Vec2

    w2v = build_on_meta(lambda: FlashTalkWav2Vec2(Wav2Vec2Config()))
    assert sum(p.numel() for p in w2v.parameters()) == WAV2VEC2_PARAMS


def test_released_14b_table_meets_the_goals() -> None:
    rows = {(row.mode.offload, row.mode.fp8_weights): row for row in memory_table()}
    bf16, fp8 = rows[(False, False)], rows[(False, True)]
    assert 0.50 < fp8.dit_weights / bf16.dit_weights < 0.52  # FP8 weights: about half (scales, non-block bf16)
    assert bf16.peak > 44 * GIB  # resident bf16 needs an 80 GB-class GPU (SPEC §7.3)
    assert fp8.peak < 40 * GIB  # resident FP8 fits a 48 GB GPU (44-46 GiB usable), with a new prompt's T5
    assert rows[(True, True)].peak < 20 * GIB and rows[(True, False)].peak < 20 * GIB  # offload fits 24 GB
    assert rows[(True, True)].peak_cached_prompt < 8 * GIB  # ... and much less once the prompt is cached
    assert rows[(True, False)].host_pinned > 30 * GIB > rows[(True, True)].host_pinned > 15 * GIB
    table = format_table(list(rows.values()))
    assert table.count("\n") == 5 and "offload, FP8 weights" in table


def test_peak_grows_with_the_chunk_size() -> None:
    from engine.memory import Geometry

    small, released = peak_memory(MemoryMode(), geometry=Geometry(512, 512, 33)), peak_memory(MemoryMode())
    assert small.streaming < released.streaming and small.dit_weights == released.dit_weights


def test_meta_tensors_are_not_needed(golden_dir: Path) -> None:
    """place_dit works on real tensors only: nothing is left on the meta device after placement."""
    model, _ = golden_dit(golden_dir)
    place_dit(model, "cpu", MemoryMode(offload=True, fp8_weights=True))
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert all(type(m) is not nn.Linear for m in model.blocks.modules())
