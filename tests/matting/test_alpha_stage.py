"""Alpha through the run: the lite renderer's moving matte, the stage for engines without one, the frame bus,
the OBS feed's BGRA read back by a real demuxer, the virtual camera's opaque background, and the factory."""
from __future__ import annotations

import shutil
import tempfile
import threading
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from matte_support import iou, soft_disc

from engine.interface import ChunkSpec, FrameChunk, SessionRequest
from engine.lite.animator import HeadPose
from engine.lite.engine import LiteConfig, LiteEngine
from engine.matting.segmenter import PersonSegmenter
from engine.matting.stage import AlphaEngine, AlphaSession
from plugins.frame_fit import FrameFitter
from plugins.matte import Backdrop, MatteKeeper, parse_colour, unmix_edges
from plugins.obs.feed import FeedServer
from plugins.settings import ObsConfig, VirtualCamConfig
from soulx_live.bus import FramePublisher, FrameSubscriber
from soulx_live.config import BusConfig, SoulxConfig
from soulx_live.factory.engine import alpha_wanted, build_engine
from soulx_live.runtime_dir import endpoint

SILENCE = np.zeros(16000, np.float32)


def test_lite_moves_the_portraits_matte_with_the_head() -> None:
    engine = LiteEngine(LiteConfig())
    session = engine.start_session(SessionRequest("a", extra={"alpha": True}))
    renderer = session.renderer
    assert renderer.matte is not None
    out, alpha = np.empty((512, 512, 3), np.uint8), np.empty((512, 512), np.uint8)
    pose = HeadPose(dx=30.0, dy=0.0, roll_deg=6.0, breath=0.0)
    renderer.render(pose=pose, out=out, alpha_out=alpha)
    still = renderer.matte
    assert np.abs(alpha.astype(int) - still.astype(int)).mean() > 2.0  # it moved...
    # ...with the picture: segmenting the moved frame afresh agrees with the warped matte
    assert iou(alpha, PersonSegmenter().matte(out) >= 128) > 0.95
    assert iou(alpha, still >= 128) < iou(alpha, PersonSegmenter().matte(out) >= 128)
    session.push_audio(SILENCE)
    chunk = session.next_chunk()
    assert chunk.alpha is not None and chunk.alpha.shape == chunk.frames.shape[:3]


def test_lite_without_alpha_has_none_and_alpha_out_needs_a_matte() -> None:
    session = LiteEngine(LiteConfig()).start_session(SessionRequest("a"))
    session.push_audio(SILENCE)
    assert session.next_chunk().alpha is None
    with pytest.raises(ValueError, match="matte"):
        session.renderer.render(alpha_out=np.empty((512, 512), np.uint8))


class _PhotoEngine:
    """An engine without alpha of its own (as the diffusion engines): frames of the built-in avatar, shifting."""

    name = "photo"

    def __init__(self) -> None:
        self.spec = ChunkSpec(Fraction(25), 16000, 4, 256, 256)
        from engine.lite.default_avatar import draw_default_avatar

        self.image = cv2.resize(draw_default_avatar(512), (256, 256), interpolation=cv2.INTER_AREA)
        self.requests: list[SessionRequest] = []

    def start_session(self, request: SessionRequest) -> _PhotoSession:
        self.requests.append(request)
        return _PhotoSession(self)


class _PhotoSession:
    session_id = "p"

    def __init__(self, engine: _PhotoEngine) -> None:
        self.engine, self.seq = engine, 0
        self.phonemes: list[object] = []

    def push_audio(self, pcm: np.ndarray) -> None:
        pass

    def push_phonemes(self, spans: list[object]) -> None:
        self.phonemes.extend(spans)

    def chunks_ready(self) -> int:
        return 1

    def reset(self) -> None:
        pass

    def next_chunk(self) -> FrameChunk:
        spec = self.engine.spec
        frames = np.stack([np.roll(self.engine.image, self.seq * 4 + i, axis=1) for i in range(spec.frames_per_chunk)])
        chunk = FrameChunk("p", self.seq, self.seq * 4, frames, np.zeros(4 * 640, np.float32), self.seq * 4 * 640)
        self.seq += 1
        return chunk


def test_stage_segments_engines_without_alpha_and_passes_the_rest_through() -> None:
    inner = _PhotoEngine()
    engine = AlphaEngine(inner)
    assert engine.spec == inner.spec and engine.name == "photo"
    session = engine.start_session(SessionRequest("p", extra={"realtime": True}))
    assert inner.requests[0].extra == {"realtime": True, "alpha": True}
    session.push_phonemes([(0, 10, "a")])  # optional methods reach the engine's session
    assert session.inner.phonemes == [(0, 10, "a")]
    chunk = session.next_chunk()
    assert chunk.alpha is not None and chunk.alpha.shape == (4, 256, 256)
    assert chunk.alpha[:, 128, 128].min() > 240 and chunk.alpha[:, 5, 5].max() < 15
    assert session.segmented_frames == 4 and session.segment_s > 0
    lite = AlphaEngine(LiteEngine(LiteConfig(width=256, height=256))).start_session(SessionRequest("l"))
    lite.push_audio(SILENCE)
    assert lite.next_chunk().alpha is not None and lite.segmented_frames == 0  # the lite matte, no network per frame


def test_the_bus_carries_alpha_bit_exact() -> None:
    root = Path(tempfile.mkdtemp(prefix="sxalpha-"))
    try:
        cfg = BusConfig(runtime_dir=root / "rt")
        spec = ChunkSpec(Fraction(25), 16000, 2, 24, 40)
        rng = np.random.default_rng(1)
        frames = rng.integers(0, 256, (2, 24, 40, 3), dtype=np.uint8)
        alpha = rng.integers(0, 256, (2, 24, 40), dtype=np.uint8)
        with FramePublisher(endpoint("frames", cfg)) as pub, FrameSubscriber(endpoint("frames", cfg)) as sub:
            assert pub.wait_for_subscribers(1, timeout_s=10)
            audio = np.zeros(1280, np.float32)
            assert pub.publish(FrameChunk("s", 0, 0, frames, audio, 0, alpha=alpha), spec)
            assert pub.publish(FrameChunk("s", 1, 2, frames, audio, 1280), spec)
            got, plain = sub.recv(5000), sub.recv(5000)
        assert isinstance(got, FrameChunk) and got.alpha is not None and np.array_equal(got.alpha, alpha)
        assert isinstance(plain, FrameChunk) and plain.alpha is None
        with pytest.raises(ValueError, match="alpha must be uint8"):
            FramePublisher.publish(pub, FrameChunk("s", 2, 4, frames, audio, 2560, alpha=alpha[:1]), spec)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _read_bgra(url: str, n: int) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    with av.open(url, format="nut", options={"fflags": "nobuffer"}, timeout=5) as c:
        for pkt in c.demux(video=0):
            for fr in pkt.decode():
                out.append(fr.to_ndarray(format="bgra"))
            if len(out) >= n:
                break
    return out


def test_the_obs_feed_carries_the_matte_as_bgra_alpha() -> None:
    feed = FeedServer("127.0.0.1", 0, width=32, height=16, fps=25, sample_rate=16000)
    feed.start()
    frames = np.zeros((5, 16, 32, 3), np.uint8)
    frames[..., 0] = 200
    alpha = np.zeros((5, 16, 32), np.uint8)
    alpha[:, :, 16:] = 255
    alpha[:, :, 8] = 77
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            feed.push(frames, np.zeros(3200, np.float32), alpha)
            stop.wait(0.2)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        got = _read_bgra(feed.url, 6)
    finally:
        stop.set()
        t.join()
        feed.close()
    assert len(got) >= 6
    for bgra in got:
        assert np.array_equal(bgra[..., 3], alpha[0]) and int(bgra[0, 0, 2]) == 200
    with pytest.raises(ValueError, match="alpha of shape"):
        feed.push(frames, np.zeros(3200, np.float32), alpha[:, :8])


def test_matte_keeper_reuses_the_last_matte_for_hold_frames() -> None:
    keeper = MatteKeeper()
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    audio = np.zeros(1280, np.float32)
    assert keeper.alpha_of(FrameChunk("s", 0, 0, frames, audio, 0)) is None  # none yet: opaque
    a = np.arange(32, dtype=np.uint8).reshape(2, 4, 4)
    assert keeper.alpha_of(FrameChunk("s", 1, 2, frames, audio, 1280, alpha=a)) is a
    held = keeper.alpha_of(FrameChunk("s", 2, 4, frames, audio, 2560))
    assert held is not None and held.shape == (2, 4, 4) and np.array_equal(held[0], a[-1])
    assert keeper.reused_frames == 2


def test_backdrop_colour_and_image_fill_the_output(tmp_path: Path) -> None:
    assert parse_colour("#00b140") == (0, 177, 64) and parse_colour("bg.png") is None and parse_colour("#zzzzzz") is None
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 100
    rgba[:, 4:, 3] = 255  # the right half is the person
    fitter = FrameFitter(16, 8, "letterbox")  # the 8x8 frame lands at x 4..12, bars either side
    out = Backdrop("#ff0000").over(rgba, fitter)
    assert out.shape == (8, 16, 3)
    assert out[4, 0].tolist() == [255, 0, 0] and out[4, 5].tolist() == [255, 0, 0]  # a bar; the cut-away background
    assert out[4, 10].tolist() == [100, 100, 100]  # the person
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = (255, 0, 0)  # BGR: blue left half, red right half
    img[:, 20:] = (0, 0, 255)
    path = tmp_path / "bg.png"
    cv2.imwrite(str(path), img)
    backdrop = Backdrop(str(path))
    out = backdrop.over(rgba, fitter)
    assert out[4, 0].tolist() == [0, 0, 255] and out[4, 15].tolist() == [255, 0, 0]  # the image fills the bars too
    assert out[4, 5].tolist() == [0, 0, 255] and out[4, 10].tolist() == [100, 100, 100]
    assert backdrop.pad_rgb == (128, 0, 128)
    with pytest.raises(ValueError, match="neither a #rrggbb colour nor a readable image"):
        Backdrop(str(tmp_path / "missing.png"))


def test_settings_validate_the_background(tmp_path: Path) -> None:
    assert VirtualCamConfig(alpha=True).background == "#00b140"
    with pytest.raises(ValueError, match="#rrggbb"):
        VirtualCamConfig(background="#12345")
    with pytest.raises(ValueError, match="does not exist"):
        VirtualCamConfig(background=str(tmp_path / "none.jpg"))
    assert ObsConfig(alpha=True).alpha


def test_the_factory_adds_the_stage_only_when_a_sink_wants_alpha() -> None:
    plain = SoulxConfig()
    assert not alpha_wanted(plain)
    assert not isinstance(build_engine(plain), AlphaEngine)
    wants = SoulxConfig.model_validate({"sinks": {"obs": {"enabled": True, "alpha": True}}})
    assert alpha_wanted(wants)
    engine = build_engine(wants)
    assert isinstance(engine, AlphaEngine)
    session = engine.start_session(SessionRequest("x"))
    assert isinstance(session, AlphaSession)
    session.push_audio(SILENCE)
    assert session.next_chunk().alpha is not None
    off = SoulxConfig.model_validate({"sinks": {"obs": {"enabled": False, "alpha": True}}})
    assert not alpha_wanted(off)


def test_a_missing_model_stops_the_start_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from soulx_live.config import load_config
    from soulx_live.errors import DaemonError
    from soulx_live.factory.sinks import build_sinks

    missing = str(tmp_path / "gone.tflite")
    monkeypatch.setenv("SOULX_MATTE_MODEL", missing)
    config = load_config(env={"SOULX_MATTE_MODEL": missing})  # the model's variable is not a config key
    wants = config.model_copy(update={"sinks": config.sinks.model_copy(update={"obs": ObsConfig(enabled=True, alpha=True)})})
    with pytest.raises(DaemonError, match="does not exist"):
        build_sinks(wants)  # in the daemon, before any engine worker starts
    with pytest.raises(DaemonError, match="does not exist"):
        build_engine(wants)


def test_unmix_edges_gives_the_edge_band_the_persons_colour() -> None:
    """A known person colour F mixed over a known background B by a soft disc matte: the edge band's estimate is far
    closer to F than the mixed pixels are; solid person pixels stay exactly as they were."""
    frame, alpha, person = soft_disc(256, 90, 8)
    out = unmix_edges(frame[None], alpha[None])[0]
    band = (alpha > 10) & (alpha < 245)
    before = np.abs(frame[band].astype(np.float32) - person[band]).mean()
    after = np.abs(out[band].astype(np.float32) - person[band]).mean()
    assert band.sum() > 500 and after < before / 3
    solid = alpha >= 252
    assert np.array_equal(out[solid], frame[solid]) and frame.flags.writeable  # a new array, the input untouched
