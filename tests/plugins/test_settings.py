"""The sink settings are strict on their own, without the daemon's loader in front of them."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from plugins.settings import ObsConfig, RecorderConfig, VirtualCamConfig, VirtualMicConfig

SECTIONS = [ObsConfig, RecorderConfig, VirtualCamConfig, VirtualMicConfig]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_unknown_keys_are_rejected(section: type) -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        section(enabeld=True)


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_sections_are_frozen(section: type) -> None:
    cfg = section()
    with pytest.raises(ValidationError):
        cfg.enabled = True  # type: ignore[misc]


def test_obs_password_never_shows() -> None:
    cfg = ObsConfig(password="hunter2")
    assert "hunter2" not in repr(cfg) and cfg.password is not None and cfg.password.get_secret_value() == "hunter2"
