"""The layer rule for ``plugins``: it never imports the daemon, nor another package's private names.

Read from the source (every ``import`` statement, also inside functions and ``TYPE_CHECKING`` blocks),
because a function-level import only fails when that code path runs, which tests may never reach.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
FORBIDDEN_TOP = "soulx_live"


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: always inside plugins
                yield node.lineno, "plugins", [alias.name for alias in node.names]
            else:
                yield node.lineno, node.module or "", [alias.name for alias in node.names]


def _layer_violations(path: Path) -> list[str]:
    problems = []
    for line, module, names in _imports(path):
        top = module.split(".")[0]
        if top == FORBIDDEN_TOP:
            problems.append(f"{path.name}:{line} imports {module}")
        private = [n for n in names if n.startswith("_") and n != "__future__"]
        if top != "plugins" and module != "__future__" and (private or any(p.startswith("_") for p in module.split(".")[1:])):
            problems.append(f"{path.name}:{line} imports a private name of {module}: {', '.join(private) or module}")
    return problems


@pytest.mark.parametrize("path", sorted(PLUGINS.rglob("*.py")), ids=lambda p: str(p.relative_to(PLUGINS)))
def test_plugin_module_imports_only_lower_layers(path: Path) -> None:
    assert _layer_violations(path) == []


def test_the_checker_catches_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from soulx_live.config import ObsConfig\n"
                   "def f():\n    from soulx_live.audio.device_source import _rescan\n    import soulx_live\n"
                   "from engine._private import x\nfrom . import _mine\n")
    found = _layer_violations(bad)
    assert len(found) == 5, found  # soulx_live x3, _rescan (private name), engine._private (private module)
