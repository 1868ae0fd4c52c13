"""benchmarks/engine_14b.py runs end to end (``--tiny`` on the CPU) and reports every field it promises."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "engine_14b.py"
STAGES = ["audio_encode", "dit_step_0", "dit_step_1", "dit_step_2", "dit_step_3",
          "vae_decode", "colour_correction", "motion_encode", "device_to_host"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    pytest.importorskip("pyloudnorm")
    out = tmp_path_factory.mktemp("bench") / "engine_14b_tiny.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--chunks", "2", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads(out.read_text())
    assert json.loads(proc.stdout) == written  # printed and written
    return written


def test_report_has_environment_and_config(report):
    for key in ("peak_memory_gib", "date", "torch", "cuda", "device", "device_name", "python", "attention_backend"):
        assert key in report
    cfg = report["config"]
    assert cfg | {"tiny": True, "chunks": 2, "steps": 4, "frames": 9, "device": "cpu"} == cfg


def test_report_has_per_stage_timings_for_every_chunk(report):
    assert len(report["per_chunk_ms"]) == 2
    for chunk in report["per_chunk_ms"]:
        assert list(chunk) == STAGES and all(v >= 0 for v in chunk.values())
    assert list(report["stages_ms"]) == STAGES
    # Steady-state figures come from the chunks after the first.
    assert report["chunk_ms"] == pytest.approx(report["wall_ms"][1], rel=1e-3)
    assert report["stages_sum_ms"] == pytest.approx(sum(report["per_chunk_ms"][1].values()), rel=1e-3)
    assert report["stages_sum_ms"] <= report["chunk_ms"] * 1.01  # wall time includes every stage
    assert report["dit_ms"] == pytest.approx(sum(report["stages_ms"][f"dit_step_{i}"] for i in range(4)), rel=1e-3)


def test_report_has_throughput_and_output_shape(report):
    assert report["frames_per_chunk"] == 9 - 5
    assert report["fps"] == pytest.approx(4 / (report["chunk_ms"] / 1e3), rel=1e-2)
    assert report["output_frame_shape"] == [32, 32, 3]
    assert report["dit_params"] > 0 and report["first_chunk_ms"] > 0


def test_gpu_only_flags_are_rejected_without_cuda():
    if __import__("torch").cuda.is_available():
        pytest.skip("CUDA present")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--chunks", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--tiny" in proc.stderr


@pytest.mark.timeout(600)
def test_the_prepared_gpu_check_script_runs_every_step(tmp_path):
    """benchmarks/gpu_check.sh is what a short GPU loan runs; a broken step would waste the loan, so it is tried here
    with ``--tiny`` benches on the CPU (the CUDA tests skip): every step passes and each report is written."""
    pytest.importorskip("pyloudnorm")
    env = dict(os.environ, OUT=str(tmp_path), BENCH_ARGS="--tiny", PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=540)
    log = (tmp_path / "gpu_check.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "gpu_check: all steps passed" in log and log.count(": rc=0 in ") == 3
    plain, levers = (json.loads((tmp_path / name).read_text())
                     for name in ("engine_14b_gpu.json", "engine_14b_gpu_levers.json"))
    assert plain["config"]["compile"] is False and plain["config"]["fp8"] is False
    assert levers["config"] | {"compile": True, "compile_mode": "default", "fp8": True} == levers["config"]
    assert levers["date"] and levers["device"] and len(levers["per_chunk_ms"]) == 4
