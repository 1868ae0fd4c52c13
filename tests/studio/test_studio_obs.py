"""The Studio's OBS controls against a real headless OBS Studio (Xvfb): the page lists OBS's scenes, switches
the program scene, and switches the OBS sink off and on."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from obs_harness import HeadlessObs, free_port  # noqa: E402
from studio_support import Page, running_studio, wait_for  # noqa: E402

from plugins.obs.client import ObsConnection  # noqa: E402

pytestmark = [pytest.mark.system("obs"), pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def obs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadlessObs]:
    proc = HeadlessObs(Path(tmp_path_factory.mktemp("obs-home")))
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


def test_page_lists_and_switches_obs_scenes_and_toggles_the_obs_sink(obs: HeadlessObs) -> None:
    conn = ObsConnection("127.0.0.1", obs.port, obs.password, 5.0)
    conn.call("CreateScene", {"sceneName": "studio break"})
    sink = {"enabled": True, "port": obs.port, "password": obs.password, "feed_port": free_port(), "timeout_s": 3.0,
            "source_name": "studio avatar", "scene": "studio live"}
    with running_studio(**{"sinks.obs": sink}) as (daemon, url):
        base, path = url.split("/login", 1)
        page = Page(base)
        assert page.request("/login" + path).status == 200
        wait_for(lambda: daemon.status().sinks.get("obs", "").endswith("chunks"), 30, "the OBS sink to run")
        scenes = page.request("/api/obs/scenes").json()
        assert {"studio break", "studio live"} <= set(scenes["scenes"]), scenes
        reply = page.request("/api/obs/scene", {"scene": "studio break"})
        assert reply.status == 200, reply.body
        assert conn.call("GetCurrentProgramScene")["currentProgramSceneName"] == "studio break"
        missing = page.request("/api/obs/scene", {"scene": "no such scene"})
        assert missing.status == 502 and "no such scene" in missing.json()["message"]
        assert page.request("/api/sinks/obs", {"enabled": False}).status == 200
        wait_for(lambda: daemon.status().sinks.get("obs") == "disabled", 10, "the OBS sink to close")
        assert page.request("/api/sinks/obs", {"enabled": True}).status == 200
        wait_for(lambda: daemon.status().sinks.get("obs", "") not in ("disabled", ""), 20, "the OBS sink to reopen")
        wait_for(lambda: daemon.studio.gates["obs"].state == "open", 20, "the new OBS sink open")
    conn.close()
