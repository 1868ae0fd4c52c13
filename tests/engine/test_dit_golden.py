"""The audio DiT reproduces the official ``WanModel`` forward recorded in the golden bundle (README §7 dit_forward)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from golden_support import check_case, golden_inputs, golden_request, per_tensor_errors

from engine.refcheck.request import RefRequest
from engine.refcheck.tasks_dit import dit_forward

CASES = ("dit_forward__a", "dit_forward__b_bf16weights")



@pytest.mark.parametrize("case", CASES)
def test_dit_case_in_process(case: str, golden_dir: Path, tmp_path: Path) -> None:
    request = golden_request(golden_dir, case, tmp_path)
    produced = dit_forward(golden_inputs(golden_dir, case), request)

    assert set(request.optional_outputs) <= set(produced), "every debug.* intermediate should be produced"
    for name, spec in {**request.outputs, **request.optional_outputs}.items():
        assert list(produced[name].shape) == spec["shape"], name
    report = check_case(golden_dir, case, produced)
    per_tensor = per_tensor_errors(report)
    assert report["max_rel"] <= report["tol"], per_tensor
    # every intermediate, not only the gating output, must agree (they locate a regression)
    assert len(report["debug_cmp"]) == len(request.optional_outputs)
    assert max(per_tensor.values()) <= report["tol"], per_tensor


def test_debug_outputs_only_when_requested(golden_dir: Path, tmp_path: Path) -> None:
    full = golden_request(golden_dir, "dit_forward__a", tmp_path)
    request = RefRequest(task=full.task, params={}, models=full.models, outputs=full.outputs)
    inputs = golden_inputs(golden_dir, "dit_forward__a")
    assert set(dit_forward(inputs, request)) == {"out"}


def test_inputs_are_not_modified(golden_dir: Path, tmp_path: Path) -> None:
    request = golden_request(golden_dir, "dit_forward__a", tmp_path)
    inputs = golden_inputs(golden_dir, "dit_forward__a")
    before = {k: v.clone() for k, v in inputs.items()}
    dit_forward(inputs, request)
    assert all(torch.equal(inputs[k], before[k]) for k in before)
