"""A real, headless OBS Studio for tests: Xvfb + ``obs`` with its WebSocket server, started and stopped by PID.

Imported by plain name from the tests in this folder. ``integration.md`` §1: OBS 29 / obs-websocket 5.1
read the server settings from ``$HOME/.config/obs-studio/global.ini`` ``[OBSWebSocket]``;
``ServerEnabled=true`` and ``FirstLoad=false`` must be written before the first start (flags alone
are not enough). Newer OBS keeps them in ``plugin_config/obs-websocket/config.json``, written too.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REQUIRE_ENV = "REQUIRE_OBS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


def write_obs_config(home: Path, port: int, password: str) -> None:
    cfg = home / ".config" / "obs-studio"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "global.ini").write_text(
        "[General]\nFirstRun=true\nEnableAutoUpdates=false\n"
        "[BasicWindow]\nSysTrayEnabled=false\n"
        f"[OBSWebSocket]\nFirstLoad=false\nServerEnabled=true\nServerPort={port}\nAlertsEnabled=false\n"
        f"AuthRequired=true\nServerPassword={password}\n"
    )
    newer = cfg / "plugin_config" / "obs-websocket"
    newer.mkdir(parents=True, exist_ok=True)
    (newer / "config.json").write_text(json.dumps({
        "first_load": False, "server_enabled": True, "server_port": port, "alerts_enabled": False,
        "auth_required": True, "server_password": password}))


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class HeadlessObs:
    """Xvfb + OBS in a temp HOME; ``start``/``stop_obs``/``start_obs`` (restart) / ``close``."""

    def __init__(self, home: Path, password: str = "obs-test-pw-7f3a") -> None:
        self.home, self.password = home, password
        self.port = free_port()
        self.xvfb: subprocess.Popen[bytes] | None = None
        self.obs: subprocess.Popen[bytes] | None = None
        self.display = ""
        self.log_path = home / "obs.log"

    def start(self) -> None:
        for tool in ("obs", "Xvfb"):
            if shutil.which(tool) is None:
                skip_or_fail(f"{tool} is not installed (apt-get install obs-studio xvfb)")
        write_obs_config(self.home, self.port, self.password)
        read_fd, write_fd = os.pipe()
        self.xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
                                     pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_fd)
        number = b""
        deadline = time.monotonic() + 10
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            chunk = os.read(read_fd, 16)
            if not chunk:
                break
            number += chunk
        os.close(read_fd)
        if not number.strip():
            self.close()
            skip_or_fail("Xvfb did not start")
        self.display = ":" + number.decode().strip()
        self.start_obs()

    def start_obs(self, timeout_s: float = 20.0) -> float:
        env = dict(os.environ, HOME=str(self.home), DISPLAY=self.display, LIBGL_ALWAYS_SOFTWARE="1")
        t0 = time.monotonic()
        with open(self.log_path, "ab") as logf:
            self.obs = subprocess.Popen(["obs", "--multi", "--minimize-to-tray", "--disable-missing-files-check",
                                         "--disable-updater"], env=env, cwd=self.home, stdout=logf, stderr=subprocess.STDOUT)
        while time.monotonic() - t0 < timeout_s:
            if self.obs.poll() is not None:
                raise RuntimeError(f"obs exited with {self.obs.returncode}; log: {self.log_path}")
            if _port_open(self.port):
                return time.monotonic() - t0
            time.sleep(0.1)
        raise RuntimeError(f"obs websocket did not open port {self.port} within {timeout_s} s; log: {self.log_path}")

    def stop_obs(self) -> None:
        proc, self.obs = self.obs, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def close(self) -> None:
        self.stop_obs()
        proc, self.xvfb = self.xvfb, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
