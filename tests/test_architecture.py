"""The architecture rules, checked on every test run (``make test`` also runs ``lint-imports`` first):

- the layers (``.importlinter``): ``engine`` below ``plugins`` below ``soulx_live``; no import cycles between the
  modules and subpackages of any package; the engine worker never imports the daemon or a sink. The contracts
  are checked by import-linter (a well-kept tool, built on grimp) over every import statement, function-level
  and ``TYPE_CHECKING`` ones included, and a planted violation of each kind is shown to fail them;
- no module imports a private (underscore) name from outside its own package;
- the daemon stays small, and no module outside the model definitions grows past 600 lines.
"""
from __future__ import annotations

import ast
import configparser
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("soulx_live", "plugins", "engine")
CONTRACTS = ROOT / ".importlinter"
MODEL_DEFINITIONS = ROOT / "engine" / "models"  # released architectures: their size follows the release
MAX_MODULE_LINES = 600
MAX_DAEMON_LINES = 300


def _lint(config: Path, cwd: Path) -> int:
    """import-linter's exit code for ``config`` with ``cwd`` importable. In a child process: the tool configures
    logging for itself, which would silence other tests' loggers in this one."""
    pytest.importorskip("importlinter.cli", reason='import-linter is missing: pip install -e ".[test]"')
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filenames=({str(config)!r},), no_cache=True, no_logo=True))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode not in (0, 1):
        raise AssertionError(f"lint-imports could not run: {done.stdout}{done.stderr}")
    return done.returncode


def test_the_import_contracts_hold() -> None:
    assert _lint(CONTRACTS, ROOT) == 0, "an import contract is broken: run `lint-imports` for the import chain"


def _planted_tree(root: Path, rename: dict[str, str], files: dict[str, str]) -> Path:
    """Three packages named like ours (``rename``) holding ``files``, and our contracts renamed to them."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    parser = configparser.ConfigParser()
    parser.read(CONTRACTS)
    for section in parser.sections():
        for key, value in parser[section].items():
            for ours, theirs in rename.items():  # top-level names only: not the ``engine`` in ``factory.engine``
                value = re.sub(rf"(?<![\w.]){ours}\b", theirs, value)
            parser[section][key] = value
    config = root / "contracts.ini"
    with config.open("w") as fh:
        parser.write(fh)
    return config


@pytest.mark.parametrize("violation", ["none", "upward import", "cycle", "worker imports the daemon"])
def test_the_contracts_catch_a_planted_violation(tmp_path: Path, violation: str) -> None:
    tag = f"p{os.getpid()}_{abs(hash(violation)) % 10**6}"  # fresh package names: nothing cached in sys.modules
    rename = {name: f"{name}_{tag}" for name in PACKAGES}
    top, mid, low = (rename[n] for n in PACKAGES)
    files = {f"{name}/__init__.py": "" for name in rename.values()}
    files |= {f"{top}/worker.py": "", f"{top}/engine_worker.py": "", f"{top}/worker_group.py": "", f"{top}/render.py": "", f"{top}/daemon.py": "",
              f"{top}/factory/__init__.py": "", f"{top}/factory/engine.py": "", f"{top}/live/__init__.py": "",
              f"{top}/control/__init__.py": "", f"{top}/control/server.py": "",
              f"{mid}/virtualcam.py": "", f"{mid}/virtualmic.py": "", f"{mid}/hold.py": "", f"{mid}/obs/__init__.py": "",
              f"{low}/a.py": "", f"{low}/b.py": ""}
    if violation == "upward import":  # inside a function, as the engine's lazy imports are
        files[f"{low}/a.py"] = f"def f():\n    from {mid} import hold\n"
    elif violation == "cycle":
        files[f"{low}/a.py"] = f"from {low} import b\n"
        files[f"{low}/b.py"] = f"def g():\n    from {low} import a\n"
    elif violation == "worker imports the daemon":
        files[f"{top}/factory/engine.py"] = f"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from {top} import daemon\n"
    config = _planted_tree(tmp_path, rename, files)
    assert _lint(config, tmp_path) == (0 if violation == "none" else 1)


def _product_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _module_of(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(path: Path, root: Path = ROOT) -> Iterator[str]:
    """``line: module.name`` for each underscore name imported from a module outside this file's package."""
    module = _module_of(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module or node.module == "__future__":
            continue
        source_package = node.module.rpartition(".")[0] or node.module
        outside = not (node.module == package or source_package == package or node.module.startswith(package + "."))
        for alias in node.names:
            private_module = any(part.startswith("_") and not part.startswith("__") for part in node.module.split("."))
            if outside and (alias.name.startswith("_") or private_module) and not alias.name.startswith("__"):
                yield f"{node.lineno}: {node.module}.{alias.name}"


def test_no_private_name_is_imported_from_another_package() -> None:
    found = {str(p.relative_to(ROOT)): hits for p in _product_files() if (hits := list(_private_imports(p)))}
    assert found == {}


def test_the_private_name_check_can_fail(tmp_path: Path) -> None:
    planted = tmp_path / "plugins" / "planted.py"
    planted.parent.mkdir()
    planted.write_text("from soulx_live.audio.device_source import _Resampler\nfrom plugins.base import FrameSink\n"
                       "def f():\n    from engine._hidden import thing\n    from plugins._own import ok\n")
    assert list(_private_imports(planted, tmp_path)) == ["1: soulx_live.audio.device_source._Resampler",
                                                         "4: engine._hidden.thing"]


def test_the_daemon_is_a_small_lifecycle_owner() -> None:
    lines = len((ROOT / "soulx_live" / "daemon.py").read_text().splitlines())
    assert lines <= MAX_DAEMON_LINES, f"soulx_live/daemon.py has {lines} lines; move a job into soulx_live/live/"


def test_no_module_outside_the_model_definitions_exceeds_600_lines() -> None:
    big = {str(p.relative_to(ROOT)): n for p in _product_files()
           if MODEL_DEFINITIONS not in p.parents and (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert big == {}, f"split these by concept: {big}"
