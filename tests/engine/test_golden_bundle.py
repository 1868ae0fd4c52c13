"""Every case of the golden bundle passes through ``python -m engine.refcheck`` (golden README §5, §8).

This is the acceptance check of engine fidelity: the exact command the project exposes, run as a
subprocess per case, compared by the bundle's own compare.py at the bundle's tolerances.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from golden_support import (
    IN_REPO_SUBSET,
    REFCHECK_CMD,
    SHARED_GOLDEN,
    all_case_names,
    golden_module,
    locate_golden,
    require_case,
)


def _cases() -> list[str]:
    golden = locate_golden()
    return [] if golden is None else all_case_names(golden)


_NO_BUNDLE = pytest.param("none", marks=pytest.mark.skip(reason=f"no golden bundle at {SHARED_GOLDEN} or {IN_REPO_SUBSET}"))


@pytest.mark.parametrize("case", _cases() or [_NO_BUNDLE])
def test_golden_case_through_refcheck(case: str, golden_dir: Path, tmp_path: Path) -> None:
    require_case(golden_dir, case)  # the in-repo subset lacks some of the full bundle's cases
    report = golden_module(golden_dir).run_case(str(golden_dir), case, REFCHECK_CMD, str(tmp_path), timeout=600)
    assert "error" not in report, report["error"]
    assert report["max_rel"] <= report["tol"], {k: v["max_rel"] for k, v in report["cmp"].items()}
