"""The Studio over HTTP, as the page uses it: login with the one-time link, refusals, state, health, controls.

A real daemon (lite engine, pushed audio) serves the page on a free loopback port; the requests are real HTTP.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from studio_support import SHARED_DATA, Page, running_studio, wait_for


def _login(url: str) -> Page:
    base, path = url.split("/login", 1)
    page = Page(base)
    reply = page.request("/login" + path)
    assert reply.status == 200, reply  # the redirect to / was followed with the cookie
    assert b"soulx-live Studio" in reply.body
    return page


def test_login_link_works_once_and_everything_else_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with running_studio() as (daemon, url):
        base = url.split("/login")[0]
        stranger = Page(base)
        for path in ("/", "/api/state", "/api/health", "/static/studio.js"):
            reply = stranger.request(path)
            assert reply.status == 401, (path, reply.status)
        assert b"Not logged in" in stranger.request("/").body
        assert stranger.request("/api/interrupt", {}).status == 401
        assert stranger.request("/login?code=wrong").status == 403
        page = _login(url)
        assert Page(base).request(url[len(base):]).status == 403  # the link is spent
        bad = Page(base)
        bad.jar.set_cookie(_cookie("soulx_studio", "not-the-secret"))
        assert bad.request("/api/state").status == 401
        assert page.request("/api/state").status == 200
        assert page.request("/static/studio.js").status == 200
        # a POST from another site's page is refused even with the cookie
        assert page.request("/api/interrupt", {}, headers={"Origin": "http://evil.example"}).status == 403
        code = url.split("code=")[1]
        secret = daemon.studio.auth.secret
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert code not in logged and secret not in logged  # neither the link's code nor the session secret is logged


def _cookie(name: str, value: str):  # type: ignore[no-untyped-def]
    import http.cookiejar

    return http.cookiejar.Cookie(0, name, value, None, False, "127.0.0.1", False, False, "/", True, False, None,
                                 True, None, None, {})


def test_state_health_say_interrupt_and_status() -> None:
    with running_studio() as (daemon, url):
        page = _login(url)
        state = page.request("/api/state").json()
        assert state["engine"] == "lite" and state["tts"]["available"]
        assert [s["name"] for s in state["sinks"] if s["enabled"]] == ["preview"]
        assert {s["name"]: s["state"] for s in state["sinks"] if not s["enabled"]} == {
            name: "off in the config" for name in ("recorder", "virtualcam", "virtualmic", "obs")}
        samples = []
        for _ in range(3):
            samples.append(page.request("/api/health").json())
            time.sleep(0.3)
        assert samples[-1]["chunks"] > samples[0]["chunks"]  # live figures, not a snapshot frozen at start
        assert samples[-1]["chunk_budget_s"] == pytest.approx(0.2)
        assert 0 < samples[-1]["chunk_compute_s"] < 5 and samples[-1]["memory_mb"] > 10
        said = page.request("/api/say", {"text": "Hello from the studio page.", "voice": "en-us", "rate": 200})
        assert said.status == 200, said.body
        assert said.json()["duration_s"] > 0.5
        wait_for(lambda: daemon.push_handler.status()["queued_s"] == 0.0 and daemon.push_handler.status()["played_s"] > 0.3,
                 15, "the speech to play")
        before = daemon.counters.interrupts
        reply = page.request("/api/interrupt", {})
        assert reply.status == 200 and daemon.counters.interrupts == before + 1
        assert page.request("/api/say", {"text": "   "}).json()["code"] == "empty"
        assert page.request("/api/say", {"text": "hi", "rate": 5}).json()["code"] == "bad_rate"
        assert page.request("/api/say", raw=b"[1,2").json()["code"] == "malformed"


def test_sink_toggle_closes_and_reopens_and_status_shows_it() -> None:
    with running_studio() as (daemon, url):
        page = _login(url)
        wait_for(lambda: daemon.status().sinks.get("preview", "").endswith("chunks"), 15, "the preview sink to run")
        assert page.request("/api/sinks/preview", {"enabled": False}).status == 200
        wait_for(lambda: daemon.status().sinks.get("preview") == "disabled", 5, "status to show the sink disabled")
        gate = daemon.studio.gates["preview"]
        wait_for(lambda: gate.inner is None, 5, "the sink to be closed")
        assert page.request("/api/state").json()["sinks"][0]["state"] == "disabled"
        assert page.request("/api/sinks/preview", {"enabled": True}).status == 200
        wait_for(lambda: gate.inner is not None and daemon.status().sinks["preview"] != "disabled", 5, "reopened")
        missing = page.request("/api/sinks/projector", {"enabled": True})
        assert missing.status == 404 and "virtualcam" in missing.json()["message"]


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_sinks_off_in_the_config_can_be_switched_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    isolation: str) -> None:
    """A recorder the config left off starts recording when switched on (a new file in the working folder); a
    virtual camera with no camera device to open says why, and the run goes on (also behind the hold filler of
    process isolation)."""
    monkeypatch.chdir(tmp_path)
    with running_studio(**{"supervisor.isolation": isolation}) as (daemon, url):
        page = _login(url)
        wait_for(lambda: daemon.status().chunks_done > 2, 15, "the session")
        assert page.request("/api/sinks/recorder", {"enabled": True}).status == 200
        wait_for(lambda: daemon.status().sinks.get("recorder", "").endswith("chunks"), 15, "the recorder to record")
        time.sleep(1.0)
        assert page.request("/api/sinks/recorder", {"enabled": False}).status == 200
        wait_for(lambda: any(tmp_path.glob("soulx-live-*.mp4")), 10, "the recording to be finished")
        assert page.request("/api/sinks/virtualcam", {"enabled": True}).status == 200
        wait_for(lambda: daemon.status().sinks.get("virtualcam", "").startswith("failed: "), 15, "the camera's failure")
        why = daemon.status().sinks["virtualcam"]
        state = {s["name"]: s for s in page.request("/api/state").json()["sinks"]}
        assert state["virtualcam"]["state"] == why and not state["virtualcam"]["enabled"]
        assert daemon.status().state == "running" and daemon.status().sinks["preview"].endswith("chunks")
    from studio_support import probe_frames

    assert probe_frames(next(tmp_path.glob("soulx-live-*.mp4"))) >= 20
    print("virtual camera switched on without a device:", why)


def test_avatar_without_a_face_is_refused_by_name() -> None:
    with running_studio() as (daemon, url):
        page = _login(url)
        first = daemon.status().session_id
        blank = cv2.imencode(".png", np.full((256, 256, 3), 180, np.uint8))[1].tobytes()
        reply = page.request("/api/avatar", raw=blank, headers={"Content-Type": "application/octet-stream"})
        assert reply.status == 422 and reply.json()["code"] == "no_face"
        assert reply.json()["message"].startswith("No face found")
        junk = page.request("/api/avatar", raw=b"not an image", headers={"Content-Type": "application/octet-stream"})
        assert junk.status == 415 and junk.json()["code"] == "bad_image"
        assert daemon.status().session_id == first  # nothing changed


@pytest.mark.skipif(not (SHARED_DATA / "portrait_girl.png").exists(), reason="the shared portraits sit beside the checkout")
def test_a_real_photo_is_accepted() -> None:
    with running_studio() as (daemon, url):
        page = _login(url)
        first = daemon.status().session_id
        ok = page.request("/api/avatar", raw=(SHARED_DATA / "portrait_girl.png").read_bytes(),
                          headers={"Content-Type": "application/octet-stream", "X-Filename": "portrait_girl.png"})
        assert ok.status == 200, ok.body
        wait_for(lambda: daemon.status().session_id != first, 10, "a new session")
        assert page.request("/api/state").json()["avatar"] == "portrait_girl.png"


def test_controls_that_need_what_this_run_lacks_say_how_to_get_it() -> None:
    with running_studio() as (daemon, url):
        page = _login(url)
        obs = page.request("/api/obs/scenes")
        assert obs.status == 409 and "sinks.obs.enabled" in obs.json()["message"]
        bad = page.request("/api/audio", {"source": "radio"})
        assert bad.status == 400 and "mic" in bad.json()["message"]
        none = page.request("/api/audio", {"source": "none"})
        assert none.status == 200


def test_preview_websocket_carries_frames_with_their_audio() -> None:
    """The page's stream: each binary message is one chunk, its JPEG frames and exactly their audio."""
    import asyncio
    import json
    import struct

    import aiohttp

    with running_studio() as (daemon, url):
        page = _login(url)
        cookie = {c.name: c.value for c in page.jar}
        base = url.split("/login")[0]

        async def read() -> tuple[list[dict], list[bytes], list[str]]:
            heads, bodies, texts = [], [], []
            async with aiohttp.ClientSession(cookies=cookie) as session:
                async with session.ws_connect(base + "/api/live") as ws:
                    while len(heads) < 3 or not texts:
                        msg = await asyncio.wait_for(ws.receive(), 10)
                        if msg.type == aiohttp.WSMsgType.BINARY:
                            n = struct.unpack("<I", msg.data[:4])[0]
                            heads.append(json.loads(msg.data[4:4 + n]))
                            bodies.append(msg.data[4 + n:])
                        elif msg.type == aiohttp.WSMsgType.TEXT:
                            texts.append(msg.data)
            return heads, bodies, texts

        heads, bodies, texts = asyncio.run(read())
        async def refused() -> int:
            async with aiohttp.ClientSession() as session:
                try:
                    async with session.ws_connect(base + "/api/live"):
                        return 101
                except aiohttp.WSServerHandshakeError as exc:
                    return exc.status
        assert asyncio.run(refused()) == 401
    for head, body in zip(heads, bodies):
        assert head["type"] == "chunk" and head["fps"] == 25 and head["sample_rate"] == 16000
        offset = 0
        for size in head["sizes"]:
            frame = cv2.imdecode(np.frombuffer(body[offset:offset + size], np.uint8), cv2.IMREAD_COLOR)
            assert frame.shape == (128, 128, 3)
            offset += size
        audio = np.frombuffer(body[offset:], "<i2")
        assert audio.shape[0] == len(head["sizes"]) * 640  # one frame period of samples per frame
    firsts = [h["first_frame"] for h in heads]
    assert firsts == sorted(firsts) and len(set(firsts)) == len(firsts)
    assert json.loads(texts[0])["type"] == "health"


def test_push_api_shares_the_studio_port() -> None:
    from soulx_live.push.token import load_token

    with running_studio(**{"push.enabled": True, "push.http_enabled": True, "push.http_port": 0}) as (daemon, url):
        base = url.split("/login")[0]
        wait_for(lambda: daemon.push.server is not None, 10, "the push server")
        assert daemon.push.server.http_url == base
        client = Page(base)
        assert client.request("/v1/status").status == 401  # the push token, not the Studio's cookie
        token = load_token(daemon.config)
        reply = client.request("/v1/say", {"text": "Pushed through the studio port."},
                               headers={"Authorization": f"Bearer {token}"})
        assert reply.status == 200, reply.body
        assert reply.json()["duration_s"] > 0.5
        status = client.request("/v1/status", headers={"Authorization": f"Bearer {token}"}).json()
        assert status["status"]["utterances"] == 1

        async def events() -> list[str]:  # the push API's event WebSocket, through the Studio's server
            import aiohttp

            kinds: list[str] = []
            async with aiohttp.ClientSession() as session, \
                    session.ws_connect(f"{base}/v1/events?token={token}") as ws:
                await ws.send_str('{"type": "say", "text": "Events through the shared port."}')
                while "finished" not in kinds:
                    msg = await asyncio.wait_for(ws.receive(), 20)
                    kind = json.loads(msg.data).get("kind")
                    if kind:
                        kinds.append(kind)
            return kinds

        import asyncio
        import json

        assert "started" in asyncio.run(events())


def test_recorder_switched_off_and_on_keeps_both_recordings(tmp_path: Path) -> None:
    from studio_support import probe_frames

    from soulx_live.control.client import query_status

    out = tmp_path / "rec.mp4"
    with running_studio(**{"sinks.recorder.enabled": True, "sinks.recorder.path": str(out)}) as (daemon, url):
        page = _login(url)
        wait_for(lambda: daemon.status().sinks.get("recorder", "").endswith("chunks"), 15, "the recorder to run")
        time.sleep(1.0)
        assert page.request("/api/sinks/recorder", {"enabled": False}).status == 200
        wait_for(lambda: out.exists(), 10, "the first recording to be finished")
        assert query_status(daemon.config.bus, timeout_s=2).sinks["recorder"] == "disabled"  # soulx-live status
        assert page.request("/api/sinks/recorder", {"enabled": True}).status == 200
        wait_for(lambda: query_status(daemon.config.bus, timeout_s=2).sinks["recorder"] != "disabled", 10, "reopen")
        time.sleep(1.0)
    second = tmp_path / "rec-2.mp4"
    assert probe_frames(out) >= 20 and probe_frames(second) >= 10


def _built_in_face_png(size: int = 256) -> bytes:
    """A portrait with a face the detector finds, made by the project (the lite engine's built-in avatar)."""
    from engine.lite.engine import LiteConfig, LiteEngine

    reference = LiteEngine(LiteConfig(width=size, height=size))._default_renderer().reference
    return cv2.imencode(".png", cv2.cvtColor(np.asarray(reference), cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_new_avatar_starts_a_new_session_that_continues_the_frame_timeline(isolation: str) -> None:
    """In this process and in the engine worker (StartSession with first_frame) the engine replaces its session,
    and the sinks see the frame timeline go on."""
    from studio_support import ProbeSink

    probe = ProbeSink(name="probe")
    with running_studio(**{"supervisor.isolation": isolation}, sink_factory=lambda config: [probe]) as (daemon, url):
        assert daemon.isolation == isolation
        page = _login(url)
        wait_for(lambda: len(probe.snapshot()) > 5, 30, "chunks from the worker")
        first = daemon.status().session_id
        reply = page.request("/api/avatar", raw=_built_in_face_png(),
                             headers={"Content-Type": "application/octet-stream", "X-Filename": "face.png"})
        assert reply.status == 200, reply.body
        wait_for(lambda: daemon.status().session_id != first, 10, "the new session")
        new_id = daemon.status().session_id
        wait_for(lambda: sum(1 for w in probe.snapshot() if w.first_frame > 0 and w.epoch >= 1) > 5, 20,
                 "chunks of the new session")
    writes = probe.snapshot()
    later = [w for w in writes if w.epoch >= 1]
    earlier = [w for w in writes if w.epoch == 0]
    assert earlier and later
    assert later[0].first_frame >= earlier[-1].first_frame + earlier[-1].n  # the timeline goes on, never back
    assert new_id != first


def test_open_browser_opens_the_login_link(monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", opened.append)  # the system browser itself is the boundary here
    with running_studio(**{"studio.open_browser": True}) as (_daemon, url):
        assert opened == [url]
        assert _login(url) is not None
