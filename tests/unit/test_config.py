"""Config: precedence, readable errors for unknown keys, path resolution, secrets, no import-time reads."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

from soulx_live.config import ConfigError, SoulxConfig, load_config

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_match_packaged_yaml_and_documented_daemon_yaml() -> None:
    packaged = yaml.safe_load(resources.files("soulx_live").joinpath("configs/default.yaml").read_text())
    documented = yaml.safe_load((REPO / "configs" / "daemon.yaml").read_text())
    assert packaged == documented
    assert load_config(env={}) == SoulxConfig()
    assert load_config(REPO / "configs" / "daemon.yaml", env={}) == SoulxConfig()


def test_flashtalk_config_file_loads() -> None:
    cfg = load_config(REPO / "configs" / "engine-flashtalk-14b.yaml", env={})
    assert cfg.engine.kind == "flashtalk"
    assert cfg.engine.flashtalk.frame_num == 33 and cfg.engine.flashtalk.dtype == "bf16"
    assert cfg.engine.device == "cuda"


def test_precedence_default_file_env_flag(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "c.yaml", "engine:\n  seed: 1\n  lite: {fps: 30}\n")
    env = {"SOULX_ENGINE__SEED": "2", "SOULX_ENGINE__LITE__WIDTH": "640"}
    assert load_config(env={}).engine.seed == 0
    assert load_config(cfg_file, env={}).engine.seed == 1
    assert load_config(cfg_file, env=env).engine.seed == 2
    cfg = load_config(cfg_file, env=env, overrides={"engine.seed": 3})
    assert cfg.engine.seed == 3
    # layers merge key by key: the file's fps, the environment's width and the default height all survive
    assert (cfg.engine.lite.fps, cfg.engine.lite.width, cfg.engine.lite.height) == (30, 640, 512)


def test_env_and_flag_values_are_typed_yaml_scalars_except_text() -> None:
    env = {
        "SOULX_AUDIO__REALTIME": "false",
        "SOULX_SUPERVISOR__RESTART_BACKOFF_S": "[1, 2.5]",
        "SOULX_ENGINE__PROMPT": "yes",  # text stays text, not YAML's boolean
        "SOULX_ENGINE__DEVICE": "null",
    }
    cfg = load_config(env=env, overrides={"engine.seed": "7", "logging.level": "debug"})
    assert cfg.audio.realtime is False
    assert cfg.supervisor.restart_backoff_s == (1.0, 2.5)
    assert cfg.engine.prompt == "yes" and cfg.engine.device == "null"
    assert cfg.engine.seed == 7 and cfg.logging.level == "DEBUG"


def test_environment_is_read_from_os_environ_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULX_ENGINE__SEED", "42")
    monkeypatch.setenv("SOULX_CONFIG", "/reserved/for/the/cli.yaml")  # reserved, not a key
    assert load_config().engine.seed == 42


@pytest.mark.parametrize(
    ("layer", "needles"),
    [
        ("file", ["'engine.lite.widht'", "'engine.lite.width'", "config file"]),
        ("env", ["'engine.kidn'", "SOULX_ENGINE__KIDN", "'engine.kind'", "SOULX_ENGINE__KIND"]),
        ("flag", ["'sinks.virtualcam.fsp'", "'sinks.virtualcam.fps'", "command-line flag"]),
    ],
)
def test_unknown_key_names_key_closest_key_and_source(tmp_path: Path, layer: str, needles: list[str]) -> None:
    cfg_file = write(tmp_path / "bad.yaml", "engine:\n  lite:\n    widht: 3\n")
    with pytest.raises(ConfigError) as err:
        if layer == "file":
            load_config(cfg_file, env={})
        elif layer == "env":
            load_config(env={"SOULX_ENGINE__KIDN": "lite"})
        else:
            load_config(env={}, overrides={"sinks.virtualcam.fsp": 3})
    message = str(err.value)
    for needle in needles:
        assert needle in message
    if layer == "file":
        assert str(cfg_file) in message


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"valid keys under 'engine.lite': width, height, fps, frames_per_chunk"):
        load_config(env={}, overrides={"engine.lite.zzzzzzzz": 1})
    with pytest.raises(ConfigError, match=r"valid keys: engine, audio, bus"):
        load_config(env={"SOULX_NOPE__X": "1"})


def test_single_underscore_env_typo_suggests_the_nested_name() -> None:
    with pytest.raises(ConfigError, match=r"SOULX_ENGINE__KIND"):
        load_config(env={"SOULX_ENGINE_KIND": "lite"})


def test_invalid_value_names_key_and_source(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "c.yaml", "engine:\n  flashtalk: {frame_num: 30}\n")
    with pytest.raises(ConfigError, match=r"'engine.flashtalk' from config file .*frame_num must be 4k\+1"):
        load_config(cfg_file, env={})
    with pytest.raises(ConfigError, match=r"'engine.kind' from environment variable SOULX_ENGINE__KIND"):
        load_config(env={"SOULX_ENGINE__KIND": "turbo"})
    with pytest.raises(ConfigError, match=r"'bus.hwm_chunks' from command-line flag 'bus.hwm_chunks'"):
        load_config(env={}, overrides={"bus.hwm_chunks": 0})


def test_broken_yaml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path / "a.yaml", "engine: [unclosed\n"), env={})
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(write(tmp_path / "b.yaml", "- just a list\n"), env={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", env={})
    assert load_config(write(tmp_path / "empty.yaml", "engine:\n"), env={}) == SoulxConfig()


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_file = write(tmp_path / "conf" / "c.yaml",
                     "engine:\n  avatar: faces/me.png\n  weights_dir: /abs/weights\naudio:\n  file: ~/speech.wav\n")
    monkeypatch.chdir(tmp_path)  # the working directory must not matter for file paths
    cfg = load_config(cfg_file, env={})
    assert cfg.engine.avatar == tmp_path / "conf" / "faces" / "me.png"
    assert cfg.engine.weights_dir == Path("/abs/weights")
    assert cfg.audio.file == Path.home() / "speech.wav"


def test_relative_paths_from_env_and_flags_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={"SOULX_ENGINE__AVATAR": "a.png"}, overrides={"sinks.recorder.path": "out/x.mp4"})
    assert cfg.engine.avatar == tmp_path / "a.png"
    assert cfg.sinks.recorder.path == tmp_path / "out" / "x.mp4"
    assert load_config(env={"SOULX_ENGINE__AVATAR": ""}).engine.avatar is None


def test_secrets_never_appear_in_repr_yaml_or_errors(tmp_path: Path) -> None:
    cfg = load_config(env={"SOULX_SINKS__OBS__PASSWORD": "hunter2-secret"})
    assert cfg.sinks.obs.password is not None
    assert cfg.sinks.obs.password.get_secret_value() == "hunter2-secret"
    for text in (repr(cfg), str(cfg), cfg.to_yaml(), repr(cfg.sinks.obs)):
        assert "hunter2-secret" not in text
    with pytest.raises(ConfigError) as err:
        load_config(env={}, overrides={"sinks.obs.password": 98765432})
    assert "98765432" not in str(err.value) and "sinks.obs.password" in str(err.value)


def test_config_is_frozen() -> None:
    cfg = SoulxConfig()
    with pytest.raises(ValueError):
        cfg.engine.seed = 3  # type: ignore[misc]
    assert cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"seed": 3})}).engine.seed == 3


def test_import_reads_nothing() -> None:
    """Importing the modules with a broken SOULX_ environment and an unrelated cwd works."""
    env = {**os.environ, "SOULX_ENGINE__KIND": "not-an-engine", "SOULX_BOGUS": "1", "XDG_RUNTIME_DIR": "/nonexistent"}
    code = "import soulx_live.config, soulx_live.protocol, soulx_live.bus, soulx_live.runtime_dir; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


REPO = Path(__file__).resolve().parents[2]


def _soulx_variables_read_by_the_code() -> set[str]:
    """Every ``"SOULX_NAME"`` literal in the product, the benchmarks and the test support that is not a config key
    (config keys nest with ``__``, e.g. ``SOULX_SINKS__OBS__PASSWORD``)."""
    import re

    pattern = re.compile(r"[\"']SOULX_([A-Z0-9_]+)[\"']")
    names: set[str] = set()
    for folder in ("soulx_live", "engine", "plugins", "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "test_config.py":  # its literals are deliberate typos
                continue
            names.update(f"SOULX_{m}" for m in pattern.findall(path.read_text(encoding="utf-8")) if "__" not in m)
    return names


def test_every_soulx_variable_the_code_reads_is_not_taken_for_a_config_key() -> None:
    """A variable such as ``SOULX_ESPEAK=system`` must not stop the daemon with 'unknown config key'."""
    from soulx_live.config import RESERVED_ENV

    read = _soulx_variables_read_by_the_code()
    assert {"SOULX_ESPEAK", "SOULX_CONFIG"} <= read  # the scan sees the code
    assert read - RESERVED_ENV == set()
    env = {name: "x" for name in RESERVED_ENV if name != "SOULX_CONFIG"}
    assert load_config(env=env).engine.kind  # none of them is read as a config key
