"""The in-repo golden subset (tests/data/golden_subset) is intact, self-contained, and found by the locator."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import golden_support
import pytest
from golden_support import CHECKOUT, GOLDEN_ENV, IN_REPO_SUBSET, SHARED_GOLDEN, locate_golden


def _script() -> ModuleType:
    path = CHECKOUT / "scripts" / "make_fidelity_subset.py"
    spec = importlib.util.spec_from_file_location("make_fidelity_subset", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def located(monkeypatch: pytest.MonkeyPatch):
    """locate_golden() under a given $SOULX_GOLDEN_DIR, with its cache cleared before and after."""
    def run(value: str | None) -> Path | None:
        if value is None:
            monkeypatch.delenv(GOLDEN_ENV, raising=False)
        else:
            monkeypatch.setenv(GOLDEN_ENV, value)
        locate_golden.cache_clear()
        return locate_golden()

    yield run
    locate_golden.cache_clear()


def test_every_file_matches_its_pinned_sha256() -> None:
    # Also catches a checkout that turned the de-duplicating symlinks into text files.
    assert _script().check_subset(IN_REPO_SUBSET) >= 40


def test_every_kept_case_has_its_models() -> None:
    script = _script()
    assert sorted(script.KEPT) == golden_support.golden_module(IN_REPO_SUBSET).list_cases(str(IN_REPO_SUBSET))
    for case in script.KEPT:
        meta = json.loads((IN_REPO_SUBSET / "cases" / case / "meta.json").read_text())
        for rel in meta["models"].values():
            assert (IN_REPO_SUBSET / rel).exists(), (case, rel)
    assert set(script.KEPT) | set(script.DROPPED) == set(json.loads((IN_REPO_SUBSET / "manifest.json").read_text())["cases"])


def test_locator_prefers_the_shared_bundle_then_the_subset(located) -> None:
    expected = SHARED_GOLDEN if golden_support.is_bundle(SHARED_GOLDEN) else IN_REPO_SUBSET
    assert located(None) == expected


def test_locator_honours_the_environment(located, tmp_path: Path) -> None:
    assert located("tests/data/golden_subset") == IN_REPO_SUBSET.resolve()
    assert located("none") is None
    with pytest.raises(FileNotFoundError, match=GOLDEN_ENV):
        located(str(tmp_path))
