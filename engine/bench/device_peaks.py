"""Dense (no sparsity) tensor-core peak FLOP/s of known GPUs, bf16/fp16 and FP8, from the vendors' spec sheets.

Used for model FLOP utilisation: achieved DiT FLOP/s divided by the peak of the precision the DiT's GEMMs run in
(FP8 with ``--fp8``, else the compute dtype). Devices are matched by the exact name
``torch.cuda.get_device_name()`` reports, because variants of one family differ (an H200 NVL is 835 TFLOP/s,
an H200 SXM 989): an unknown name, a CPU or float32 (TF32 or not depends on global flags) get no figure, with the
reason said. The measured matmul ceiling of the device (:mod:`engine.bench.ceiling`) is reported beside it.

Sources (the datasheets print "with sparsity" figures; the dense peak is half of those):

* NVIDIA H100 Tensor Core GPU datasheet: H100 SXM bf16 1,979 / fp8 3,958; H100 PCIe 1,513 / 3,026;
  H100 NVL 1,671 / 3,341 TFLOP/s with sparsity.
* NVIDIA H200 Tensor Core GPU datasheet: H200 SXM 1,979 / 3,958; H200 NVL 1,671 / 3,341 with sparsity.
* NVIDIA A100 Tensor Core GPU datasheet: bf16 312 dense (624 with sparsity), SXM and PCIe alike; no FP8.
* NVIDIA L40S datasheet: bf16 362.05 / fp8 733 dense (733 / 1,466 with sparsity).
* NVIDIA Ada Lovelace (AD102) architecture whitepaper, GeForce RTX 4090: bf16 with FP32 accumulate 165.2,
  FP8 with FP32 accumulate 330.3 dense.
* NVIDIA RTX Blackwell (GB202) architecture whitepaper, GeForce RTX 5090: bf16 with FP32 accumulate 209.5,
  FP8 with FP32 accumulate 419 dense.

GeForce cards run FP32-accumulate tensor maths at half their FP16-accumulate rate; PyTorch's bf16/fp16 GEMMs
accumulate in FP32, so the FP32-accumulate figures are the ones that apply. SPEC-flashtalk.md §10 uses a
conservative 790 TF/s for the H100; the datasheet figure (989.4) is used here, so a utilisation from this table
is the stricter one.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PEAKS", "PEAK_DTYPES", "DevicePeak", "PeakSpec", "peak_flops"]


@dataclass(frozen=True)
class PeakSpec:
    """One GPU model: the label used in reports, dense bf16/fp16 and FP8 TFLOP/s (``None``: no FP8 tensor cores)."""

    label: str
    bf16: float
    fp8: float | None


_H100_SXM = PeakSpec("H100 SXM", 989.4, 1979.0)
_H100_PCIE = PeakSpec("H100 PCIe", 756.5, 1513.0)
_H100_NVL = PeakSpec("H100 NVL", 835.5, 1670.5)
_H200_SXM = PeakSpec("H200 SXM", 989.4, 1979.0)
_H200_NVL = PeakSpec("H200 NVL", 835.5, 1670.5)
_A100_SXM = PeakSpec("A100 SXM", 312.0, None)
_A100_PCIE = PeakSpec("A100 PCIe", 312.0, None)

#: ``torch.cuda.get_device_name()`` -> peaks. Exact names only: add a device by the name it reports.
PEAKS: dict[str, PeakSpec] = {
    "NVIDIA H100 80GB HBM3": _H100_SXM,
    "NVIDIA H100 PCIe": _H100_PCIE,
    "NVIDIA H100 NVL": _H100_NVL,
    "NVIDIA H200": _H200_SXM,
    "NVIDIA H200 NVL": _H200_NVL,
    "NVIDIA A100-SXM4-80GB": _A100_SXM,
    "NVIDIA A100-SXM4-40GB": _A100_SXM,
    "NVIDIA A100 80GB PCIe": _A100_PCIE,
    "NVIDIA A100-PCIE-40GB": _A100_PCIE,
    "NVIDIA L40S": PeakSpec("L40S", 362.05, 733.0),
    "NVIDIA GeForce RTX 4090": PeakSpec("RTX 4090", 165.2, 330.3),
    "NVIDIA GeForce RTX 5090": PeakSpec("RTX 5090", 209.5, 419.0),
}

#: Precisions the table has a column for (fp16 tensor-core peaks equal the bf16 ones on every GPU listed).
PEAK_DTYPES = ("bf16", "fp16", "fp8")


@dataclass(frozen=True)
class DevicePeak:
    """The peak for a device and precision, or ``tflops=None`` with ``reason`` saying why there is none."""

    tflops: float | None
    label: str | None
    reason: str | None = None
    dtype: str | None = None


def peak_flops(device_name: str, dtype: str, device_type: str = "cuda") -> DevicePeak:
    """Dense tensor-core peak of the GPU named ``device_name`` (``torch.cuda.get_device_name()``) in ``dtype``
    (``bf16``, ``fp16`` or ``fp8``)."""
    if device_type != "cuda":
        return DevicePeak(None, None, f"no peak figure for {device_type} devices (utilisation is for GPUs)", dtype)
    if dtype not in PEAK_DTYPES:
        return DevicePeak(None, None, f"peak table covers bf16/fp16/fp8 only, the DiT runs in {dtype}", dtype)
    spec = PEAKS.get(" ".join(device_name.split()))
    if spec is None:
        known = ", ".join(repr(name) for name in PEAKS)
        return DevicePeak(None, None, f"device {device_name!r} is not in the peak table (exact names: {known}): add "
                          f"the name it reports, with its datasheet's dense peaks, to engine/bench/device_peaks.py",
                          dtype)
    if dtype == "fp8":
        if spec.fp8 is None:
            return DevicePeak(None, spec.label, f"{spec.label} has no FP8 tensor cores", dtype)
        return DevicePeak(spec.fp8, spec.label, None, dtype)
    return DevicePeak(spec.bf16, spec.label, None, dtype)
