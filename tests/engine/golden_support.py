"""Helpers shared by the golden-bundle tests: find the bundle, load its compare.py and build requests.

The bundle (../shared/golden) is the reference recorded from the official inference code; its
compare.py owns the tolerances and the comparison, so the tests never restate them. A fresh clone has
no ../shared, so a byte-for-byte subset of the bundle lives in the repository (tests/data/golden_subset,
written by scripts/make_fidelity_subset.py); :func:`locate_golden` picks one of the two.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file

from engine.refcheck.request import RefRequest

CHECKOUT = Path(__file__).resolve().parents[2]
SHARED_GOLDEN = CHECKOUT.parent / "shared" / "golden"
IN_REPO_SUBSET = CHECKOUT / "tests" / "data" / "golden_subset"
#: Overrides the choice: a bundle folder (relative to the checkout or absolute), or "none" for no bundle.
#: Pointing it at tests/data/golden_subset proves the in-repo set alone while ../shared/golden exists.
GOLDEN_ENV = "SOULX_GOLDEN_DIR"
REFCHECK_CMD = (
    f"cd {shlex.quote(str(CHECKOUT))} && {shlex.quote(sys.executable)} -m engine.refcheck "
    "{task} --inputs {inputs} --outputs {outputs} --request {request}"
)


#: The SoulX-FlashHead Pro bundle (../shared/golden-flashhead); no in-repo subset (CI has ../shared).
SHARED_GOLDEN_FLASHHEAD = CHECKOUT.parent / "shared" / "golden-flashhead"
GOLDEN_FLASHHEAD_ENV = "SOULX_GOLDEN_FLASHHEAD_DIR"


def is_bundle(folder: Path) -> bool:
    return (folder / "compare.py").is_file() and (folder / "cases").is_dir()


@functools.cache
def locate_golden() -> Path | None:
    """$SOULX_GOLDEN_DIR if set, else the full bundle when it sits beside the checkout, else the in-repo subset."""
    choice = os.environ.get(GOLDEN_ENV, "").strip()
    if choice.lower() == "none":
        return None
    if choice:
        folder = Path(choice) if Path(choice).is_absolute() else CHECKOUT / choice
        # A typo must not quietly turn every fidelity test into a skip.
        if not is_bundle(folder):
            raise FileNotFoundError(f"${GOLDEN_ENV}={choice!r}: no golden bundle (compare.py, cases/) at {folder}")
        return folder.resolve()
    return next((folder for folder in (SHARED_GOLDEN, IN_REPO_SUBSET) if is_bundle(folder)), None)


@functools.cache
def locate_flashhead_golden() -> Path | None:
    """$SOULX_GOLDEN_FLASHHEAD_DIR if set ("none": no bundle), else ../shared/golden-flashhead when it exists."""
    choice = os.environ.get(GOLDEN_FLASHHEAD_ENV, "").strip()
    if choice.lower() == "none":
        return None
    if choice:
        folder = Path(choice) if Path(choice).is_absolute() else CHECKOUT / choice
        if not is_bundle(folder):
            raise FileNotFoundError(
                f"${GOLDEN_FLASHHEAD_ENV}={choice!r}: no golden bundle (compare.py, cases/) at {folder}"
            )
        return folder.resolve()
    return SHARED_GOLDEN_FLASHHEAD if is_bundle(SHARED_GOLDEN_FLASHHEAD) else None


def flashhead_golden_or_skip() -> Path:
    folder = locate_flashhead_golden()
    if folder is None:
        pytest.skip(f"no FlashHead golden bundle at {SHARED_GOLDEN_FLASHHEAD} (or ${GOLDEN_FLASHHEAD_ENV}=none)")
    return folder


def golden_dir_or_skip() -> Path:
    folder = locate_golden()
    if folder is None:
        why = f"${GOLDEN_ENV}=none" if os.environ.get(GOLDEN_ENV, "").strip() else "neither exists"
        pytest.skip(f"no golden bundle: full bundle {SHARED_GOLDEN}, in-repo subset {IN_REPO_SUBSET} ({why})")
    return folder


def has_case(golden_dir: Path, case: str) -> bool:
    return (golden_dir / "cases" / case / "meta.json").is_file()


def require_case(golden_dir: Path, case: str) -> None:
    """Skip, naming where the case lives, when the located bundle is the subset and lacks it."""
    if not has_case(golden_dir, case):
        pytest.skip(f"case {case} is not in {golden_dir} (the in-repo subset keeps only some cases); "
                    f"it needs the full bundle at {SHARED_GOLDEN}")


def all_case_names(golden_dir: Path) -> list[str]:
    """Every case of the full bundle, present or not: the subset carries the full bundle's manifest, so the
    cases it lacks still show up (as skips) instead of vanishing from the test list."""
    manifest = golden_dir / "manifest.json"
    listed = set(json.loads(manifest.read_text())["cases"]) if manifest.is_file() else set()
    return sorted(listed | set(golden_module(golden_dir).list_cases(str(golden_dir))))


def present_cases(golden_dir: Path, cases: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(case for case in cases if has_case(golden_dir, case))


def golden_models() -> Path:
    """The bundle's models/ folder with the fp32 DiT, the width-8 VAE and the wav2vec2 (skips without them)."""
    models = golden_dir_or_skip() / "models"
    for needed in ("dit/config.json", "vae_dim8/Wan2.1_VAE.pth", "wav2vec2/config.json"):
        if not (models / needed).is_file():
            pytest.skip(f"golden model {needed} not found under {models}")
    return models


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
    require_case(golden_dir, case)
    path = tmp_path / f"{case}.request.json"
    path.write_text(json.dumps(golden_module(golden_dir).make_request(str(golden_dir), case)))
    return RefRequest.from_file(path)


def golden_inputs(golden_dir: Path, case: str) -> dict[str, torch.Tensor]:
    require_case(golden_dir, case)
    return load_file(str(golden_dir / "cases" / case / "inputs.safetensors"))


def check_case(golden_dir: Path, case: str, produced: dict[str, torch.Tensor]) -> dict:
    """compare.py's report for in-process outputs (required and debug.* tensors)."""
    require_case(golden_dir, case)
    arrays = {k: v.detach().cpu().numpy() for k, v in produced.items()}
    return golden_module(golden_dir).check_outputs(str(golden_dir / "cases" / case), arrays)


def per_tensor_errors(report: dict) -> dict[str, float]:
    return {k: v["max_rel"] for k, v in {**report["cmp"], **report.get("debug_cmp", {})}.items()}
