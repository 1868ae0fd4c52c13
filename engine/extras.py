"""Optional integrations: import at the leaf, fail with the exact install command.

Every optional dependency (virtual camera, OBS, sound devices, GPU kernels) is imported through
:func:`require` at the point of use, so the core package never needs it and a missing one produces
one actionable line instead of a traceback from deep inside an import chain.

It lives in the bottom layer (``engine``) so that every layer can use it: the engine names extras for
its GPU kernels, ``plugins`` for the camera, microphone and OBS, ``soulx_live`` for the rest.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "install_hint", "require"]


class MissingExtraError(ImportError):
    """An optional package is missing or unusable; the message carries the command that fixes it."""

    def __init__(self, module: str, extra: str, purpose: str = "", problem: str = "") -> None:
        self.module = module
        self.extra = extra
        what = f" (needed for {purpose})" if purpose else ""
        status = problem or "is not installed"
        super().__init__(f"the Python package {module!r} {status}{what}; install it with: {install_hint(extra)}")


def install_hint(extra: str) -> str:
    """The exact command that installs ``extra``."""
    return f'pip install "soulx-live[{extra}]"'


def require(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the ``soulx-live[extra]`` to install.

    ``OSError`` is caught too: packages such as sounddevice import fine but fail to load their
    shared library (PortAudio), which is the same problem from the user's point of view.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # the package is there but one of *its* imports is broken: show that, not our hint
        raise MissingExtraError(module, extra, purpose) from exc
    except OSError as exc:
        raise MissingExtraError(module, extra, purpose, problem=f"is installed but failed to load ({exc})") from exc
