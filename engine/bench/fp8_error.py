"""The FP8 path's error against bf16 (and both against the float32 reference) on the golden bundle's DiT cases.

The golden bundle (``../shared/golden``) holds the official code's float32 DiT forward on tiny random weights in
the released file layout. The same weights run here in bf16, then with the block GEMMs in e4m3
(:mod:`engine.ops.fp8`); the velocity errors are reported as max and mean relative error (``|a - b| / max|ref|``).
"""
from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from engine.loading.dit import load_dit
from engine.ops.fp8 import fp8_supported, quantize_dit_fp8

__all__ = ["measure_fp8_error"]

DIT_CASES = ("dit_forward__a", "dit_forward__b_bf16weights")


def _rel(a: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    diff = (a.float() - ref.float()).abs()
    scale = float(ref.float().abs().max())
    return {"max_rel": float(diff.max()) / scale, "mean_rel": float(diff.mean()) / scale}


def _forward(model: torch.nn.Module, inputs: dict[str, torch.Tensor], device: torch.device,
             dtype: torch.dtype) -> torch.Tensor:
    def arg(name: str) -> torch.Tensor:
        return inputs[name].to(device=device, dtype=torch.float32)

    with torch.inference_mode():
        return model(arg("x").unsqueeze(0), arg("t").reshape(1), arg("context").unsqueeze(0).to(dtype),
                     arg("clip_fea").to(dtype), arg("y").to(dtype), arg("audio"),
                     seq_len=int(inputs["seq_len"].reshape(-1)[0]))[0].float().cpu()


def measure_fp8_error(golden_dir: Path, device: str = "cpu", cases: tuple[str, ...] = DIT_CASES) -> dict[str, Any]:
    """Per case: bf16 vs reference, fp8 vs reference, fp8 vs bf16; plus device, date and which GEMM ran."""
    dev = torch.device(device)
    rows: dict[str, Any] = {}
    for case in cases:
        folder = golden_dir / "cases" / case
        inputs = load_file(str(folder / "inputs.safetensors"))
        reference = load_file(str(folder / "expected.safetensors"))["out"]
        model_dir = golden_dir / json.loads((folder / "meta.json").read_text())["models"]["dit"]
        bf16 = load_dit(model_dir, dtype=torch.bfloat16, device=dev)
        out_bf16 = _forward(bf16, inputs, dev, torch.bfloat16)
        layers = quantize_dit_fp8(bf16)
        out_fp8 = _forward(bf16, inputs, dev, torch.bfloat16)
        rows[case] = {"bf16_vs_ref": _rel(out_bf16, reference), "fp8_vs_ref": _rel(out_fp8, reference),
                      "fp8_vs_bf16": _rel(out_fp8, out_bf16), "fp8_layers": layers}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    return {
        "benchmark": "fp8_error", "device": name, "date": datetime.date.today().isoformat(),
        "gemm": "torch._scaled_mm e4m3" if fp8_supported(dev) else "e4m3 operands multiplied in fp32 (emulation)",
        "torch": torch.__version__, "cases": rows,
    }
