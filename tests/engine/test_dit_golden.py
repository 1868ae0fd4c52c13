"""The audio DiT reproduces the official ``WanModel`` forward recorded in the golden bundle (README §7 dit_forward)."""
from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file

from engine.refcheck.request import RefRequest
from engine.refcheck.tasks_dit import dit_forward

CHECKOUT = Path(__file__).resolve().parents[2]
CASES = ("dit_forward__a", "dit_forward__b_bf16weights")


def _golden_module(golden_dir: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("golden_compare", golden_dir / "compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _request(golden: ModuleType, golden_dir: Path, case: str, tmp_path: Path) -> RefRequest:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(golden.make_request(str(golden_dir), case)))
    return RefRequest.from_file(path)


@pytest.mark.parametrize("case", CASES)
def test_dit_case_in_process(case: str, golden_dir: Path, tmp_path: Path) -> None:
    golden = _golden_module(golden_dir)
    request = _request(golden, golden_dir, case, tmp_path)
    case_dir = golden_dir / "cases" / case
    inputs = load_file(str(case_dir / "inputs.safetensors"))

    produced = dit_forward(inputs, request)

    assert set(request.optional_outputs) <= set(produced), "every debug.* intermediate should be produced"
    for name, spec in {**request.outputs, **request.optional_outputs}.items():
        assert list(produced[name].shape) == spec["shape"], name
    report = golden.check_outputs(str(case_dir), {k: v.detach().cpu().numpy() for k, v in produced.items()})
    per_tensor = {k: v["max_rel"] for k, v in {**report["cmp"], **report["debug_cmp"]}.items()}
    assert report["max_rel"] <= report["tol"], per_tensor
    # every intermediate, not only the gating output, must agree (they locate a regression)
    assert len(report["debug_cmp"]) == len(request.optional_outputs)
    assert max(per_tensor.values()) <= report["tol"], per_tensor


def test_debug_outputs_only_when_requested(golden_dir: Path, tmp_path: Path) -> None:
    golden = _golden_module(golden_dir)
    full = _request(golden, golden_dir, "dit_forward__a", tmp_path)
    request = RefRequest(task=full.task, params={}, models=full.models, outputs=full.outputs)
    inputs = load_file(str(golden_dir / "cases" / "dit_forward__a" / "inputs.safetensors"))
    assert set(dit_forward(inputs, request)) == {"out"}


def test_inputs_are_not_modified(golden_dir: Path, tmp_path: Path) -> None:
    golden = _golden_module(golden_dir)
    request = _request(golden, golden_dir, "dit_forward__a", tmp_path)
    inputs = load_file(str(golden_dir / "cases" / "dit_forward__a" / "inputs.safetensors"))
    before = {k: v.clone() for k, v in inputs.items()}
    dit_forward(inputs, request)
    assert all(torch.equal(inputs[k], before[k]) for k in before)


def test_dit_forward_through_cli(golden_dir: Path, tmp_path: Path) -> None:
    golden = _golden_module(golden_dir)
    cmd = (
        f"cd {shlex.quote(str(CHECKOUT))} && {shlex.quote(sys.executable)} -m engine.refcheck "
        "{task} --inputs {inputs} --outputs {outputs} --request {request}"
    )
    report = golden.run_case(str(golden_dir), "dit_forward__b_bf16weights", cmd, str(tmp_path), timeout=300)
    assert "error" not in report, report["error"]
    assert report["max_rel"] <= report["tol"], {k: v["max_rel"] for k, v in report["cmp"].items()}
