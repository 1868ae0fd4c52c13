"""Per-user runtime folder: created private, unsafe folders refused with the fix; socket addresses."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from soulx_live.config import BusConfig
from soulx_live.runtime_dir import RuntimeDirError, endpoint, runtime_dir


def test_created_with_mode_0700_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        path = runtime_dir(BusConfig(runtime_dir=tmp_path / "a" / "rt"))
    finally:
        os.umask(old)
    assert path == tmp_path / "a" / "rt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert runtime_dir(BusConfig(runtime_dir=path)) == path  # existing private folder is reused


def test_default_is_under_xdg_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert runtime_dir() == tmp_path / "soulx-live"
    assert endpoint("ctrl", BusConfig()) == f"ipc://{tmp_path}/soulx-live/ctrl.ipc"


def test_default_without_xdg_is_per_uid_in_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert runtime_dir() == Path(f"/tmp/soulx-live-{os.getuid()}")


def test_group_or_world_access_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "rt"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    with pytest.raises(RuntimeDirError, match=rf"chmod 700 {path}"):
        runtime_dir(BusConfig(runtime_dir=path))


def test_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(RuntimeDirError, match="not a plain folder"):
        runtime_dir(BusConfig(runtime_dir=tmp_path / "link"))


def test_folder_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rt"
    path.mkdir(mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(path).st_uid + 1)
    with pytest.raises(RuntimeDirError, match="not to you"):
        runtime_dir(BusConfig(runtime_dir=path))


def test_socket_path_too_long_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeDirError, match="longer than"):
        endpoint("frames", BusConfig(runtime_dir=tmp_path / ("x" * 120)))


def test_tcp_endpoints_and_non_loopback_warning(caplog: pytest.LogCaptureFixture) -> None:
    bus = BusConfig(transport="tcp", tcp_port=6000)
    assert [endpoint(name, bus) for name in ("ctrl", "events", "frames", "cli")] == [
        "tcp://127.0.0.1:6000", "tcp://127.0.0.1:6001", "tcp://127.0.0.1:6002", "tcp://127.0.0.1:6003"]
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="soulx_live.runtime_dir"):
        assert endpoint("frames", bus.model_copy(update={"tcp_host": "0.0.0.0"})) == "tcp://0.0.0.0:6002"
    assert "without authentication" in caplog.text


def test_unknown_socket_name() -> None:
    with pytest.raises(ValueError, match="known sockets: ctrl, events, frames, cli"):
        endpoint("video", BusConfig(transport="tcp"))
