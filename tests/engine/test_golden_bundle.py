"""Every case of the golden bundle passes through ``python -m engine.refcheck`` (golden README §5, §8).

This is the acceptance check of engine fidelity: the exact command the project exposes, run as a
subprocess per case, compared by the bundle's own compare.py at the bundle's tolerances.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from golden_support import GOLDEN, REFCHECK_CMD, golden_module


def _cases() -> list[str]:
    if not (GOLDEN / "compare.py").is_file():
        return []
    return golden_module(GOLDEN).list_cases(str(GOLDEN))


@pytest.mark.parametrize("case", _cases() or [pytest.param("none", marks=pytest.mark.skip(reason=f"golden bundle not found at {GOLDEN}"))])
def test_golden_case_through_refcheck(case: str, golden_dir: Path, tmp_path: Path) -> None:
    report = golden_module(golden_dir).run_case(str(golden_dir), case, REFCHECK_CMD, str(tmp_path), timeout=600)
    assert "error" not in report, report["error"]
    assert report["max_rel"] <= report["tol"], {k: v["max_rel"] for k, v in report["cmp"].items()}
