"""The Wan2.1 VAE reproduces the official encode/decode recorded in the golden bundle (README §7)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from golden_support import check_case, golden_inputs, golden_request, per_tensor_errors

from engine.refcheck.request import RefRequest
from engine.refcheck.tasks_vae import vae_decode, vae_encode

HANDLERS = {"vae_encode__a": vae_encode, "vae_decode__a": vae_decode}



@pytest.mark.parametrize("case", sorted(HANDLERS))
def test_vae_case_in_process(case: str, golden_dir: Path, tmp_path: Path) -> None:
    request = golden_request(golden_dir, case, tmp_path)
    produced = HANDLERS[case](golden_inputs(golden_dir, case), request)

    for name, spec in request.outputs.items():
        assert list(produced[name].shape) == spec["shape"], name
    report = check_case(golden_dir, case, produced)
    assert report["max_rel"] <= report["tol"], per_tensor_errors(report)



def test_inputs_are_not_modified(golden_dir: Path) -> None:
    """decode clamps in place internally; the caller's latent must stay untouched."""
    request = RefRequest(
        task="vae_decode",
        params={},
        models={"vae": golden_dir / "models" / "vae_dim8" / "Wan2.1_VAE.pth"},
        outputs={},
    )
    latent = golden_inputs(golden_dir, "vae_decode__a")["latent"]
    before = latent.clone()
    vae_decode({"latent": latent}, request)
    assert torch.equal(latent, before)
