"""Helpers shared by the golden-bundle tests: load the bundle's compare.py and build requests.

The bundle (../shared/golden) is the reference recorded from the official inference code; its
compare.py owns the tolerances and the comparison, so the tests never restate them.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import shlex
import sys
from pathlib import Path
from types import ModuleType

import torch
from safetensors.torch import load_file

from engine.refcheck.request import RefRequest

CHECKOUT = Path(__file__).resolve().parents[2]
GOLDEN = CHECKOUT.parent / "shared" / "golden"
REFCHECK_CMD = (
    f"cd {shlex.quote(str(CHECKOUT))} && {shlex.quote(sys.executable)} -m engine.refcheck "
    "{task} --inputs {inputs} --outputs {outputs} --request {request}"
)


@functools.cache
def golden_module(golden_dir: Path) -> ModuleType:
    """The bundle's own compare.py, imported from its file."""
    spec = importlib.util.spec_from_file_location("golden_compare", golden_dir / "compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden_request(golden_dir: Path, case: str, tmp_path: Path) -> RefRequest:
    """The request compare.py would send for ``case``, parsed as the refcheck runner parses it."""
    path = tmp_path / f"{case}.request.json"
    path.write_text(json.dumps(golden_module(golden_dir).make_request(str(golden_dir), case)))
    return RefRequest.from_file(path)


def golden_inputs(golden_dir: Path, case: str) -> dict[str, torch.Tensor]:
    return load_file(str(golden_dir / "cases" / case / "inputs.safetensors"))


def check_case(golden_dir: Path, case: str, produced: dict[str, torch.Tensor]) -> dict:
    """compare.py's report for in-process outputs (required and debug.* tensors)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in produced.items()}
    return golden_module(golden_dir).check_outputs(str(golden_dir / "cases" / case), arrays)


def per_tensor_errors(report: dict) -> dict[str, float]:
    return {k: v["max_rel"] for k, v in {**report["cmp"], **report.get("debug_cmp", {})}.items()}
