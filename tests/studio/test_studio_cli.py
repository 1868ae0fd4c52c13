"""`soulx-live run` serves the Studio: the one-time link on stdout (never in the log on stderr), the page works
with it once, `--no-studio` turns it off, and `soulx-live status` names the sinks."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from studio_support import Page

from soulx_live.config import SoulxConfig
from soulx_live.control.client import query_status
from soulx_live.errors import DaemonUnavailable

CHECKOUT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"Studio: (http://127\.0\.0\.1:\d+)(/login\?code=([A-Za-z0-9_-]+))")


def _run(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "soulx_live", "run", "--set", f"bus.runtime_dir={tmp_path / 'rt'}",
         "--set", "studio.port=0", "--set", "metrics.port=0", "--set", "engine.lite.width=96",
         "--set", "engine.lite.height=96", *extra],
        cwd=CHECKOUT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_run_prints_the_one_time_link_to_stdout_only(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        match = LINK.search(line)
        assert match, line
        base, path, code = match.groups()
        page = Page(base)
        assert page.request(path).status == 200
        assert Page(base).request(path).status == 403  # spent
        end = time.monotonic() + 30  # the link is printed as the daemon starts; the session follows
        while not (state := page.request("/api/state").json())["sinks"] or state["chunks"] == 0:
            assert time.monotonic() < end, state
            time.sleep(0.1)
        assert state["audio"]["configured"] == "push"  # no audio named: the avatar waits for text or a picked input
        assert [s["name"] for s in state["sinks"] if s["enabled"]] == ["preview"]
        status = subprocess.run([sys.executable, "-m", "soulx_live", "status", "--set",
                                 f"bus.runtime_dir={tmp_path / 'rt'}"], capture_output=True, text=True, timeout=60, check=False,
                                cwd=CHECKOUT)
        assert status.returncode == 0 and "sink preview" in status.stdout, status.stdout + status.stderr
        assert re.search(rf"^studio\s+{re.escape(base)}/ ", status.stdout, re.M), status.stdout
        links = [LINK.search(_cli(tmp_path, "studio").stdout) for _ in range(2)]  # a lost session: new links
        assert all(links) and links[0].group(3) != links[1].group(3)  # type: ignore[union-attr]
        assert Page(base).request(links[0].group(2)).status == 403  # type: ignore[union-attr] # replaced, unused
        again = Page(base)
        assert again.request(links[1].group(2)).status == 200  # type: ignore[union-attr]
        assert again.request("/api/state").status == 200
        code = code + " " + links[1].group(3)  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Studio page on http://127.0.0.1:" in err  # the log says where, without the code
    for one in code.split():
        assert one not in err and one not in out[len(line):]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soulx_live", *args, "--set", f"bus.runtime_dir={tmp_path / 'rt'}"],
                          capture_output=True, text=True, timeout=60, cwd=CHECKOUT, check=False)


def test_no_studio_flag(tmp_path: Path) -> None:
    speech = CHECKOUT / "soulx_live" / "assets" / "demo_speech.wav"
    proc = _run(tmp_path, "--no-studio", "--audio", str(speech))
    bus = SoulxConfig.model_validate({"bus": {"runtime_dir": str(tmp_path / "rt")}}).bus
    try:
        end = time.monotonic() + 30
        while True:  # until the session runs (the Studio would be up by then)
            try:
                if query_status(bus, timeout_s=0.5).chunks_done > 0:
                    break
            except DaemonUnavailable:
                pass
            assert time.monotonic() < end and proc.poll() is None, "the daemon did not start"
            time.sleep(0.1)
        assert "preview" not in query_status(bus, timeout_s=2).sinks
        refused = _cli(tmp_path, "studio")
        assert refused.returncode == 1 and "the Studio is off" in refused.stderr, refused.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert "Studio" not in out and "Studio page" not in err, out + err
