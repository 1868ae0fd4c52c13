"""Which libespeak-ng to load: the one bundled in the ``espeakng-loader`` wheel, else the system's.

Why a wheel first: a fresh machine with only Python and pip then speaks out of the box (the default
``tts.backend`` is espeak), and every machine runs the same espeak-ng version and data. The system
library is the fallback for platforms the wheel does not cover (it has no source distribution).

``SOULX_ESPEAK`` forces a choice: ``wheel``, ``system`` or ``auto`` (the default: wheel if installed).
"""
from __future__ import annotations

import ctypes.util
import importlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from typing import Literal

from soulx_live.tts.base import TtsError

__all__ = ["ENV_VAR", "EspeakLibrary", "find_espeak_library"]

log = logging.getLogger(__name__)

ENV_VAR = "SOULX_ESPEAK"
Source = Literal["wheel", "system"]
_WHEEL_DIST = "espeakng-loader"
_WHEEL_MODULE = "espeakng_loader"
_SYSTEM_NAME = "libespeak-ng.so.1"  # what Debian/Ubuntu install when find_library has no ldconfig cache
INSTALL_HINT = (f"pip install {_WHEEL_DIST} (bundles the library and its data), or install espeak-ng: "
                "`sudo apt install espeak-ng` (Debian/Ubuntu), `brew install espeak-ng` (macOS), "
                "or the espeak-ng installer on Windows (github.com/espeak-ng/espeak-ng/releases)")


@dataclass(frozen=True)
class EspeakLibrary:
    """Where libespeak-ng comes from: ``library`` goes to ``ctypes.CDLL``; ``data_dir`` to ``espeak_Initialize``
    (None: the library's compiled-in data folder, or ``ESPEAK_DATA_PATH``)."""

    source: Source
    library: str
    data_dir: str | None
    package: str = ""  # "espeakng-loader 0.2.4" for the wheel

    def describe(self) -> str:
        origin = f"wheel {self.package}" if self.source == "wheel" else "system library"
        return f"{origin} {self.library}"


def _wheel_library() -> EspeakLibrary | None:
    """The wheel's library and data, or None when the wheel is not installed (or lacks a file)."""
    try:
        loader = importlib.import_module(_WHEEL_MODULE)
    except ImportError:
        return None
    try:
        library, data_dir = loader.get_library_path(), loader.get_data_path()
    except (AttributeError, RuntimeError) as exc:  # an API change or a broken install: fall back, but say why
        log.warning("%s is installed but unusable (%s); trying the system espeak-ng", _WHEEL_DIST, exc)
        return None
    if not os.path.isfile(library):
        log.warning("%s has no library at %s; trying the system espeak-ng", _WHEEL_DIST, library)
        return None
    version = importlib.metadata.version(_WHEEL_DIST)
    return EspeakLibrary("wheel", library, data_dir, f"{_WHEEL_DIST} {version}")


def _system_library() -> EspeakLibrary:
    return EspeakLibrary("system", ctypes.util.find_library("espeak-ng") or _SYSTEM_NAME, None)


def find_espeak_library(preference: str | None = None) -> EspeakLibrary:
    """The library to load: ``preference`` (or ``$SOULX_ESPEAK``) is ``auto``, ``wheel`` or ``system``.

    ``wheel`` without the wheel installed raises :class:`TtsError`; ``system`` is not checked here (loading
    it reports a missing library with the install hint).
    """
    choice = (preference or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if choice not in ("auto", "wheel", "system"):
        raise TtsError(f"{ENV_VAR}={choice!r}: use auto, wheel or system")
    if choice == "system":
        return _system_library()
    wheel = _wheel_library()
    if wheel is not None:
        return wheel
    if choice == "wheel":
        raise TtsError(f"{ENV_VAR}=wheel but {_WHEEL_DIST} is not installed: pip install {_WHEEL_DIST}")
    return _system_library()
