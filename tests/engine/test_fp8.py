"""FP8 (e4m3) linear layers: quantisation, the layer swap, and the error on the golden DiT cases (CPU emulation;
``torch._scaled_mm`` itself needs FP8 tensor cores and is exercised by benchmarks/fp8_error.py on a GPU)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from golden_support import present_cases
from torch import nn

from engine.bench.fp8_error import DIT_CASES, measure_fp8_error
from engine.ops.fp8 import FP8_MAX, Fp8Linear, quantize_dit_fp8, quantize_rows


def test_rows_are_scaled_to_the_e4m3_range() -> None:
    x = torch.randn(5, 64) * torch.tensor([1e-3, 1.0, 10.0, 300.0, 1.0]).reshape(-1, 1)  # very different rows
    q, scale = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (5, 1)
    assert torch.allclose(q.float().abs().amax(dim=1), torch.full((5,), FP8_MAX))
    rel = ((q.float() * scale - x).abs().amax(dim=1) / x.abs().amax(dim=1))
    assert float(rel.max()) < 0.07  # e4m3 keeps 3 mantissa bits: <= 1/16 relative per element


def test_fp8_linear_tracks_the_linear_layer() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(128, 64)
    fp8 = Fp8Linear(linear)
    x = torch.randn(2, 10, 128)
    ref, out = linear(x), fp8(x)
    rel = float((out - ref).abs().max() / ref.abs().max())
    assert out.shape == ref.shape and 1e-4 < rel < 0.05  # quantised (not a copy), yet close
    assert fp8.weight_fp8.dtype == torch.float8_e4m3fn and fp8.weight_fp8.element_size() == 1


def test_golden_dit_error_of_fp8_is_measured_and_bounded(golden_dir: Path) -> None:
    # The in-repo subset has only the fp32 DiT case; the full bundle adds the BF16 sharded one.
    report = measure_fp8_error(golden_dir, cases=present_cases(golden_dir, DIT_CASES))
    assert report["cases"], "no DiT case in the golden bundle"
    for case, row in report["cases"].items():
        assert row["fp8_layers"] == 16, case  # 8 per block x 2 blocks
        # FP8 costs accuracy compared with bf16, but stays a small fraction of the velocity's range.
        assert row["fp8_vs_ref"]["mean_rel"] > row["bf16_vs_ref"]["mean_rel"], case
        assert row["fp8_vs_ref"]["max_rel"] < 0.1 and row["fp8_vs_ref"]["mean_rel"] < 0.02, case


def test_the_swap_leaves_other_layers_alone() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_sequence_parallel import _model

    model = _model()
    assert quantize_dit_fp8(model) == 8 * len(model.blocks)
    block = model.blocks[0]
    assert isinstance(block.self_attn.q, Fp8Linear) and isinstance(block.ffn[2], Fp8Linear)
    assert isinstance(block.cross_attn.k, nn.Linear) and not isinstance(model.head.head, Fp8Linear)


def test_the_gemm_is_chosen_when_placed_not_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Fp8Linear.scaled_mm`` is decided at construction and on every device move; the forward reads only that
    bool (a device query per call would also break ``torch.compile``'s graph)."""
    from engine.ops import fp8 as fp8_mod

    monkeypatch.setattr(fp8_mod, "fp8_supported", lambda _device: True)  # as if built on an H100
    assert Fp8Linear(nn.Linear(64, 32)).scaled_mm
    assert not Fp8Linear(nn.Linear(64, 40)).scaled_mm  # _scaled_mm needs dimensions divisible by 16
    layer = Fp8Linear(nn.Linear(64, 32))
    monkeypatch.setattr(fp8_mod, "fp8_supported", lambda _device: False)  # moved to a device without them
    layer.to("cpu")
    assert not layer.scaled_mm

    def no_query(_device: torch.device) -> bool:
        raise AssertionError("forward queried the device")

    monkeypatch.setattr(fp8_mod, "fp8_supported", no_query)
    assert layer(torch.randn(3, 64)).shape == (3, 32)
