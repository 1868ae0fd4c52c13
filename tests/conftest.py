"""Shared fixtures: locations of the shared reference material beside the checkout."""
from __future__ import annotations

from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
SHARED = CHECKOUT.parent / "shared"
SHARED_DATA = SHARED / "data"
GOLDEN = SHARED / "golden"


@pytest.fixture
def shared_data() -> Path:
    """The real portraits and speech in ../shared/data (skips when the folder is absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (only present beside a project checkout)")
    return SHARED_DATA


@pytest.fixture
def golden_dir() -> Path:
    """The golden reference bundle in ../shared/golden (skips when the folder is absent)."""
    if not (GOLDEN / "compare.py").is_file():
        pytest.skip(f"golden bundle not found at {GOLDEN}")
    return GOLDEN
