"""FP8 weight storage (engine.ops.fp8_weights) on the CPU, and the refusal of FP8 GEMMs on GPUs without FP8 tensor
cores.

Tolerances (relative to the largest |value| of the reference velocity, golden dit_forward cases): e4m3 keeps 3
mantissa bits, so each weight is off by <= 1/16 of itself; over a block's sums the velocity error measured here
is ~0.04 max / ~0.006 mean, asserted as < 0.08 max and < 0.015 mean. On the tiny-preset chunk: a few uint8 levels.

The GPU-capability tests replace ``engine.ops.fp8.cuda_capability`` (one function returning a tuple) and, where the
check goes through device resolution or the bench's CUDA check, ``engine.config.resolve_device`` /
``torch.cuda.is_available``: thin fakes standing in for a GPU this machine does not have.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from engine.bench.config import BenchConfig, BenchConfigError
from engine.build import build_engine
from engine.config import FlashTalkConfigError
from engine.interface import SessionRequest
from engine.models.transformer import FP32Linear
from engine.ops import fp8
from engine.ops.fp8 import Fp8Linear, Fp8UnsupportedError, quantize_rows, require_fp8_gemms
from engine.ops.fp8_weights import Fp8WeightLinear, store_block_weights_fp8
from soulx_live.config import EngineConfig

sys.path.insert(0, str(Path(__file__).parent))
from test_offload import golden_dit, golden_forward  # noqa: E402

CASES = ("dit_forward__a", "dit_forward__b_bf16weights")


def test_the_weight_is_stored_in_one_byte_and_dequantised_exactly() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(96, 48)
    layer = Fp8WeightLinear(linear)
    assert layer.weight_fp8.dtype == torch.float8_e4m3fn and layer.weight_scale.shape == (48, 1)
    q, scale = quantize_rows(linear.weight.detach())
    assert torch.equal(layer.dequantized(torch.float32), q.float() * scale)  # e4m3 -> fp32 is exact
    x = torch.randn(3, 7, 96)
    with torch.no_grad():
        ref, out = linear(x), layer(x)
    assert out.shape == ref.shape and 1e-4 < float((out - ref).abs().max() / ref.abs().max()) < 0.05
    bf16 = Fp8WeightLinear(linear.bfloat16())
    assert bf16.weight_fp8.dtype == torch.float8_e4m3fn and bf16.bias.dtype == torch.bfloat16
    with torch.no_grad():
        assert bf16(x.bfloat16()).dtype == torch.bfloat16  # computes in the activation dtype


def test_every_block_linear_is_stored_in_fp8(golden_dir: Path) -> None:
    model, _ = golden_dit(golden_dir)
    head = model.head.head.weight.clone()
    assert store_block_weights_fp8(model) == 15 * len(model.blocks)  # 4 self + 6 cross + 2 FFN + 3 audio
    for block in model.blocks:
        assert not [m for m in block.modules() if type(m) is nn.Linear]
    assert isinstance(model.head.head, FP32Linear) and torch.equal(model.head.head.weight, head)  # float32 kept
    assert isinstance(model.text_embedding[0], nn.Linear)  # outside the blocks: unchanged


def test_fp8_gemm_layers_keep_their_path() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_sequence_parallel import _model

    model = _model()
    fp8.quantize_dit_fp8(model)
    assert store_block_weights_fp8(model) == 7 * len(model.blocks)  # the 15 - 8 the GEMM swap left
    assert isinstance(model.blocks[0].ffn[0], Fp8Linear) and isinstance(model.blocks[0].cross_attn.k, Fp8WeightLinear)


@pytest.mark.parametrize("case", CASES)
def test_golden_dit_with_fp8_weights_stays_close(golden_dir: Path, case: str) -> None:
    model, inputs = golden_dit(golden_dir, case)
    expected = load_file(str(golden_dir / "cases" / case / "expected.safetensors"))["out"]
    resident = golden_forward(model, inputs)
    store_block_weights_fp8(model)
    out = golden_forward(model, inputs)
    scale = float(expected.abs().max())
    assert float((resident - expected).abs().max()) / scale < 1e-5  # the float32 path matches the reference
    err = (out - expected).abs()
    assert 1e-4 < float(err.max()) / scale < 0.08 and float(err.mean()) / scale < 0.015


def _tiny_frames(**flashtalk: object) -> np.ndarray:
    engine = build_engine(EngineConfig(kind="flashtalk", flashtalk={"preset": "tiny-random", **flashtalk}))
    session = engine.start_session(SessionRequest(session_id="s", avatar=None, seed=3))
    t = np.arange(engine.spec.samples_per_chunk) / 16000
    session.push_audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    return session.next_chunk().frames.astype(np.int16)


@pytest.mark.timeout(300)
def test_tiny_preset_chunk_in_each_memory_mode() -> None:
    resident = _tiny_frames()
    assert np.array_equal(_tiny_frames(memory="offload"), resident)  # offload moves bytes, not maths
    fp8_weights = _tiny_frames(fp8_weights=True)
    diff = np.abs(fp8_weights - resident)
    assert 0 < diff.mean() < 1.0 and diff.max() <= 4  # a few uint8 levels at most
    assert np.array_equal(_tiny_frames(memory="offload", fp8_weights=True), fp8_weights)


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(fp8, "cuda_capability", lambda _device: capability)


def test_fp8_gemms_are_refused_below_compute_capability_8_9(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpu(monkeypatch, (8, 6))  # e.g. an A6000 or RTX 3090
    with pytest.raises(Fp8UnsupportedError) as info:
        require_fp8_gemms("cuda")
    message = str(info.value)
    assert "8.6" in message and "engine.flashtalk.fp8=false" in message and "fp8_weights=true" in message
    _fake_gpu(monkeypatch, (8, 9))
    require_fp8_gemms("cuda")  # Ada and later pass
    require_fp8_gemms("cpu")  # the CPU emulation is the intended test path


def test_build_refuses_fp8_before_loading_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import engine.config

    _fake_gpu(monkeypatch, (8, 0))  # an A100
    monkeypatch.setattr(engine.config, "resolve_device", lambda _requested: (torch.device("cuda"), "fake GPU"))
    settings = EngineConfig(kind="flashtalk", device="cuda", weights_dir=tmp_path / "absent", flashtalk={"fp8": True})
    with pytest.raises(FlashTalkConfigError, match=r"engine\.flashtalk\.fp8=false"):
        build_engine(settings)  # the weights folder does not exist: the refusal comes first


def test_bench_refuses_fp8_on_the_same_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpu(monkeypatch, (7, 5))  # a T4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(BenchConfigError, match="--fp8"):
        BenchConfig(fp8=True, device="cuda").validate()
    BenchConfig(fp8_weights=True, device="cuda").validate()  # weight-only FP8 runs on any GPU
