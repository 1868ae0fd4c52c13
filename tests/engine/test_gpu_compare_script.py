"""benchmarks/gpu_compare.sh (ours beside the released code, one prepared GPU call) runs every step with ``--tiny``
on the CPU: each step's JSON is written, the summary has one line per step, the carry paths are printed, and the
reference step either runs (a release copy present) or is skipped with its reason."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench_fake_release import write_fake_release

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_compare.sh"
RELEASE_COPY = ROOT / "third_party" / "SoulX-FlashTalk"
CARRY = 'gpu_compare: carry ["third_party", ".whl"]'
REQUIRED = ("1 ceilings", "2 ours", "3 reference", "4 ratio")
OPTIONAL = ("5 ours, compile + FP8", "5 ours, --fp8-weights", "5 ours, --offload")


def _run(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    pytest.importorskip("pyloudnorm")
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(SCRIPT), "--tiny", "--out-dir", str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240, check=False)
    log = (out / "gpu_compare.log").read_text()
    assert proc.returncode == 0, log[-4000:] + proc.stderr[-2000:]
    return proc, log


def _summary(log: str) -> list[str]:
    tail = log[log.rindex("gpu_compare summary"):]
    return [line.strip() for line in tail.splitlines()[1:] if line.startswith("  ") and ": " in line]


def _load(out: Path, name: str) -> dict:
    return json.loads((out / f"compare_{name}.json").read_text())


@pytest.mark.timeout(300)
def test_every_step_runs_and_the_reference_is_compared_or_skipped(tmp_path):
    """The default call (release copy at third_party/SoulX-FlashTalk): every step, optional ones included."""
    proc, log = _run(tmp_path)
    assert log.startswith(CARRY) and log.count(CARRY) == 2  # at the start and in the closing summary
    assert proc.stdout.rstrip().endswith("gpu_compare: all steps passed")
    lines = [line for line in _summary(log) if ": rc=" in line or ": skipped" in line]
    assert [line.split(":")[0] for line in lines] == [*REQUIRED, *OPTIONAL]
    assert all(": rc=0 in " in line for line in lines if not line.startswith("3 reference"))

    ceiling = _load(tmp_path, "ceiling")
    assert set(ceiling["matmul_ceiling"]) == {"bf16", "fp8"}
    ours = _load(tmp_path, "ours")
    assert ours["config"] | {"tiny": True, "attention_backend": "sdpa", "compile": False, "fp8": False} == ours["config"]
    ratio = _load(tmp_path, "ratio")
    assert [row["chunk"] for row in ratio["per_chunk"]] == list(range(len(ours["wall_ms"])))
    if RELEASE_COPY.is_dir():
        assert "3 reference: rc=0 in " in log and (tmp_path / "compare_reference.json").is_file()
        assert ratio["reference_skipped"] is None and set(ratio["mfu"]) == {"ours", "reference"}
        assert "speedup_chunk" in ratio["comparison"] and "speedup" in ratio["per_chunk"][-1]
    else:
        assert "3 reference: skipped (third_party/SoulX-FlashTalk is absent" in log
        assert "the reference step was skipped" in log and not (tmp_path / "compare_reference.json").exists()
        assert ratio["reference_skipped"] and "comparison" not in ratio and set(ratio["mfu"]) == {"ours"}

    levers = _load(tmp_path, "ours_compile_fp8")
    assert levers["config"] | {"compile": True, "compile_mode": "default", "fp8": True} == levers["config"]
    assert _load(tmp_path, "ours_fp8_weights")["config"]["fp8_weights"] is True
    assert _load(tmp_path, "ours_offload")["config"]["offload"] is True
    assert len(list(tmp_path.iterdir())) <= 8  # what a GPU loan sends back from $OUT


@pytest.mark.timeout(300)
def test_the_comparison_against_a_release_copy_and_no_time_for_optional_steps(tmp_path):
    """ADAPTER TEST against the fake release (tests/engine/bench_fake_release.py): step 3 measures it, step 4 writes
    the ratio per chunk and per stage with both MFUs; with no budget left the optional steps say why they did not
    run. Speeds of the fake mean nothing."""
    release = write_fake_release(tmp_path / "release" / "SoulX-FlashTalk")
    out = tmp_path / "out"
    _, log = _run(out, "--reference", str(release), "--budget", "0")
    assert "3 reference: rc=0 in " in log and "gpu_compare: all steps passed" in log
    for name in OPTIONAL:
        assert f"{name}: skipped (time: " in log
    reference, ratio = _load(out, "reference"), _load(out, "ratio")
    assert Path(reference["checkout"]) == release.resolve()
    assert ratio["reference_skipped"] is None
    comparison = ratio["comparison"]
    assert comparison["reference_chunk_ms"] == reference["chunk_ms"] and "dit_step_0" in comparison["stages"]
    for row in ratio["per_chunk"]:
        assert row["speedup"] == pytest.approx(row["reference_ms"] / row["ours_ms"], rel=1e-2)
        assert {"ours_mfu", "reference_mfu", "ours_dit_ms", "reference_dit_ms"} <= set(row)
    # the release recomputes the text/CLIP K/V every step: more DiT FLOP per chunk than ours
    assert ratio["dit_tflop_per_chunk"]["reference"] > ratio["dit_tflop_per_chunk"]["ours"]
    assert sorted(p.name for p in out.iterdir()) == [
        "compare_ceiling.json", "compare_ours.json", "compare_ratio.json", "compare_reference.json",
        "gpu_compare.log"]
