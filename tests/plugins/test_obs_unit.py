"""OBS plugin without OBS: a fake obsws-python ``ReqClient`` at the adapter boundary, and a real PyAV reader for the feed."""
from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

pytest.importorskip("obsws_python", reason='the OBS sink needs the [obs] extra: pip install -e ".[obs]" (or ".[all]")')
from obsws_python.error import OBSSDKError, OBSSDKRequestError, OBSSDKTimeoutError

from engine.interface import ChunkSpec, FrameChunk
from plugins.obs.client import Backoff, ObsConnection, ObsError
from plugins.obs.feed import FeedServer, feed_url
from plugins.obs.setup import FEED_INPUT_KIND, ensure_source, feed_input_settings
from plugins.obs.sink import ObsSink
from plugins.settings import ObsConfig

PASSWORD = "s3cret-Pa55-xyz"


class FakeObs:
    """In-memory obs-websocket: the requests the plugin uses, with obsws-python's error types."""

    def __init__(self) -> None:
        self.scenes: list[str] = ["Scene"]
        self.inputs: dict[str, dict[str, Any]] = {}
        self.items: dict[str, list[str]] = {"Scene": []}
        self.program = "Scene"
        self.calls: list[tuple[str, dict[str, Any] | None]] = []
        self.up = True
        self.transforms: dict[int, dict[str, Any]] = {}

    def connector(self, host: str, port: int, password: str, timeout_s: float) -> FakeObs.Client:
        if not self.up:
            raise ConnectionRefusedError(111, "Connection refused")
        if password != PASSWORD:
            raise OBSSDKError("failed to identify client with the server, please check connection settings")
        return FakeObs.Client(self)

    class Client:
        def __init__(self, obs: FakeObs) -> None:
            self.obs, self.open = obs, True

        def disconnect(self) -> None:
            self.open = False

        def send(self, param: str, data: dict[str, Any] | None = None, raw: bool = False) -> Any:
            if not self.obs.up or not self.open:
                raise BrokenPipeError(32, "Broken pipe")
            return self.obs.handle(param, data or {})

    def fail(self, req: str, code: int) -> None:
        raise OBSSDKRequestError(req, code, "fake")

    def handle(self, req: str, d: dict[str, Any]) -> Any:
        self.calls.append((req, d))
        if req == "GetVersion":
            return {"obsVersion": "29.0.2"}
        if req == "GetSceneList":
            return {"scenes": [{"sceneName": s} for s in self.scenes]}
        if req == "CreateScene":
            if d["sceneName"] in self.scenes:
                self.fail(req, 601)
            self.scenes.append(d["sceneName"])
            self.items[d["sceneName"]] = []
            return None
        if req == "GetInputList":
            return {"inputs": [{"inputName": n, "inputKind": i["kind"]} for n, i in self.inputs.items()]}
        if req == "CreateInput":
            if d["inputName"] in self.inputs:
                self.fail(req, 601)
            self.inputs[d["inputName"]] = {"kind": d["inputKind"], "settings": dict(d["inputSettings"])}
            self.items[d["sceneName"]].append(d["inputName"])
            return {"inputUuid": "x", "sceneItemId": len(self.items[d["sceneName"]])}
        if req == "GetInputSettings":
            return {"inputSettings": dict(self.inputs[d["inputName"]]["settings"]), "inputKind": "ffmpeg_source"}
        if req == "SetInputSettings":
            self.inputs[d["inputName"]]["settings"].update(d["inputSettings"])
            return None
        if req == "GetSceneItemId":
            items = self.items.get(d["sceneName"], [])
            if d["sourceName"] not in items:
                self.fail(req, 600)
            return {"sceneItemId": items.index(d["sourceName"]) + 1}
        if req == "CreateSceneItem":
            self.items[d["sceneName"]].append(d["sourceName"])
            return {"sceneItemId": len(self.items[d["sceneName"]])}
        if req == "GetVideoSettings":
            return {"baseWidth": 1280, "baseHeight": 720, "outputWidth": 1280, "outputHeight": 720}
        if req == "SetSceneItemTransform":
            self.transforms[d["sceneItemId"]] = d["sceneItemTransform"]
            return None
        if req == "SetCurrentProgramScene":
            if d["sceneName"] not in self.scenes:
                self.fail(req, 600)
            self.program = d["sceneName"]
            return None
        raise AssertionError(f"unexpected request {req}")

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def fake() -> FakeObs:
    return FakeObs()


def conn(fake: FakeObs, password: str = PASSWORD) -> ObsConnection:
    return ObsConnection("127.0.0.1", 4455, password, 1.0, connector=fake.connector)


# -- setup -------------------------------------------------------------------------------------------


def test_ensure_source_creates_scene_and_low_latency_media_source(fake: FakeObs) -> None:
    report = ensure_source(conn(fake), "Avatar", "avatar", "tcp://127.0.0.1:5000")
    assert "Avatar" in fake.scenes and fake.items["Avatar"] == ["avatar"]
    source = fake.inputs["avatar"]
    assert source["kind"] == FEED_INPUT_KIND
    s = source["settings"]
    assert s["input"] == "tcp://127.0.0.1:5000" and s["is_local_file"] is False
    assert s["reconnect_delay_sec"] == 1 and s["close_when_inactive"] is False and "nobuffer" in s["ffmpeg_options"]
    t = fake.transforms[report.scene_item_id]
    assert (t["boundsWidth"], t["boundsHeight"], t["boundsType"]) == (1280.0, 720.0, "OBS_BOUNDS_SCALE_INNER")
    assert fake.program == "Scene", "setup must not switch the live program scene unless asked"
    assert any("created Media Source" in a for a in report.actions)


def test_ensure_source_is_idempotent_and_repoints_a_moved_feed(fake: FakeObs) -> None:
    c = conn(fake)
    ensure_source(c, "Avatar", "avatar", "tcp://127.0.0.1:5000")
    fake.calls.clear()
    again = ensure_source(c, "Avatar", "avatar", "tcp://127.0.0.1:5000")
    assert "SetInputSettings" not in fake.names() and "CreateInput" not in fake.names()  # would restart the source
    assert not any("created" in a for a in again.actions)
    moved = ensure_source(c, "Avatar", "avatar", "tcp://127.0.0.1:6000", show_scene=True)
    assert fake.inputs["avatar"]["settings"]["input"] == "tcp://127.0.0.1:6000"
    assert any("pointed" in a for a in moved.actions) and fake.program == "Avatar"
    assert not any("fitted" in a for a in again.actions + moved.actions), "a placed item keeps where the user put it"


def test_existing_source_added_to_another_scene(fake: FakeObs) -> None:
    c = conn(fake)
    ensure_source(c, "A", "avatar", "tcp://127.0.0.1:5000")
    report = ensure_source(c, "B", "avatar", "tcp://127.0.0.1:5000")
    assert fake.items["B"] == ["avatar"] and any("added" in a for a in report.actions)


def test_name_taken_by_another_kind_is_a_conflict_naming_the_fix(fake: FakeObs) -> None:
    fake.inputs["avatar"] = {"kind": "image_source", "settings": {}}
    with pytest.raises(ObsError) as err:
        ensure_source(conn(fake), "Avatar", "avatar", "tcp://127.0.0.1:5000")
    assert err.value.kind == "conflict" and "sinks.obs.source_name" in str(err.value)


def test_feed_settings_and_url() -> None:
    assert feed_input_settings("tcp://h:1")["input"] == "tcp://h:1"
    assert feed_url("0.0.0.0", 47870) == "tcp://127.0.0.1:47870"
    assert feed_url("::1", 5) == "tcp://[::1]:5"


# -- client errors, secrets, reconnect -------------------------------------------------------------


def test_unreachable_obs_names_the_websocket_setting(fake: FakeObs) -> None:
    fake.up = False
    with pytest.raises(ObsError) as err:
        conn(fake).call("GetVersion")
    assert err.value.kind == "unreachable"
    assert "WebSocket Server Settings" in str(err.value) and "4455" in str(err.value)


def test_wrong_password_is_an_auth_error_without_the_password(fake: FakeObs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng-Pa55-abc"
    c = conn(fake, wrong)
    with pytest.raises(ObsError) as err:
        c.connect()
    assert err.value.kind == "auth" and "sinks.obs.password" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert wrong not in str(err.value) and wrong not in repr(c) and wrong not in caplog.text


def test_missing_password_says_so() -> None:
    def needs_password(*_: object) -> object:
        raise OBSSDKError("authentication enabled but no password provided")

    with pytest.raises(ObsError, match="requires a WebSocket password"):
        ObsConnection("127.0.0.1", 4455, None, 1.0, connector=needs_password).connect()


def test_obsws_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="obsws_python")  # setup_logging (run by CLI tests) quiets it to WARNING
    ObsConnection("127.0.0.1", 4455, PASSWORD, 1.0, connector=FakeObs().connector)
    logger = logging.getLogger("obsws_python.baseclient.ObsClient")
    logger.info(f"Connecting with parameters: host='h' port=1 password='{PASSWORD}' subs=0 timeout=5")  # as obsws-python does
    logger.error("boom with %s inside", PASSWORD)
    assert PASSWORD not in caplog.text and "password='***'" in caplog.text
    assert all(r.levelno < logging.WARNING for r in caplog.records if r.name.startswith("obsws_python"))  # tracebacks demoted


def test_lost_connection_reconnects_on_next_call(fake: FakeObs) -> None:
    c = conn(fake)
    c.call("GetVersion")
    fake.up = False
    with pytest.raises(ObsError) as err:
        c.call("GetVersion")
    assert err.value.kind == "disconnected" and not c.connected
    fake.up = True
    assert c.call("GetVersion")["obsVersion"] == "29.0.2" and c.connects == 2


def test_timeouts_and_request_errors_are_typed() -> None:
    class Slow:
        def send(self, *_: object, **__: object) -> object:
            raise OBSSDKTimeoutError("Timeout while trying to send the request")

        def disconnect(self) -> None:
            pass

    c = ObsConnection("h", 1, PASSWORD, 0.5, connector=lambda *a: Slow())
    with pytest.raises(ObsError) as err:
        c.call("GetVersion")
    assert err.value.kind == "timeout" and not c.connected
    with pytest.raises(ObsError) as err2:
        conn(FakeObs()).call("SetCurrentProgramScene", {"sceneName": "nope"})
    assert err2.value.kind == "request" and err2.value.code == 600


def test_backoff() -> None:
    b = Backoff((0.1, 0.5))
    assert [b.next(), b.next(), b.next()] == [0.1, 0.5, 0.5]
    b.reset()
    assert b.next() == 0.1


# -- the feed, read back by a real demuxer ---------------------------------------------------------


def _frames(n: int, value: int, h: int = 48, w: int = 64) -> np.ndarray:
    f = np.zeros((n, h, w, 3), np.uint8)
    f[..., 0], f[..., 1], f[..., 2] = value, 255 - value, 7
    f[:, :8, :8] = 255
    return f


def _read(url: str, n: int) -> tuple[list[np.ndarray], int]:
    frames, samples = [], 0
    with av.open(url, format="nut", options={"fflags": "nobuffer"}, timeout=5) as c:
        for pkt in c.demux():
            for fr in pkt.decode():
                if isinstance(fr, av.VideoFrame):
                    frames.append(fr.to_ndarray(format="rgb24"))
                else:
                    samples += fr.samples
            if len(frames) >= n:
                return frames, samples
    return frames, samples


def test_feed_serves_exact_frames_paced_and_accepts_a_new_reader() -> None:
    feed = FeedServer("127.0.0.1", 0, width=64, height=48, fps=25, sample_rate=16000)
    feed.start()
    stop = threading.Event()

    def produce() -> None:
        k = 0
        while not stop.is_set():
            feed.push(_frames(5, (k * 37) % 250), np.full(3200, 0.5, np.float32))
            k += 1
            time.sleep(0.2)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        for _ in range(2):  # a second reader after the first hung up (OBS restart / source re-created)
            start = time.monotonic()
            frames, samples = _read(feed.url, 20)
            elapsed = time.monotonic() - start
            assert len(frames) == 20 and frames[-1].shape == (48, 64, 3)
            assert all(int(f[0, 0, 0]) == 255 and int(f[20, 20, 2]) == 7 for f in frames)  # pixels survive BGRA exactly
            assert any(int(f[20, 20, 0]) + int(f[20, 20, 1]) == 255 for f in frames)
            assert samples >= 19 * 640
            assert elapsed > 0.5, "frames must be paced at 25 fps, not sent in a burst"
        assert feed.stats.connections == 2
    finally:
        stop.set()
        t.join()
        feed.close()


def test_feed_waits_idle_for_the_first_frame() -> None:
    import socket

    feed = FeedServer("127.0.0.1", 0, width=64, height=48, fps=25, sample_rate=16000)
    feed.start()
    try:
        with socket.create_connection(("127.0.0.1", feed.port), timeout=2):
            _until(lambda: feed.stats.connected)
            cpu = time.process_time()
            time.sleep(0.5)
            assert time.process_time() - cpu < 0.15, "a connected reader with no frames must not spin the sender"
            assert feed.stats.frames_sent == 0
    finally:
        feed.close()


def test_feed_port_taken_names_the_setting() -> None:
    first = FeedServer("127.0.0.1", 0, width=64, height=48, fps=25, sample_rate=16000)
    first.start()
    try:
        with pytest.raises(OSError, match="sinks.obs.feed_port"):
            FeedServer("127.0.0.1", first.port, width=64, height=48, fps=25, sample_rate=16000).start()
    finally:
        first.close()


def test_feed_trims_a_standing_backlog_only_in_silence() -> None:
    feed = FeedServer("127.0.0.1", 0, width=64, height=48, fps=25, sample_rate=16000, max_queue_frames=20, trim_window=10)

    def run_ticks(audio: float, chunks: int) -> int:
        taken = 0
        feed.push(_frames(3, 0), np.full(3 * 640, audio, np.float32))  # a standing backlog of 3 frames
        for _ in range(chunks):
            feed.push(_frames(5, 1), np.full(3200, audio, np.float32))
            for _ in range(5):
                taken += feed._next_item(due=0.0) is not None
        return taken

    assert run_ticks(0.5, 6) == 30 and feed.stats.frames_trimmed == 0, "speech is never cut"
    feed.clear()
    run_ticks(0.0, 6)
    assert feed.stats.frames_trimmed >= 2 and feed.queued() <= 1, "silence lets the backlog drain"


# -- the sink --------------------------------------------------------------------------------------

SPEC = ChunkSpec(fps=Fraction(25), sample_rate=16000, frames_per_chunk=5, height=48, width=64)


def _sink(fake: FakeObs, **cfg: Any) -> ObsSink:
    config = ObsConfig(enabled=True, password=PASSWORD, feed_port=_free_port(), **cfg)
    return ObsSink(config, connector=fake.connector, retry_delays=(0.05,))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sink_binds_when_obs_appears_and_after_a_restart(fake: FakeObs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("plugins.obs.sink.HEARTBEAT_S", 0.05)
    fake.up = False
    sink = _sink(fake)
    sink.open(SPEC)
    try:
        time.sleep(0.3)
        assert not sink.bound and sink.last_error is not None and sink.last_error.kind == "unreachable"
        fake.up = True
        assert sink.wait_bound(3)
        assert fake.inputs["soulx-live avatar"]["settings"]["input"] == sink.feed.url
        fake.up = False  # OBS quits ...
        deadline = time.monotonic() + 3
        while sink.bound and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not sink.bound
        fake.up = True  # ... and comes back
        assert sink.wait_bound(3) and sink.binds == 2 and sink.obs.connects >= 2
    finally:
        sink.close()


def test_sink_write_never_blocks_and_interrupt_drops_queued_frames(fake: FakeObs) -> None:
    fake.up = False  # no OBS, no reader: writes still return at once
    sink = _sink(fake)
    sink.open(SPEC)
    try:
        t0 = time.monotonic()
        for k in range(50):
            sink.write(FrameChunk("s", k, 5 * k, _frames(5, k), np.zeros(3200, np.float32), 3200 * k))
        assert time.monotonic() - t0 < 1.0
        assert sink.feed.queued() <= 250
        sink.interrupt(1)
        assert sink.feed.queued() == 0
        sink.write(FrameChunk("s", 99, 500, _frames(5, 1), np.zeros(3200, np.float32), 0, epoch=0))  # stale epoch
        assert sink.feed.queued() == 0
        sink.write(FrameChunk("s", 100, 505, _frames(5, 1), np.zeros(3200, np.float32), 0, epoch=1))
        assert sink.feed.queued() == 5
    finally:
        sink.close()
        sink.close()


def test_on_speech_switches_scenes_when_configured(fake: FakeObs) -> None:
    fake.scenes += ["Talking", "Idle"]
    sink = _sink(fake, speaking_scene="Talking", idle_scene="Idle")
    sink.open(SPEC)
    try:
        assert sink.wait_bound(3)
        sink.on_speech(True)
        _until(lambda: fake.program == "Talking")
        sink.on_speech(False)
        _until(lambda: fake.program == "Idle")
    finally:
        sink.close()


def test_on_speech_without_scenes_does_nothing(fake: FakeObs) -> None:
    sink = _sink(fake)
    sink.open(SPEC)
    try:
        assert sink.wait_bound(3)
        sink.on_speech(True)
        time.sleep(0.2)
        assert "SetCurrentProgramScene" not in fake.names()
    finally:
        sink.close()


def _until(cond: Any, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# -- the CLI command ---------------------------------------------------------------------------------


def _run_command(fake: FakeObs, monkeypatch: pytest.MonkeyPatch, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    import argparse

    from soulx_live.commands import obs as command
    from soulx_live.config import load_config

    monkeypatch.setattr("plugins.obs.client.connect_obsws", fake.connector)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(argv)

    def load(_args: object, extra: dict[str, object] | None = None) -> object:
        return load_config(None, overrides={"sinks.obs.password": PASSWORD, "sinks.obs.feed_port": "47999", **(extra or {})})

    code = command.run(args, load)
    return code, capsys.readouterr().out


def test_obs_setup_command_creates_the_source_and_says_what_it_did(fake: FakeObs, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run_command(fake, monkeypatch, ["setup", "--scene", "Live"], capsys)
    assert code == 0 and fake.inputs["soulx-live avatar"]["settings"]["input"] == "tcp://127.0.0.1:47999"
    assert "created scene 'Live'" in out and "tcp://127.0.0.1:47999" in out and PASSWORD not in out
    fake.up = False
    code, out = _run_command(fake, monkeypatch, ["setup"], capsys)
    assert code == 1 and "WebSocket Server Settings" in out
