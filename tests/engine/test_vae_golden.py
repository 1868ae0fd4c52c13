"""The Wan2.1 VAE reproduces the official encode/decode recorded in the golden bundle (README §7)."""
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
from engine.refcheck.tasks_vae import vae_decode, vae_encode

CHECKOUT = Path(__file__).resolve().parents[2]
HANDLERS = {"vae_encode__a": vae_encode, "vae_decode__a": vae_decode}


def _golden_module(golden_dir: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("golden_compare", golden_dir / "compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", sorted(HANDLERS))
def test_vae_case_in_process(case: str, golden_dir: Path, tmp_path: Path) -> None:
    golden = _golden_module(golden_dir)
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps(golden.make_request(str(golden_dir), case)))
    request = RefRequest.from_file(request_path)
    case_dir = golden_dir / "cases" / case
    inputs = load_file(str(case_dir / "inputs.safetensors"))

    produced = HANDLERS[case](inputs, request)

    for name, spec in request.outputs.items():
        assert list(produced[name].shape) == spec["shape"], name
    report = golden.check_outputs(str(case_dir), {k: v.detach().cpu().numpy() for k, v in produced.items()})
    assert report["max_rel"] <= report["tol"], {k: v["max_rel"] for k, v in report["cmp"].items()}


def test_vae_decode_through_cli(golden_dir: Path, tmp_path: Path) -> None:
    golden = _golden_module(golden_dir)
    cmd = (
        f"cd {shlex.quote(str(CHECKOUT))} && {shlex.quote(sys.executable)} -m engine.refcheck "
        "{task} --inputs {inputs} --outputs {outputs} --request {request}"
    )
    report = golden.run_case(str(golden_dir), "vae_decode__a", cmd, str(tmp_path), timeout=300)
    assert "error" not in report, report["error"]
    assert report["max_rel"] <= report["tol"], {k: v["max_rel"] for k, v in report["cmp"].items()}


def test_inputs_are_not_modified(golden_dir: Path) -> None:
    """decode clamps in place internally; the caller's latent must stay untouched."""
    request = RefRequest(
        task="vae_decode",
        params={},
        models={"vae": golden_dir / "models" / "vae_dim8" / "Wan2.1_VAE.pth"},
        outputs={},
    )
    latent = load_file(str(golden_dir / "cases" / "vae_decode__a" / "inputs.safetensors"))["latent"]
    before = latent.clone()
    vae_decode({"latent": latent}, request)
    assert torch.equal(latent, before)
