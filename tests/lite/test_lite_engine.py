"""The lite engine against the engine interface, on the built-in avatar and synthetic audio."""
from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from engine.interface import AvatarEngine, AvatarSession, FrameChunk, SessionRequest
from engine.lite import LiteConfig, LiteEngine, NoFaceError, locate_face
from engine.lite.animator import NEUTRAL_POSE, blink_amount, idle_pose
from engine.lite.audio_features import MouthFeatureConfig, MouthFeatureState, mouth_features, mouth_features_for_clip
from engine.lite.default_avatar import default_avatar_layout, draw_default_avatar
from engine.lite.face_locator import MIN_FACE_PX
from engine.lite.renderer import LiteRenderer

SR, SPF = 16000, 640
DEMO_SPEECH = Path(__file__).resolve().parents[2] / "soulx_live" / "assets" / "demo_speech.wav"


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise with a 4 Hz syllable envelope (-16 dBFS peaks) and a silent gap in the middle third."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env = 0.25 * np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2
    env[(t > seconds / 3) & (t < 2 * seconds / 3)] = 0.0
    return (env * rng.standard_normal(t.size)).astype(np.float32)


def _still_engine() -> LiteEngine:
    return LiteEngine(LiteConfig(blinks=False, idle_motion=False))


def _mouth(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return frame[y : y + h, x : x + w].astype(np.int16)


def _drain(session) -> list[FrameChunk]:
    chunks = []
    while session.buffered_samples > 0:
        chunks.append(session.next_chunk())
    return chunks


def test_engine_and_session_conform_to_the_interface() -> None:
    engine = LiteEngine()
    assert isinstance(engine, AvatarEngine)
    assert engine.name == "lite"
    spec = engine.spec
    assert (spec.fps, spec.sample_rate, spec.frames_per_chunk, spec.height, spec.width) == (Fraction(25), 16000, 5, 512, 512)
    assert spec.samples_per_frame == SPF
    session = engine.start_session(SessionRequest(session_id="s1"))
    assert isinstance(session, AvatarSession)
    assert session.session_id == "s1"


def test_chunks_have_shapes_dtypes_contiguous_timestamps_and_their_audio() -> None:
    engine = LiteEngine()
    session = engine.start_session(SessionRequest(session_id="s"))
    audio = _speechlike(1.3)
    session.push_audio(audio)
    spc, look = engine.spec.samples_per_chunk, engine.config.features().lookahead_samples
    assert session.chunks_ready() == (audio.size - look) // spc
    chunks = []
    while session.chunks_ready():
        chunks.append(session.next_chunk())
    chunks += _drain(session)  # the tail: padded with silence
    assert session.chunks_ready() == 0 and session.buffered_samples == 0
    assert len(chunks) == -(-audio.size // spc)
    for i, c in enumerate(chunks):
        assert isinstance(c, FrameChunk)
        assert c.session_id == "s" and c.seq == i
        assert c.frames.dtype == np.uint8 and c.frames.shape == (5, 512, 512, 3) and c.frames.flags.c_contiguous
        assert c.audio.dtype == np.float32 and c.audio.shape == (spc,)
        assert c.first_frame == 5 * i and c.audio_t0 == c.first_frame * SPF
    joined = np.concatenate([c.audio for c in chunks])
    np.testing.assert_array_equal(joined[: audio.size], audio)
    assert not joined[audio.size :].any()


def test_next_chunk_pads_silence_when_audio_is_short() -> None:
    session = _still_engine().start_session(SessionRequest(session_id="s"))
    assert session.chunks_ready() == 0
    chunk = session.next_chunk()
    assert chunk.frames.shape == (5, 512, 512, 3) and not chunk.audio.any()
    neutral = session.renderer.render()
    for f in chunk.frames:
        np.testing.assert_array_equal(f, neutral)


def test_push_audio_rejects_bad_input() -> None:
    session = LiteEngine().start_session(SessionRequest(session_id="s"))
    with pytest.raises(ValueError, match="mono"):
        session.push_audio(np.zeros((100, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        session.push_audio(np.array([0.0, np.nan], dtype=np.float32))
    session.push_audio(np.zeros((10, 1), dtype=np.float64))  # column vector and float64 are accepted
    assert session.buffered_samples == 10


def test_default_avatar_is_a_face_the_detector_agrees_with() -> None:
    img = draw_default_avatar(512)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    assert img.std() > 20  # a picture, not a flat fill
    known = default_avatar_layout(512)
    found = locate_face(img)
    d = known.interocular
    for a, b in ((found.left_eye, known.left_eye), (found.right_eye, known.right_eye), (found.mouth, known.mouth)):
        assert np.hypot(a[0] - b[0], a[1] - b[1]) < 0.1 * d
    small = draw_default_avatar(256)
    assert small.shape == (256, 256, 3)
    assert default_avatar_layout(256).interocular == pytest.approx(d / 2)


def test_default_avatar_renders_open_mouth_and_blink() -> None:
    r = LiteRenderer(draw_default_avatar(512), default_avatar_layout(512), (512, 512))
    neutral = r.render()
    np.testing.assert_array_equal(neutral, r.reference)
    box = r.mouth_box()
    opened = r.render(opening=1.0)
    assert np.abs(_mouth(opened, box) - _mouth(neutral, box)).mean() > 5
    # The open mouth shows a dark cavity at the mouth centre.
    mx, my = (int(round(v)) for v in r.layout.mouth)
    assert opened[my + 2, mx].mean() < neutral[my + 2, mx].mean() - 60
    blinked = r.render(blink=1.0)
    ex, ey = (int(round(v)) for v in r.layout.left_eye)
    assert np.abs(blinked[ey - 8 : ey + 8, ex - 8 : ex + 8].astype(int) - neutral[ey - 8 : ey + 8, ex - 8 : ex + 8]).mean() > 20
    assert not np.array_equal(r.render(pose=idle_pose(10, 25, 0)), neutral)
    np.testing.assert_array_equal(r.render(), neutral)  # scratch regions restored


@pytest.mark.parametrize("kind", ["blank", "noise", "tiny"])
def test_image_without_a_face_raises_no_face_error_with_the_fix(kind: str) -> None:
    rng = np.random.default_rng(0)
    img = {
        "blank": np.full((480, 640, 3), 128, dtype=np.uint8),
        "noise": rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),
        "tiny": np.full((32, 32, 3), 200, dtype=np.uint8),
    }[kind]
    with pytest.raises(NoFaceError) as err:
        locate_face(img)
    msg = str(err.value)
    assert "use a frontal photo where the face is clearly visible" in msg
    assert f"at least {MIN_FACE_PX}x{MIN_FACE_PX} pixels" in msg
    with pytest.raises(NoFaceError):
        LiteEngine().start_session(SessionRequest(session_id="s", avatar=img))


def test_locate_face_rejects_wrong_image_types() -> None:
    with pytest.raises(ValueError, match="uint8"):
        locate_face(np.zeros((100, 100, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        locate_face(np.zeros((100, 100), dtype=np.uint8))


def test_mouth_is_closed_in_silence_without_idle_motion() -> None:
    session = _still_engine().start_session(SessionRequest(session_id="s"))
    box = session.renderer.mouth_box()
    neutral = _mouth(session.renderer.render(), box)
    session.push_audio(np.zeros(2 * SR, dtype=np.float32))
    for c in _drain(session):
        for f in c.frames:
            assert np.abs(_mouth(f, box) - neutral).max() == 0


def test_mouth_is_closed_in_silence_with_blinks_and_idle_motion() -> None:
    """With the idle animation on, silent frames equal the closed-mouth rendering at the same blink and pose."""
    engine = LiteEngine()
    session = engine.start_session(SessionRequest(session_id="s", seed=3))
    session.push_audio(np.zeros(4 * SR, dtype=np.float32))
    probe = LiteRenderer(np.array(session.renderer.reference), session.renderer.layout, session.renderer.size)
    box = probe.mouth_box()
    moved = 0
    for c in _drain(session):
        for i, f in enumerate(c.frames):
            k = c.first_frame + i
            expected = probe.render(0.0, 0.0, blink_amount(k, 25, 3), idle_pose(k, 25, 3))
            np.testing.assert_array_equal(_mouth(f, box), _mouth(expected, box))
            moved += not np.array_equal(f, probe.reference)
    assert moved > 0  # the idle animation is on


def test_mouth_follows_speech_and_closes_in_the_gap() -> None:
    session = _still_engine().start_session(SessionRequest(session_id="s"))
    box = session.renderer.mouth_box()
    neutral = _mouth(session.renderer.render(), box)
    audio = _speechlike(3.0)
    session.push_audio(audio)
    motion = np.array([np.abs(_mouth(f, box) - neutral).mean() for c in _drain(session) for f in c.frames])
    n = motion.size
    env = np.sqrt(np.mean(np.pad(audio, (0, n * SPF - audio.size)).reshape(n, SPF) ** 2, axis=1))
    assert np.corrcoef(motion, env)[0, 1] > 0.7
    assert motion[: n // 3].max() > 5
    gap = slice(n // 3 + 8, 2 * n // 3 - 2)  # after the release, before the look-ahead
    assert motion[gap].max() == 0


def test_reset_drops_audio_and_returns_to_the_reference_pose() -> None:
    session = _still_engine().start_session(SessionRequest(session_id="s"))
    session.push_audio(0.3 * np.ones(SR, dtype=np.float32))
    first = session.next_chunk()
    assert not np.array_equal(first.frames[-1], session.renderer.reference)  # mouth open
    session.reset()
    assert session.buffered_samples == 0 and session.chunks_ready() == 0
    after = session.next_chunk()
    assert after.first_frame == first.first_frame + 5 and after.seq == first.seq + 1
    assert after.audio_t0 == after.first_frame * SPF
    for f in after.frames:
        np.testing.assert_array_equal(f, session.renderer.reference)


def test_streaming_in_any_pieces_equals_one_push() -> None:
    audio = _speechlike(2.0, seed=1)
    whole = LiteEngine().start_session(SessionRequest(session_id="a", seed=5))
    whole.push_audio(audio)
    a = _drain(whole)
    pieces = LiteEngine().start_session(SessionRequest(session_id="b", seed=5))
    rng = np.random.default_rng(2)
    b, pos = [], 0
    while pos < audio.size:
        step = int(rng.integers(100, 5000))
        pieces.push_audio(audio[pos : pos + step])
        pos += step
        while pieces.chunks_ready():
            b.append(pieces.next_chunk())
    b += _drain(pieces)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.frames, y.frames)
        np.testing.assert_array_equal(x.audio, y.audio)


def test_audio_features_stream_equals_clip_and_silence_is_zero() -> None:
    cfg = MouthFeatureConfig()
    audio = _speechlike(2.0)
    opening, shape = mouth_features_for_clip(audio, cfg)
    assert opening.min() >= 0 and opening.max() <= 1 and np.abs(shape).max() <= 1
    padded = np.concatenate([np.zeros(cfg.pre_samples, np.float32), audio, np.zeros(SR, np.float32)])
    state, got = MouthFeatureState.initial(cfg), []
    for k in range(0, opening.size, 5):
        start = k * SPF
        o, _, state = mouth_features(padded[start : start + cfg.pre_samples + 5 * SPF + cfg.lookahead_samples], 5, state, cfg)
        got.append(o)
    np.testing.assert_allclose(np.concatenate(got)[: opening.size], opening, atol=1e-6)
    silent_o, silent_s = mouth_features_for_clip(np.zeros(SR, np.float32), cfg)
    assert not silent_o.any() and not silent_s.any()
    quiet_noise = (1e-3 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)  # -60 dBFS
    assert not mouth_features_for_clip(quiet_noise, cfg)[0].any()


def test_blinks_are_natural_and_seeded() -> None:
    fps, n = 25, 25 * 120
    b = np.array([blink_amount(k, fps, 7) for k in range(n)])
    assert b.min() == 0 and b.max() == 1
    starts = np.flatnonzero((b[1:] > 0) & (b[:-1] == 0))
    gaps_s = np.diff(starts) / fps
    assert 18 <= starts.size <= 60  # 9-30 blinks a minute
    assert gaps_s.min() >= 0.3 and 2.0 <= np.median(gaps_s) <= 6.0
    assert (b > 0).mean() < 0.15  # eyes are open most of the time
    np.testing.assert_array_equal(b, [blink_amount(k, fps, 7) for k in range(n)])
    assert not np.array_equal(b, [blink_amount(k, fps, 8) for k in range(n)])


def test_idle_motion_is_small_and_smooth() -> None:
    poses = [idle_pose(k, 25, 0) for k in range(25 * 60)]
    dx = np.array([p.dx for p in poses])
    roll = np.array([p.roll_deg for p in poses])
    breath = np.array([p.breath for p in poses])
    assert np.abs(dx).max() < 5 and np.abs(roll).max() < 2.5 and np.abs(breath).max() <= 1
    assert dx.std() > 0.5 and breath.std() > 0.3  # it does move
    assert np.abs(np.diff(dx)).max() < 0.5  # no jumps between frames
    assert NEUTRAL_POSE.is_neutral and not poses[0].is_neutral


def test_user_portrait_is_fitted_to_the_output_size() -> None:
    big = np.zeros((900, 700, 3), dtype=np.uint8)
    big[:] = (90, 120, 150)
    avatar = draw_default_avatar(512)
    big[200:712, 100:612] = avatar  # the drawn face somewhere inside a larger, non-square photo
    engine = LiteEngine(LiteConfig(width=320, height=384))
    session = engine.start_session(SessionRequest(session_id="s", avatar=big))
    chunk = session.next_chunk()
    assert chunk.frames.shape == (5, 384, 320, 3)
    lay = session.renderer.layout
    assert 0 < lay.left_eye[0] < lay.right_eye[0] < 320 and 0 < lay.mouth[1] < 384
    assert 0.3 < lay.face_box[2] / 320 < 0.6


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="at least 64x64"):
        LiteConfig(width=32)
    with pytest.raises(ValueError, match="samples per frame"):
        LiteConfig(fps=30, sample_rate=16000)


def test_demo_speech_asset_is_small_16k_mono_with_a_pause() -> None:
    assert DEMO_SPEECH.stat().st_size < 500_000
    with wave.open(str(DEMO_SPEECH)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    assert 9.0 <= pcm.size / SR <= 13.0
    n = pcm.size // SPF
    db = 20 * np.log10(np.sqrt(np.mean(pcm[: n * SPF].reshape(n, SPF) ** 2, axis=1)) + 1e-9)
    speech = db > -35
    assert speech.mean() > 0.5
    quiet = np.flatnonzero(db < -60)
    runs = np.split(quiet, np.flatnonzero(np.diff(quiet) > 1) + 1)
    middle = [r for r in runs if r.size and n * 0.2 < r[0] < n * 0.8]
    assert max(r.size for r in middle) >= int(1.2 * 25)  # a pause of at least 1.2 s mid-speech


def test_asking_before_the_lookahead_arrives_gives_nearly_the_same_lips() -> None:
    """A caller that pushes one chunk and asks for it at once (no look-ahead audio yet) still gets lips
    close to the exact ones; only the lead into the next chunk is lost."""
    audio = _speechlike(4.0, seed=4)
    spc = 5 * SPF

    def motion(step_by_step: bool) -> np.ndarray:
        session = _still_engine().start_session(SessionRequest(session_id="s"))
        box = session.renderer.mouth_box()
        neutral = _mouth(session.renderer.render(), box)
        chunks = []
        if step_by_step:
            for k in range(-(-audio.size // spc)):
                session.push_audio(audio[k * spc : (k + 1) * spc])
                chunks.append(session.next_chunk())
        else:
            session.push_audio(audio)
            chunks = _drain(session)
        return np.array([np.abs(_mouth(f, box) - neutral).mean() for c in chunks for f in c.frames])

    exact, early = motion(False), motion(True)
    assert exact.size == early.size
    assert np.corrcoef(exact, early)[0, 1] > 0.95
    n = exact.size // 5 * 5
    by_position = (early[:n] - exact[:n]).reshape(-1, 5).mean(axis=0)
    assert np.abs(by_position).max() < 0.25 * exact.mean()  # measured: at most 0.16 (last frame of a chunk)
