"""``soulx-live bench`` and ``engine.bench``: the tiny CPU run through the CLI, the analytic DiT FLOP count, the
device peak table, and the ``--compare-reference`` adapter against a fake release checkout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bench_fake_release import write_fake_release

from engine.bench.config import BenchConfig, BenchConfigError
from engine.bench.device_peaks import peak_flops
from engine.bench.flops import dit_flops, latent_grid
from engine.models.transformer import DiTConfig

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["audio_encode", "dit_step_0", "dit_step_1", "dit_step_2", "dit_step_3",
          "vae_decode", "colour_correction", "motion_encode", "device_to_host"]
TF = 1e12


# ----------------------------------------------------------------------------------------------- the CLI, tiny

def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    from soulx_live import cli

    if "bench" not in cli.EXTRA_COMMANDS:  # until the lead registers the command
        monkeypatch.setattr(cli, "EXTRA_COMMANDS", (*cli.EXTRA_COMMANDS, "bench"))
    return cli.main(argv)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    pytest.importorskip("pyloudnorm")
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    monkeypatch = pytest.MonkeyPatch()
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    try:
        with redirect_stdout(buffer):
            rc = _cli(["bench", "--tiny", "--chunks", "2", "--out", str(out)], monkeypatch)
    finally:
        monkeypatch.undo()
    assert rc == 0
    return json.loads(out.read_text()), buffer.getvalue()


def test_cli_writes_json_with_every_promised_key(tiny_run):
    report, _ = tiny_run
    for key in ("date", "device", "device_name", "torch", "python", "git_commit", "git_dirty", "config",
                "attention_backend", "per_chunk_ms", "stages_ms", "chunk_ms", "fps", "first_chunk_ms",
                "time_to_first_frame_ms", "peak_memory_gib", "dit_tflop_per_chunk", "dit_tflops_per_s",
                "dit_flop_utilisation", "dit_flop_utilisation_reason", "world_size"):
        assert key in report, key
    assert report["config"] | {"tiny": True, "chunks": 2, "frames": 9, "steps": 4, "world_size": 1,
                               "compile": False, "attention_backend": "auto"} == report["config"]
    assert [list(c) for c in report["per_chunk_ms"]] == [STAGES, STAGES]


def test_cli_figures_are_positive_and_consistent(tiny_run):
    report, _ = tiny_run
    assert all(v > 0 for v in report["stages_ms"].values() if v is not None)
    for key in ("chunk_ms", "fps", "first_chunk_ms", "dit_ms", "dit_tflops_per_s", "dit_tflop_per_chunk"):
        assert report[key] > 0, key
    assert report["time_to_first_frame_ms"] > report["first_chunk_ms"]  # session preparation comes first
    assert report["fps"] == pytest.approx(4 / (report["chunk_ms"] / 1e3), rel=1e-2)
    counted = dit_flops(DiTConfig(dim=64, ffn_dim=96, num_heads=4, num_layers=2), latent_grid(9, 32, 32))
    flops = counted.running(cross_kv_cache=True) * 4  # the cache is on: its K/V are not per-chunk work
    assert report["dit_flop_per_chunk"] == flops == (counted.total - counted.context_kv) * 4
    assert report["dit_tflop_per_chunk_with_context_kv"] == pytest.approx(counted.total * 4 / TF, rel=1e-5)
    assert report["dit_tflop_per_chunk"] == pytest.approx(flops / TF, rel=1e-5)
    assert report["dit_tflops_per_s"] == pytest.approx(flops / TF / (report["dit_ms"] / 1e3), rel=1e-2)
    # CPU: no peak, so no utilisation, and the report says why.
    assert report["dit_flop_utilisation"] is None and "cpu" in report["dit_flop_utilisation_reason"]
    assert report["dit_flop_utilisation_of_measured_ceiling"] is None
    for dtype in ("bf16", "fp8"):  # the ceiling is skipped on the CPU, with the reason
        assert report["matmul_ceiling"][dtype]["tflops"] is None
        assert report["matmul_ceiling"][dtype]["reason"] == "measured on CUDA devices only, not cpu"


def test_cli_prints_the_table(tiny_run):
    report, printed = tiny_run
    for text in ("dit_step_3", "vae_decode", "motion_encode", "device_to_host", "chunk (wall)", "fps",
                 "time to first frame", "DiT FLOP utilisation", "peak GPU memory", "TINY",
                 "run once per session", "bf16 peak / measured", "measured on CUDA devices only"):
        assert text in printed, text
    assert f"{report['chunk_ms']:,.1f}" in printed


def test_cli_refuses_gpu_run_without_cuda(monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert _cli(["bench", "--chunks", "1"], monkeypatch) == 2
    assert "--tiny" in capsys.readouterr().err


def test_cli_world_size_2_launches_torchrun_with_sequence_parallelism(monkeypatch, capsys, tmp_path):
    pytest.importorskip("pyloudnorm")
    out = tmp_path / "ws2.json"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rc = _cli(["bench", "--tiny", "--chunks", "1", "--world-size", "2", "--out", str(out)], monkeypatch)
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["world_size"] == 2 and report["config"]["world_size"] == 2
    assert list(report["per_chunk_ms"][0]) == STAGES and report["chunk_ms"] > 0
    assert "x2" in capsys.readouterr().out  # the table names the process count


def test_config_errors_name_the_flag():
    with pytest.raises(BenchConfigError, match="--frames"):
        BenchConfig.tiny_defaults(frames=10).validate()
    with pytest.raises(BenchConfigError, match="--height"):
        BenchConfig.tiny_defaults(height=40).validate()
    with pytest.raises(BenchConfigError, match="--world-size"):
        BenchConfig.tiny_defaults(world_size=0).validate()
    with pytest.raises(BenchConfigError, match="--ulysses.*does not divide the model's 4 heads"):
        BenchConfig.tiny_defaults(world_size=3, ulysses_degree=3).validate()
    BenchConfig.tiny_defaults(world_size=3).validate()  # 3 shares no factor with 4 heads: pure ring, allowed
    with pytest.raises(BenchConfigError, match="--compile-mode"):
        BenchConfig.tiny_defaults(compile_mode="fast").validate()


# ----------------------------------------------------------------------------------------------- FLOP count

def test_flops_of_released_config_match_spec_section_10():
    flops = dit_flops(DiTConfig(), latent_grid(33, 768, 448))
    assert flops.self_attn_proj_ffn / TF == pytest.approx(238.5, abs=0.05)
    assert flops.cross_proj / TF == pytest.approx(104.9, abs=0.05)
    assert flops.self_attn_core / TF == pytest.approx(119.9, abs=0.05)
    assert flops.cross_attn_core / TF == pytest.approx(7.9, abs=0.05)
    assert flops.blocks / TF == pytest.approx(471.1, abs=0.05)
    assert 4 * flops.blocks / TF == pytest.approx(1884.5, abs=0.1)  # SPEC's count: the context K/V included
    assert 0.03 < flops.embed_head / TF < 0.1  # "patch embedding and head add ~0.03 TF/step" + text/image emb
    assert 4 * flops.total / TF == pytest.approx(1884.5 + 4 * flops.embed_head / TF, abs=0.1)
    assert dit_flops(DiTConfig(), latent_grid(33, 720, 416)).blocks / TF == pytest.approx(397.1, abs=0.05)
    assert dit_flops(DiTConfig(), latent_grid(33, 512, 512)).blocks / TF == pytest.approx(338.0, abs=0.05)
    # What the cross K/V cache computes once per session (SPEC §10.2: "k/v for 769 context tokens: 4·769·d² =
    # 0.081 TF, identical every step -- cacheable"), by hand: per block the text k, v of 512 padded tokens and the
    # image k, v of 257 CLIP tokens (d -> d each); once, the text embedding (4096 -> d -> d over 512 tokens) and
    # the image projection (1280 -> 1280 -> d over 257 tokens).
    d = 5120
    per_block = 2 * 2 * 512 * d * d + 2 * 2 * 257 * d * d
    assert per_block / TF == pytest.approx(0.081, abs=0.0005)
    embeddings = 2 * 512 * 4096 * d + 2 * 512 * d * d + 2 * 257 * 1280 * 1280 + 2 * 257 * 1280 * d
    assert flops.context_kv == 40 * per_block + embeddings
    assert flops.context_kv / TF == pytest.approx(3.278, abs=0.001)  # "about 3.2 TFLOP, 0.7 % of a step"
    assert flops.context_kv / flops.total == pytest.approx(0.007, abs=0.0005)
    # The reported running figure is the total less that part; without the cache it is the total.
    assert flops.running(cross_kv_cache=True) == flops.total - 40 * per_block - embeddings
    assert 4 * flops.running() / TF == pytest.approx(1871.7, abs=0.05)
    assert flops.running(cross_kv_cache=False) == flops.total
    # The e4m3 GEMMs of --fp8 (self-attention q k v o, text/image q o, FFN of every block), by hand.
    L = 12_096
    assert flops.fp8_gemms == 40 * (4 * 2 * L * d * d + 2 * 2 * L * d * 13_824 + 2 * 2 * L * d * d)


def test_flops_of_a_tiny_config_by_hand():
    cfg = DiTConfig(dim=8, ffn_dim=12, num_heads=2, num_layers=3, text_len=4, text_dim=6, freq_dim=4,
                    intermediate_dim=5, output_dim=2, context_tokens=3, audio_window=1, vae_scale=2)
    # latent (3, 4, 2) -> 3 frames of 2x1 patches: L = 6 tokens, 2 per frame.
    L, d, f = 6, 8, 12
    per_block = (
        4 * 2 * L * d * d + 2 * 2 * L * d * f  # self-attn q k v o, FFN
        + 2 * 2 * L * d * d + 2 * 2 * 4 * d * d + 2 * 2 * 257 * d * d  # text/image q o, text k v, image k v
        + 2 * 2 * L * d * d + 2 * (3 * 3) * 2 * (2 * d)  # audio q proj; kv of 3 frames x 3 tokens (2 -> 16)
        + 4 * L * L * d  # self-attention core
        + 4 * L * (4 + 257) * d + 4 * L * 3 * d  # text+image and audio attention cores
    )
    outside = (
        2 * L * (36 * 4) * d  # patch embedding (36 channels x 1x2x2 patch)
        + 2 * 4 * 6 * d + 2 * 4 * d * d  # text embedding
        + 2 * 4 * d + 2 * d * d + 2 * d * 6 * d  # time embedding, projection
        + 2 * 257 * 1280 * 1280 + 2 * 257 * 1280 * d  # image projection
        + 2 * 1 * (1 * 9216) * 5 + 2 * 2 * (2 * 9216) * 5  # audio proj1 (frame 0), proj1_vf (2 later frames)
        + 2 * 3 * 5 * 5 + 2 * 3 * 5 * (3 * 2)  # proj2, proj3
        + 2 * L * d * (4 * 16)  # head
    )
    got = dit_flops(cfg, (3, 4, 2))
    assert got.blocks == 3 * per_block
    assert got.embed_head == outside
    assert got.total == 3 * per_block + outside


def test_flops_equal_what_torch_counts_in_the_model():
    from torch.utils.flop_counter import FlopCounterMode

    from engine.models.transformer import WanAudioTransformer
    from engine.ops.attention import get_attention_backend, set_attention_backend

    cfg = DiTConfig(dim=32, ffn_dim=48, num_heads=2, num_layers=2, text_dim=64, text_len=16, intermediate_dim=16,
                    output_dim=24, context_tokens=4, freq_dim=16)
    torch.manual_seed(0)
    model = WanAudioTransformer(cfg).eval()
    frames, h, w = 3, 4, 6
    args = (torch.randn(1, 16, frames, h, w), torch.tensor([500.0]), torch.randn(1, 10, 64),
            torch.randn(1, 257, 1280), torch.randn(1, 20, frames, h, w), torch.randn(1, 9, 5, 12, 768))
    previous = get_attention_backend()
    set_attention_backend("math")  # explicit matmuls, so the counter sees the attention cores
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as uncached:
            model(*args)
        with torch.no_grad(), FlopCounterMode(display=False) as session:
            cross = model.context_kv(args[2], args[3])
        with torch.no_grad(), FlopCounterMode(display=False) as cached:
            model(*args, cross=cross)  # the session's cached text/image K/V: their projections do not run
    finally:
        set_attention_backend(previous)
    counted = dit_flops(cfg, (frames, h, w))
    assert counted.total == uncached.get_total_flops()  # --no-cross-cache: the release's per-step work
    assert counted.context_kv == session.get_total_flops() > 0
    assert counted.running(cross_kv_cache=True) == cached.get_total_flops() == counted.total - counted.context_kv


def test_latent_grid_rejects_shapes_the_vae_cannot_take():
    assert latent_grid(33, 768, 448) == (9, 96, 56)
    with pytest.raises(ValueError, match="4k\\+1"):
        latent_grid(32, 768, 448)


# ----------------------------------------------------------------------------------------------- peaks, utilisation

@pytest.mark.parametrize(("name", "bf16", "fp8"), [
    ("NVIDIA H100 80GB HBM3", 989.4, 1979.0), ("NVIDIA H100 PCIe", 756.5, 1513.0), ("NVIDIA H100 NVL", 835.5, 1670.5),
    ("NVIDIA H200", 989.4, 1979.0), ("NVIDIA H200 NVL", 835.5, 1670.5),
    ("NVIDIA A100-SXM4-80GB", 312.0, None), ("NVIDIA A100-SXM4-40GB", 312.0, None),
    ("NVIDIA A100 80GB PCIe", 312.0, None), ("NVIDIA A100-PCIE-40GB", 312.0, None),
    ("NVIDIA L40S", 362.05, 733.0), ("NVIDIA GeForce RTX 4090", 165.2, 330.3), ("NVIDIA GeForce RTX 5090", 209.5, 419.0),
])
def test_peak_table_knows_the_usual_gpus_by_exact_name(name, bf16, fp8):
    assert peak_flops(name, "bf16").tflops == bf16
    assert peak_flops(name, "fp16").tflops == bf16
    got = peak_flops(name, "fp8")
    assert got.tflops == fp8 and got.dtype == "fp8"
    if fp8 is None:
        assert got.reason.endswith("has no FP8 tensor cores")


def test_h200_nvl_is_not_taken_for_an_h200_sxm():
    assert peak_flops("NVIDIA H200 NVL", "bf16").label == "H200 NVL"
    assert peak_flops("NVIDIA H200", "bf16").label == "H200 SXM"
    assert peak_flops("NVIDIA H100 NVL", "fp8").label == "H100 NVL"


def test_peak_is_omitted_with_a_reason():
    for name in ("NVIDIA GeForce RTX 3090", "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "NVIDIA H200 SXM 141GB"):
        unknown = peak_flops(name, "bf16")  # a MIG slice or an unseen variant is not guessed from its family
        assert unknown.tflops is None and "device_peaks.py" in unknown.reason and repr(name) in unknown.reason
    assert peak_flops("NVIDIA H100 80GB HBM3", "fp32").tflops is None
    assert peak_flops("x86_64", "bf16", "cpu").reason.startswith("no peak figure for cpu")


def _ceiling(bf16: float | None, fp8: float | None) -> dict:
    return {"bf16": {"tflops": bf16, "size": 8192, "peak_tflops": 989.4, "share_of_peak": None},
            "fp8": {"tflops": fp8, "size": 8192, "peak_tflops": 1979.0, "share_of_peak": None}}


def test_utilisation_is_achieved_over_peak_times_gpus():
    from engine.bench.report import utilisation

    cfg = BenchConfig(world_size=2, device="cuda")  # not validated: no CUDA needed to compute
    dit_ms = 4000.0
    got = utilisation(cfg, dit_ms, torch.device("cuda"), "NVIDIA H100 80GB HBM3", _ceiling(700.0, None))
    counted = dit_flops(DiTConfig(), (9, 96, 56))
    flops = (counted.total - counted.context_kv) * 4  # the cached context K/V did not run per step
    assert got["dit_flop_per_chunk"] == flops
    assert got["dit_tflop_per_chunk"] == pytest.approx(flops / TF, rel=1e-4)
    assert got["dit_tflop_per_chunk_with_context_kv"] == pytest.approx(counted.total * 4 / TF, rel=1e-4)
    assert got["dit_flop_utilisation"] == pytest.approx(flops / (dit_ms / 1e3) / (2 * 989.4 * TF), rel=1e-3)
    assert got["dit_flop_utilisation_reason"] is None and got["peak_dtype"] == "bf16"
    assert got["dit_flop_utilisation_of_measured_ceiling"] == pytest.approx(
        flops / (dit_ms / 1e3) / (2 * 700.0 * TF), rel=1e-3)
    assert got["dit_flop_utilisation_bf16"] is None and got["dit_flop_utilisation_fp8_mixed"] is None
    uncached = utilisation(BenchConfig(device="cuda", cross_kv_cache=False), dit_ms, torch.device("cuda"), "NVIDIA H200")
    assert uncached["dit_flop_per_chunk"] == counted.total * 4  # --no-cross-cache recomputes them every step


def test_fp8_utilisation_is_over_the_fp8_peak_with_the_bf16_figure_beside_it():
    from engine.bench.report import utilisation

    cfg = BenchConfig(device="cuda", fp8=True)
    dit_ms = 2000.0
    got = utilisation(cfg, dit_ms, torch.device("cuda"), "NVIDIA H200 NVL", _ceiling(600.0, 1200.0))
    counted = dit_flops(DiTConfig(), (9, 96, 56))
    per_forward = counted.total - counted.context_kv
    rate = per_forward * 4 / (dit_ms / 1e3)
    assert got["peak_dtype"] == "fp8" and got["peak_tflops_per_gpu"] == 1670.5
    assert got["dit_flop_utilisation"] == pytest.approx(rate / (1670.5 * TF), rel=1e-3)
    assert got["peak_tflops_per_gpu_bf16"] == 835.5
    assert got["dit_flop_utilisation_bf16"] == pytest.approx(rate / (835.5 * TF), rel=1e-3)
    assert got["dit_flop_utilisation_of_measured_ceiling"] == pytest.approx(rate / (1200.0 * TF), rel=1e-3)
    # Mixed: the time each part would take at its own peak, over the measured time.
    fp8 = counted.fp8_gemms
    ideal_s = 4 * (fp8 / (1670.5 * TF) + (per_forward - fp8) / (835.5 * TF))
    assert got["dit_flop_utilisation_fp8_mixed"] == pytest.approx(ideal_s / (dit_ms / 1e3), rel=1e-3)
    assert got["dit_fp8_gemm_share"] == pytest.approx(fp8 / per_forward, abs=1e-4)
    assert got["dit_flop_utilisation"] < got["dit_flop_utilisation_fp8_mixed"] < got["dit_flop_utilisation_bf16"]
    on_a100 = utilisation(cfg, dit_ms, torch.device("cuda"), "NVIDIA A100-SXM4-80GB")
    assert on_a100["dit_flop_utilisation"] is None and "no FP8 tensor cores" in on_a100["dit_flop_utilisation_reason"]
    assert on_a100["dit_flop_utilisation_bf16"] == pytest.approx(rate / (312.0 * TF), rel=1e-3)


def test_the_table_shows_fp8_and_bf16_utilisation_and_the_measured_ceilings(tiny_run):
    from engine.bench.report import format_table, utilisation

    report, _ = tiny_run
    ceiling = {"bf16": {"dtype": "bf16", "size": 8192, "tflops": 801.3, "peak_tflops": 989.4, "share_of_peak": 0.8099},
               "fp8": {"dtype": "fp8", "size": 8192, "tflops": None, "reason": "fp8 matmul failed: x",
                       "peak_tflops": 1979.0, "share_of_peak": None}}
    fake = report | utilisation(BenchConfig(device="cuda", fp8=True), 2000.0, torch.device("cuda"), "NVIDIA H200",
                                ceiling)
    text = format_table(fake)
    lines = {line.strip().split("  ")[0]: line for line in text.splitlines()}
    assert lines["DiT FLOP utilisation"].endswith(f"{fake['dit_flop_utilisation'] * 100:.1f} % of H200 SXM fp8 1979.0 TF/s")
    assert lines["of the bf16 peak"].endswith(f"{fake['dit_flop_utilisation_bf16'] * 100:.1f} % of 989.4 TF/s")
    assert "FP8 GEMMs at the fp8 peak" in lines["of the fp8/bf16 mix"]
    assert "1,871.7  (what runs; 1,884.8 with the text/CLIP K/V, run once per session: 3.28 TFLOP)" in text
    assert lines["bf16 peak / measured"].endswith(" 989.4 TF/s / 801.3 TF/s (81.0 % of peak), 8192³ matmul")
    assert lines["fp8 peak / measured"].endswith(" 1979.0 TF/s / - (fp8 matmul failed: x)")


# ----------------------------------------------------------------------------------------------- matmul ceiling

def test_matmul_ceiling_arithmetic():
    from engine.bench.ceiling import matmul_flop, tflops_of

    assert matmul_flop(8192) == 2 * 8192**3 == 1_099_511_627_776
    assert tflops_of(8192, 1.0) == pytest.approx(1099.511627776)  # 1.1 TFLOP in 1 ms
    assert tflops_of(1024, 0.002) == pytest.approx(2 * 1024**3 / 2e-6 / TF)


def test_matmul_ceiling_is_skipped_on_the_cpu_with_the_reason():
    from engine.bench.ceiling import device_ceilings, measure_matmul_ceiling

    got = measure_matmul_ceiling("cpu", "bf16")
    assert got.tflops is None and got.ms_per_matmul is None and got.reason == "measured on CUDA devices only, not cpu"
    both = device_ceilings(torch.device("cpu"))
    assert set(both) == {"bf16", "fp8"} and all(c["tflops"] is None and c["reason"] for c in both.values())
    with pytest.raises(ValueError, match="bf16, fp16 or fp8"):
        measure_matmul_ceiling("cpu", "fp32")


def test_fp8_ceiling_is_skipped_without_fp8_tensor_cores(monkeypatch):
    from engine.bench.ceiling import measure_matmul_ceiling
    from engine.ops import fp8

    monkeypatch.setattr(fp8, "cuda_capability", lambda device: (8, 0))  # an A100; no CUDA needed to decide
    got = measure_matmul_ceiling(torch.device("cuda"), "fp8")
    assert got.tflops is None and got.reason == "no FP8 tensor cores (compute capability 8.0 < 8.9)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_matmul_ceiling_on_cuda_is_a_positive_rate():
    from engine.bench.ceiling import measure_matmul_ceiling, tflops_of

    got = measure_matmul_ceiling("cuda", "bf16", size=2048, iterations=5)
    assert got.tflops and got.tflops == pytest.approx(tflops_of(2048, got.ms_per_matmul), rel=1e-2)


# ----------------------------------------------------------------------------------------------- compare-reference

def test_compare_reference_names_a_missing_folder(monkeypatch, capsys, tmp_path):
    rc = _cli(["bench", "--tiny", "--compare-reference", str(tmp_path / "nowhere")], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2 and "no such folder" in err and "git clone https://github.com/Soul-AILab/SoulX-FlashTalk" in err


def test_compare_reference_names_the_missing_files(monkeypatch, capsys, tmp_path):
    write_fake_release(tmp_path, skip=("flash_talk/wan/modules/vae.py", "flash_talk/inference.py"))
    rc = _cli(["bench", "--tiny", "--compare-reference", str(tmp_path)], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2
    assert "flash_talk/wan/modules/vae.py" in err and "flash_talk/inference.py" in err
    assert "flash_talk/configs/infer_params.yaml" not in err  # present, so not named


def test_compare_reference_needs_cuda_at_full_size(monkeypatch, capsys, tmp_path):
    write_fake_release(tmp_path)  # on the CPU only --tiny runs the release (release_compat's CUDA shims)
    rc = _cli(["bench", "--device", "cpu", "--compare-reference", str(tmp_path)], monkeypatch)
    assert rc == 2 and "needs CUDA" in capsys.readouterr().err


def test_checkout_inside_the_repository_must_be_git_ignored():
    from engine.bench.reference import ReferenceCheckoutError, _check_not_committable

    with pytest.raises(ReferenceCheckoutError, match="never be committed"):
        _check_not_committable(ROOT / "engine")


def test_missing_python_package_of_the_release_is_named(tmp_path):
    write_fake_release(tmp_path)
    pipeline = tmp_path / "flash_talk/src/pipeline/flash_talk_pipeline.py"
    pipeline.write_text("import not_installed_pkg_xyz\n" + pipeline.read_text())
    proc = subprocess.run([sys.executable, "-m", "engine.bench.reference", str(tmp_path), "--tiny", "--out",
                           str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2
    assert "'not_installed_pkg_xyz'" in proc.stderr and "requirements.txt" in proc.stderr


@pytest.fixture
def fake_release(tmp_path):
    root = write_fake_release(tmp_path / "SoulX-FlashTalk")
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        if name == "flash_talk" or name.startswith("flash_talk."):
            del sys.modules[name]
    if str(root) in sys.path:
        sys.path.remove(str(root))


def test_compare_reference_adapter_only_against_a_fake_release(fake_release, tiny_run):
    """ADAPTER TEST against a fake of the released code (tests/engine/bench_fake_release.py): it checks that
    ``--compare-reference`` drives the release's entry points with our settings and reports a comparison. It does
    not verify the official code's speed or outputs; that needs a local clone of it on a GPU."""
    pytest.importorskip("pyloudnorm")
    from engine.bench.reference import compare, format_comparison, measure_release

    cfg = BenchConfig.tiny_defaults(chunks=2)
    ref = measure_release(fake_release, cfg)  # the fake's loaders raise unless every one was replaced
    assert list(ref["stages_ms"]) == STAGES[:-1]  # the release times no separate host copy
    assert ref["frames_per_chunk"] == 4 and ref["output_frame_shape"] == [32, 32, 3]  # our frames/size applied
    assert ref["chunk_ms"] > 0 and ref["module_flags"]["COMPILE_MODEL"] is False
    assert ref["release_compile"] is False and any(line.startswith("torch.compile:") for line in ref["stand_ins"])

    release = sys.modules["flash_talk.inference"]
    assert release.infer_params["frame_num"] == 9 and release.target_size == (32, 32)
    built = sys.modules["flash_talk.infinite_talk.modules.multitalk_model"].CONSTRUCTED
    assert built == [{"dim": 64, "num_layers": 2, "in_dim": 36}]  # our tiny DiT widths, the release's class
    with pytest.raises(RuntimeError, match="needs weights"):  # loaders restored afterwards
        sys.modules["flash_talk.src.pipeline.flash_talk_pipeline"].WanModel.from_pretrained("x")

    ours, _ = tiny_run
    comparison = compare(ours, ref)
    assert comparison["speedup_chunk"] == pytest.approx(ref["chunk_ms"] / ours["chunk_ms"], rel=1e-2)
    assert comparison["stages"]["device_to_host"]["reference_ms"] is None
    text = format_comparison(comparison)
    assert "chunk (wall)" in text and "1.5x target" in text
