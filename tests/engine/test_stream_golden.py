"""The streaming loop against the golden bundle (prepare, sampler, stream_chunk), in process
(the command-line path is covered for every case by test_golden_bundle.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from golden_support import check_case, golden_inputs, golden_request, per_tensor_errors

from engine.refcheck.__main__ import resolve_handler, select_outputs

CASES = ["prepare__a", "sampler__chunk0", "sampler__chunk1", "stream_chunk__chunk0", "stream_chunk__chunk1"]


@pytest.mark.parametrize("case", CASES)
def test_stream_case_in_process(case: str, golden_dir: Path, tmp_path: Path) -> None:
    request = golden_request(golden_dir, case, tmp_path)
    inputs = golden_inputs(golden_dir, case)
    torch.set_grad_enabled(False)
    try:
        produced = select_outputs(resolve_handler(request.task)(inputs, request), request)
    finally:
        torch.set_grad_enabled(True)
    report = check_case(golden_dir, case, produced)
    assert report["max_rel"] <= report["tol"], per_tensor_errors(report)
    if request.task == "sampler":  # the optional per-step intermediates are produced and match too
        assert len(report["debug_cmp"]) == 12
        assert max(v["max_rel"] for v in report["debug_cmp"].values()) <= report["tol"]


def test_chunk0_feeds_chunk1(golden_dir: Path, tmp_path: Path) -> None:
    """The bundle's chunk-1 motion latent is chunk 0's output: our chunk 0 reproduces that hand-off."""
    request = golden_request(golden_dir, "stream_chunk__chunk0", tmp_path)
    inputs = golden_inputs(golden_dir, "stream_chunk__chunk0")
    with torch.inference_mode():
        out = resolve_handler("stream_chunk")(inputs, request)
    nxt = golden_inputs(golden_dir, "stream_chunk__chunk1")["latent_motion_frames"]
    ref = nxt.numpy().astype(np.float64)
    err = np.abs(out["motion_latent_next"].numpy() - ref).max() / np.abs(ref).max()
    assert err <= 1e-4
