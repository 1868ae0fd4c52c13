"""The daemon's configuration composes the sink sections defined in :mod:`plugins.settings`."""
from __future__ import annotations

from pathlib import Path

import pytest

import plugins.settings
import soulx_live.config as config
from soulx_live.config import ConfigError, load_config


@pytest.mark.parametrize("name", ["ObsConfig", "RecorderConfig", "VirtualCamConfig", "VirtualMicConfig"])
def test_sink_sections_are_reexported_unchanged(name: str) -> None:
    assert getattr(config, name) is getattr(plugins.settings, name)
    assert name in config.__all__


def test_sinks_section_uses_the_plugin_models() -> None:
    fields = config.SinksConfig.model_fields
    assert fields["obs"].annotation is plugins.settings.ObsConfig
    assert fields["virtualmic"].annotation is plugins.settings.VirtualMicConfig


def test_bad_sink_key_in_a_file_names_key_guess_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sinks:\n  obs:\n    pasword: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    message = str(err.value)
    assert "'sinks.obs.pasword'" in message and "did you mean 'sinks.obs.password'" in message and str(path) in message


def test_bad_sink_value_names_key_and_source() -> None:
    with pytest.raises(ConfigError, match=r"'sinks.virtualcam.fit' from environment variable SOULX_SINKS__VIRTUALCAM__FIT"):
        load_config(env={"SOULX_SINKS__VIRTUALCAM__FIT": "zoom"})
