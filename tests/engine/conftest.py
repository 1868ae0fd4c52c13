"""Engine-test fixtures: the golden bundle as located by golden_support (full bundle or the in-repo subset)."""
from __future__ import annotations

from pathlib import Path

import pytest
from golden_support import golden_dir_or_skip


@pytest.fixture
def golden_dir() -> Path:
    """Overrides the top-level fixture (../shared/golden only): falls back to tests/data/golden_subset, and
    honours $SOULX_GOLDEN_DIR."""
    return golden_dir_or_skip()
