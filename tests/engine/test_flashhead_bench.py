"""``soulx-live bench --engine flashhead``: per-stage timings of FlashHead's chunk loop, its analytic DiT FLOP count
checked against what torch counts in the model, and the parameter count of the released Pro model."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from engine.bench.flops import dit_flops, latent_grid
from engine.bench.widths import dit_config
from engine.loading.state_dict import build_on_meta
from engine.memory import MemoryMode, dit_weight_bytes
from engine.models.transformer import DiTConfig, WanAudioTransformer

STAGES = ["audio_encode", "dit_step_0", "dit_step_1", "dit_step_2", "dit_step_3",
          "vae_decode", "colour_correction", "motion_encode", "device_to_host"]


def test_flops_equal_what_torch_counts_in_the_flashhead_model() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from engine.ops.attention import get_attention_backend, set_attention_backend

    cfg = DiTConfig(variant="flashhead", in_dim=32, dim=32, ffn_dim=48, num_heads=2, num_layers=2, text_dim=64,
                    intermediate_dim=16, output_dim=32, context_tokens=4, freq_dim=16)
    torch.manual_seed(0)
    model = WanAudioTransformer(cfg).eval()
    frames, h, w = 3, 4, 6
    args = (torch.randn(1, 16, frames, h, w), torch.tensor([500.0]), None, None, torch.randn(1, 16, frames, h, w),
            torch.randn(1, 9, 5, 12, 768))
    previous = get_attention_backend()
    set_attention_backend("math")  # explicit matmuls, so the counter sees the attention cores
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*args)
    finally:
        set_attention_backend(previous)
    counted = dit_flops(cfg, (frames, h, w))
    assert counted.total == counter.get_total_flops() and counted.context_kv == 0
    assert counted.running(True) == counted.running(False) == counted.total  # nothing cached per session


def test_released_pro_model() -> None:
    """The released Model_Pro widths: parameter count (exact formula = built model) and the per-chunk FLOP."""
    cfg = dit_config(False, "flashhead")
    assert (cfg.variant, cfg.dim, cfg.num_layers, cfg.num_heads, cfg.in_dim) == ("flashhead", 1536, 30, 12, 32)
    params = sum(p.numel() for p in build_on_meta(lambda: WanAudioTransformer(cfg)).parameters())
    assert dit_weight_bytes(cfg, MemoryMode()) == 2 * params == 2 * 1_507_694_912
    per_step = dit_flops(cfg, latent_grid(33, 512, 512))  # 9 x 32 x 32 tokens
    assert per_step.total == 38_845_497_999_360  # 38.8 TFLOP per step, 155.4 per 4-step chunk (README estimate)
    assert per_step.self_attn_core / per_step.total == pytest.approx(0.403, abs=1e-3)


@pytest.mark.timeout(300)
def test_cli_bench_engine_flashhead_tiny(tmp_path: Path) -> None:
    from soulx_live import cli

    out = tmp_path / "fh.json"
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        rc = cli.main(["bench", "--engine", "flashhead", "--tiny", "--chunks", "2", "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "engine_flashhead" and report["config"]["model"] == "flashhead"
    assert list(report["stages_ms"]) == STAGES and all(v > 0 for v in report["stages_ms"].values())
    assert report["output_frame_shape"] == [32, 32, 3] and report["frames_per_chunk"] == 4
    tiny = dit_config(True, "flashhead")
    assert report["dit_params"] == sum(p.numel() for p in build_on_meta(lambda: WanAudioTransformer(tiny)).parameters())
    assert report["dit_tflop_per_chunk"] == pytest.approx(4 * dit_flops(tiny, (3, 4, 4)).total / 1e12, rel=1e-5)
    assert "flashhead, 9 frames 32x32" in buffer.getvalue()


def test_released_flashhead_defaults_and_degrees() -> None:
    import argparse

    from engine.bench.cli import add_arguments, config_from_args
    from engine.bench.config import BenchConfig, BenchConfigError

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--engine", "flashhead", "--tiny"]))
    assert cfg.model == "flashhead"
    full = parser.parse_args(["--engine", "flashhead", "--device", "cpu"])
    assert (config_from_args(full).height, config_from_args(full).width) == (512, 512)
    with pytest.raises(BenchConfigError, match="--engine"):
        BenchConfig(model="flashheadx", device="cpu").validate()


@pytest.mark.parametrize(("gpu", "ceiling_fps"), [
    ("NVIDIA GeForce RTX 4090", 30), ("NVIDIA GeForce RTX 5090", 38), ("NVIDIA L40S", 65),
    ("NVIDIA A100-SXM4-80GB", 56), ("NVIDIA H100 80GB HBM3", 178),
])
def test_readme_speed_estimates(gpu: str, ceiling_fps: int) -> None:
    """The README's DiT-only fps ceilings: 28 frames per 4-step chunk at the dense bf16 peak (an estimate)."""
    from engine.bench.device_peaks import peak_flops

    per_chunk = 4 * dit_flops(dit_config(False, "flashhead"), latent_grid(33, 512, 512)).total
    fps = 28 / (per_chunk / (peak_flops(gpu, "bf16").tflops * 1e12))
    assert round(fps) == ceiling_fps


@pytest.mark.timeout(420)
def test_the_prepared_flashhead_gpu_script_runs_every_step(tmp_path: Path) -> None:
    """benchmarks/gpu_flashhead.sh is what a GPU loan runs for FlashHead's figures; tried here with ``--tiny``
    benches on the CPU so that a broken step never wastes a loan: every step passes and both reports are written."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OUT=str(tmp_path), BENCH_ARGS="--tiny", PYTHON=sys.executable, OMP_NUM_THREADS="1",
               SOULX_GOLDEN_FLASHHEAD_DIR="none")  # the golden cases run in their own test; here only the script
    proc = subprocess.run(["bash", str(root / "benchmarks" / "gpu_flashhead.sh")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=400)
    log = (tmp_path / "gpu_flashhead.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "gpu_flashhead: all steps passed" in log and log.count(": rc=0 in ") == 3
    plain, levers = (json.loads((tmp_path / name).read_text())
                     for name in ("engine_flashhead_gpu.json", "engine_flashhead_gpu_levers.json"))
    assert plain["config"]["model"] == levers["config"]["model"] == "flashhead"
    assert plain["config"]["compile"] is False and levers["config"]["compile"] is True
    assert len(levers["per_chunk_ms"]) == 5 and levers["date"] and levers["device"]
