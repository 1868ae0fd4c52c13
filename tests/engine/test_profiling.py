"""StageTimer: off by default, sums repeated stages, reads once and resets, never prints."""
from __future__ import annotations

import time

import pytest
import torch

from engine.profiling import StageTimer


def test_disabled_timer_records_nothing():
    timer = StageTimer()
    with timer.stage("dit_step_0"):
        pass
    assert timer.read() == {}


def test_cpu_timer_sums_repeats_and_resets(capsys):
    timer = StageTimer("cpu", enabled=True)
    for _ in range(2):
        with timer.stage("decode"):
            time.sleep(0.01)
    with timer.stage("encode"):
        pass
    out = timer.read()
    assert list(out) == ["decode", "encode"]
    assert out["decode"] >= 20.0 and 0.0 <= out["encode"] < out["decode"]
    assert timer.read() == {}
    assert capsys.readouterr().out == ""


def test_stage_is_recorded_when_the_body_raises():
    timer = StageTimer("cpu", enabled=True)
    with pytest.raises(RuntimeError), timer.stage("boom"):
        raise RuntimeError
    assert "boom" in timer.read()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_timer_uses_events():
    timer = StageTimer("cuda", enabled=True)
    a = torch.randn(2048, 2048, device="cuda")
    with timer.stage("matmul"):
        a @ a
    out = timer.read()
    assert out["matmul"] > 0.0
