"""Which libespeak-ng is loaded: the espeakng-loader wheel when installed, the system library when forced or absent."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from soulx_live.tts import TtsError
from soulx_live.tts.espeak_library import ENV_VAR, find_espeak_library

SPEAK = ("from soulx_live.tts.espeak import EspeakSynthesizer, espeak_in_use; "
         "u = EspeakSynthesizer().synthesize('Hello there.'); "
         "assert u.duration_s > 0.3 and u.phonemes[0].phoneme == 'h', u; print(espeak_in_use())")


@pytest.fixture
def no_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if espeakng-loader were not installed: a None entry in sys.modules makes its import fail."""
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)


def test_auto_prefers_the_wheel_with_its_own_data(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("espeakng_loader", reason="espeakng-loader has no wheel for this platform")
    monkeypatch.delenv(ENV_VAR, raising=False)
    found = find_espeak_library()
    assert found.source == "wheel" and found.package.startswith("espeakng-loader ")
    assert Path(found.library).is_file() and Path(found.data_dir or "").is_dir()
    assert "espeakng_loader" in found.library


def test_system_when_forced_by_parameter_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_espeak_library("system").source == "system"
    monkeypatch.setenv(ENV_VAR, "system")
    found = find_espeak_library()
    assert found.source == "system" and found.data_dir is None  # the library's own compiled-in data folder
    assert "espeak-ng" in found.library


def test_system_when_the_wheel_is_absent(no_wheel: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert find_espeak_library().source == "system"
    with pytest.raises(TtsError, match="pip install espeakng-loader"):
        find_espeak_library("wheel")


def test_a_bad_choice_names_the_valid_ones() -> None:
    with pytest.raises(TtsError, match="auto, wheel or system"):
        find_espeak_library("bundled")


def _speak(choice: str) -> str:
    """Load and speak in a fresh process: the library is process-global, so one choice per process."""
    env = {**os.environ, ENV_VAR: choice}
    proc = subprocess.run([sys.executable, "-c", SPEAK], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_wheel_speaks_and_says_so() -> None:
    pytest.importorskip("espeakng_loader", reason="espeakng-loader has no wheel for this platform")
    used = _speak("wheel")
    assert "from wheel espeakng-loader" in used and "espeakng_loader" in used, used


@pytest.mark.system("espeak")
def test_the_system_library_speaks_and_says_so() -> None:
    used = _speak("system")
    assert "from system library" in used and "espeakng_loader" not in used, used


def test_doctor_names_the_espeak_in_use() -> None:
    from soulx_live.doctor import check_espeak

    row = check_espeak()
    assert row.ok is True and row.detail.startswith("espeak-ng ") and " from " in row.detail, row
