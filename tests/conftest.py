"""Shared fixtures (the reference material beside the checkout) and the system test groups.

System groups are tests that need what pip cannot install: a PulseAudio server, OBS Studio under Xvfb, the
system espeak-ng library, a CUDA GPU, network namespaces (root and iproute2). A test joins one with ``@pytest.mark.system("obs")`` (``@pytest.mark.gpu``
means the ``cuda`` group). Each group has one prerequisite probe, checked here before the test's own skip marks:
missing, the test skips with the reason, or FAILS when the group's ``REQUIRE_*`` flag is ``1`` (CI and
``make test-system``), so a broken CI image cannot pass by skipping. The run ends with one short summary of
the groups not exercised and the command that enables them.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


# -- system groups -------------------------------------------------------------------------------------------

ENABLE_COMMAND = "sudo make test-system"


def _missing_tools(tools: tuple[str, ...], packages: str) -> str | None:
    absent = [t for t in tools if shutil.which(t) is None]
    return f"{', '.join(absent)} not installed (apt-get install {packages})" if absent else None


def _pulseaudio_missing() -> str | None:
    missing = _missing_tools(("pulseaudio", "pactl", "pacat"), "pulseaudio pulseaudio-utils")
    if missing:
        return missing
    try:
        import sounddevice  # noqa: F401 - needs the PortAudio system library on Linux
    except ImportError:
        return 'sounddevice not installed (pip install -e ".[audio]")'
    except OSError as exc:
        return f"PortAudio library missing: {exc} (apt-get install libportaudio2)"
    return None


def _obs_missing() -> str | None:
    return _missing_tools(("obs", "Xvfb"), "obs-studio xvfb")


def _chromium_missing() -> str | None:
    missing = _missing_tools(("chromium", "chromedriver"), "chromium chromium-driver")
    if missing:
        return missing
    try:
        import selenium  # noqa: F401 - drives the system browser through the system chromedriver
    except ImportError:
        return 'selenium not installed (pip install -e ".[test]")'
    return None


def _system_espeak_missing() -> str | None:
    # In a child process: here the wheel's copy may be loaded already, and the loader would hand it back
    # for the bare name libespeak-ng.so.1 (same soname), hiding a missing system library.
    probe = ("import ctypes, ctypes.util; "
             "ctypes.CDLL(ctypes.util.find_library('espeak-ng') or 'libespeak-ng.so.1')")
    if subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30, check=False).returncode != 0:
        return "the system libespeak-ng is not installed (apt-get install espeak-ng)"
    return None


def _cuda_missing() -> str | None:
    import torch

    if torch.version.cuda is None:
        return "torch is a CPU build (no CUDA GPU usable)"
    return None if torch.cuda.is_available() else "no CUDA GPU available"


def _netns_missing() -> str | None:
    from soulx_live.remote.netns import netns_unavailable

    return netns_unavailable()


@dataclass(frozen=True)
class SystemGroup:
    name: str
    flag: str  # REQUIRE_* environment variable: "1" turns a missing prerequisite into a failure
    probe: Callable[[], str | None]  # None when the prerequisite is present, else why not

    def required(self) -> bool:
        return os.environ.get(self.flag) == "1"


SYSTEM_GROUPS = {g.name: g for g in (
    SystemGroup("pulseaudio", "REQUIRE_PULSEAUDIO", _pulseaudio_missing),
    SystemGroup("obs", "REQUIRE_OBS", _obs_missing),
    SystemGroup("espeak", "REQUIRE_ESPEAK", _system_espeak_missing),
    SystemGroup("chromium", "REQUIRE_CHROMIUM", _chromium_missing),
    SystemGroup("cuda", "REQUIRE_CUDA", _cuda_missing),
    SystemGroup("netns", "REQUIRE_NETNS", _netns_missing),
)}
_NOT_RUN = pytest.StashKey[dict[str, list[str]]]()


@functools.cache
def _why_missing(group: str) -> str | None:
    """Probe once per run: the probes start no servers, but a few import heavy modules."""
    return SYSTEM_GROUPS[group].probe()


def _group_of(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("system")
    if mark is not None:
        name = mark.args[0] if mark.args else ""
        if name not in SYSTEM_GROUPS:
            raise pytest.UsageError(f"{item.nodeid}: unknown system group {name!r} (one of {', '.join(SYSTEM_GROUPS)})")
        return str(name)
    return "cuda" if item.get_closest_marker("gpu") is not None else None


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_NOT_RUN] = {}


@pytest.hookimpl(tryfirst=True)  # before the skipping plugin's skipif, which would otherwise hide a REQUIRE_* failure
def pytest_runtest_setup(item: pytest.Item) -> None:
    group = _group_of(item)
    if group is None:
        return
    why = _why_missing(group)
    if why is None:
        return
    spec = SYSTEM_GROUPS[group]
    if spec.required():
        pytest.fail(f"[{group}] {why} ({spec.flag}=1)", pytrace=False)
    item.config.stash[_NOT_RUN].setdefault(group, []).append(why)
    pytest.skip(f"[{group}] {why}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    not_run = config.stash.get(_NOT_RUN, {})
    if not not_run:
        return
    terminalreporter.section("not exercised: needs what pip cannot install", sep="-", bold=True)
    for group, reasons in sorted(not_run.items()):
        terminalreporter.line(f"{group}: {len(reasons)} test(s) skipped: {reasons[0]}")
    terminalreporter.line(f"enable: {ENABLE_COMMAND}  (apt-get installs the packages; each group's REQUIRE_* flag "
                          "then fails instead of skipping; cuda needs an NVIDIA GPU)")
