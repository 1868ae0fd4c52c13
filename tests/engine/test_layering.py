"""Engine helpers that the daemon side imports stay free of torch (the daemon never loads CUDA).

The engine's layer rule itself (no ``soulx_live``/``plugins`` imports, no cycles) is an import-linter contract
in ``.importlinter``, checked by tests/test_architecture.py.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["engine.parallel.ranks", "engine.loading.layout", "engine.extras", "engine.interface"])
def test_daemon_side_helpers_do_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; sys.exit('imported torch' if 'torch' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
