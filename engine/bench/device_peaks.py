"""Dense (no sparsity) tensor-core peak FLOP/s of known GPUs, from the vendors' datasheets.

Used for model FLOP utilisation: achieved DiT FLOP/s divided by the peak of the dtype the DiT runs in. Unknown
devices, CPUs and float32 (TF32 or not depends on global flags) get no figure, with the reason said.
SPEC-flashtalk.md §10 uses a conservative 790 TF/s for the H100; the datasheet figure (989) is used here, so a
utilisation from this table is the stricter one.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DevicePeak", "peak_flops"]

# (substrings that must all be in the upper-cased device name, label, dense bf16/fp16 TFLOP/s); first match wins.
_TABLE: tuple[tuple[tuple[str, ...], str, float], ...] = (
    (("H200",), "H200 (SXM/NVL)", 989.4),
    (("GH200",), "GH200", 989.4),
    (("H100", "PCIE"), "H100 PCIe", 756.0),
    (("H100", "NVL"), "H100 NVL", 835.0),
    (("H100",), "H100 SXM", 989.4),
    (("H800", "PCIE"), "H800 PCIe", 756.0),
    (("H800",), "H800 SXM", 989.4),
    (("A100",), "A100", 312.0),
    (("A800",), "A800", 312.0),
    (("L40S",), "L40S", 362.05),
)

_HALF = ("bf16", "fp16")


@dataclass(frozen=True)
class DevicePeak:
    """The peak for a device and dtype, or ``tflops=None`` with ``reason`` saying why there is none."""

    tflops: float | None
    label: str | None
    reason: str | None = None


def peak_flops(device_name: str, dtype: str, device_type: str = "cuda") -> DevicePeak:
    """Dense tensor-core peak of ``device_name`` (``torch.cuda.get_device_properties().name``) in ``dtype``."""
    if device_type != "cuda":
        return DevicePeak(None, None, f"no peak figure for {device_type} devices (utilisation is for GPUs)")
    if dtype not in _HALF:
        return DevicePeak(None, None, f"peak table covers bf16/fp16 only, the DiT runs in {dtype}")
    upper = device_name.upper()
    for needles, label, tflops in _TABLE:
        if all(n in upper for n in needles):
            return DevicePeak(tflops, label)
    known = ", ".join(label for _, label, _ in _TABLE)
    return DevicePeak(None, None, f"device {device_name!r} is not in the peak table ({known}): add it to "
                      f"engine/bench/device_peaks.py")
