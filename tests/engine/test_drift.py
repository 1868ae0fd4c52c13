"""Drift monitor and retrospective self-correction (issue §4) on the tiny-random FlashTalk preset.

Injected drifts go into the session state exactly where real drift lives, the motion context that carries
one chunk into the next (``snapshot`` -> modified state -> ``restore``):

* a colour shift: the context is decoded, shifted in RGB and re-encoded (colour correction off, as at
  strength 1.0 the release's own Lab matching already neutralises a global colour shift);
* noise: Gaussian noise of 3x the reference latent's RMS added to the motion latents.

Each is shown detected and corrected with the monitor on, and left uncorrected (still over the thresholds
chunks later, measured by an independent monitor) with it off.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from engine.build import build_tiny_engine
from engine.drift import DriftMonitor, DriftReport, DriftSettings, RegenDeadline
from engine.flashtalk import FlashTalkEngine, FlashTalkSession
from engine.interface import SessionRequest
from engine.state import SessionState
from soulx_live.config import DriftConfig

SR = 16000
LOGGER = "engine.flashtalk"


@pytest.fixture(scope="module")
def engine() -> FlashTalkEngine:
    torch.set_num_threads(1)
    return build_tiny_engine()


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced-looking test signal: harmonics of a wandering pitch under a syllable envelope, plus hiss."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None)
    return (0.2 * voice * envelope + 0.005 * rng.standard_normal(t.shape)).astype(np.float32)


def start(
    engine: FlashTalkEngine, drift: object | None, *, color_correction: float = 1.0, chunks: int = 16, seed: int = 3
) -> FlashTalkSession:
    engine.drift = drift
    engine.cfg = dataclasses.replace(engine.cfg, color_correction_strength=color_correction)
    session = engine.start_session(SessionRequest(f"drift-{seed}", seed=seed))
    session.push_audio(speech(chunks * engine.spec.samples_per_chunk / SR + 0.01, seed=seed))
    return session


def judge(engine: FlashTalkEngine, session: FlashTalkSession) -> DriftMonitor:
    """An independent monitor with the default thresholds (what a viewer would measure)."""
    return DriftMonitor(engine.models.vae.decode(session.state.conditioning.reference_latent),
                        session.state.conditioning.reference_latent, DriftConfig())


def replace_motion(session: FlashTalkSession, motion: torch.Tensor) -> None:
    snap = session.snapshot()
    session.restore(dataclasses.replace(snap, state=dataclasses.replace(snap.state, motion_latent=motion)))


def inject_colour_shift(engine: FlashTalkEngine, session: FlashTalkSession) -> None:
    vae = engine.models.vae
    with torch.inference_mode():
        video = vae.decode(session.state.motion_latent) + torch.tensor([0.5, -0.2, -0.4]).view(1, 3, 1, 1, 1)
        replace_motion(session, vae.encode(video))


def inject_noise(engine: FlashTalkEngine, session: FlashTalkSession) -> None:
    motion = session.state.motion_latent
    ref_rms = session.state.conditioning.reference_latent.pow(2).mean().sqrt()
    g = torch.Generator().manual_seed(1)
    replace_motion(session, motion + 3.0 * ref_rms * torch.randn(motion.shape, generator=g))


def run(session: FlashTalkSession, judge_: DriftMonitor, n: int) -> list[DriftReport]:
    return [judge_.check(session.next_chunk().frames) for _ in range(n)]


# -- the monitor on its own --------------------------------------------------------------------------------
def _portrait(h: int = 96, w: int = 64, seed: int = 0, centre: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """A gradient background with an elliptic 'face' with eyes at ``centre`` (fractions of H, W)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = centre[0] * h, centre[1] * w
    face = ((yy - cy) ** 2 / (h / 3) ** 2 + (xx - cx) ** 2 / (w / 3) ** 2) < 1
    eyes = ((yy - cy + h / 10) ** 2 + (np.abs(xx - cx) - w / 8) ** 2) < (w / 16) ** 2
    img = np.stack([60 + yy, 90 + xx, 120 + 0 * xx], axis=-1).astype(np.float64)
    img[face] = [200, 150, 120]
    img[eyes] = [30, 30, 40]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_monitor_metrics_respond_to_each_kind_of_drift() -> None:
    ref = _portrait()
    latent = torch.randn(1, 16, 1, 12, 8, generator=torch.Generator().manual_seed(0))
    monitor = DriftMonitor(ref, latent, DriftConfig())
    same = monitor.check(ref[None].repeat(3, axis=0), latent)
    assert not same.drifted and same.reasons == () and same.badness == 0
    assert same.color_shift < 1e-3 and abs(same.sharpness_ratio - 1) < 1e-4 and same.similarity > 0.999
    assert abs(same.motion_norm_ratio - 1) < 1e-5

    tinted = np.clip(ref.astype(np.int16) + np.array([40, -10, -40]), 0, 255).astype(np.uint8)
    r = monitor.check(tinted[None], latent)
    assert r.drifted and r.color_shift > 12 and any(x.startswith("color_shift") for x in r.reasons)

    blurred = ref.astype(np.float64)
    for _ in range(6):  # box blur
        blurred = (np.roll(blurred, 1, 0) + np.roll(blurred, -1, 0) + np.roll(blurred, 1, 1) + np.roll(blurred, -1, 1) + blurred) / 5
    r = monitor.check(blurred.astype(np.uint8)[None], latent)
    assert r.sharpness_ratio < 0.35 and any("sharpness_ratio" in x and "<" in x for x in r.reasons)

    noisy = np.clip(ref + np.random.default_rng(1).normal(0, 60, ref.shape), 0, 255).astype(np.uint8)
    r = monitor.check(noisy[None], latent)
    assert r.sharpness_ratio > 4 and r.similarity < 0.35 and r.drifted

    other = _portrait(centre=(0.3, 0.25))  # another picture of the same colours (the face elsewhere)
    r = monitor.check(other[None], latent)
    assert r.similarity < 0.35 and r.color_shift < 12

    r = monitor.check(ref[None], 3 * latent)
    assert r.motion_norm_ratio == pytest.approx(3.0, rel=1e-5) and r.reasons == ("motion_norm_ratio 3.000 > 2",)
    r = monitor.check(ref[None], latent, context_latent=2.5 * latent)  # the context it was generated from
    assert r.motion_norm_ratio == pytest.approx(2.5, rel=1e-5) and r.drifted

    # a video tensor in [-1, 1] is measured like its uint8 frames
    video = (torch.from_numpy(tinted).permute(2, 0, 1)[None, :, None].float() / 255 - 0.5) * 2
    torch_report = monitor.check(video, latent)
    assert torch_report.as_dict() == pytest.approx(monitor.check(tinted[None], latent).as_dict(), rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="reference"):
        monitor.check(ref[None, :48], latent)


def test_deadline_policy_and_partial_re_anchor(engine: FlashTalkEngine) -> None:
    realtime = RegenDeadline(realtime=True, budget=1.0)
    assert realtime.allows(0.05, 0.16) and not realtime.allows(0.09, 0.16)
    assert RegenDeadline(realtime=False).allows(10.0, 0.16)
    assert RegenDeadline.from_settings(DriftConfig(regenerate_deadline="always")).realtime is False
    assert RegenDeadline.from_settings(DriftSettings(regenerate_budget=0.5)) == RegenDeadline(True, 0.5)
    with pytest.raises(ValueError, match="regenerate_deadline"):
        RegenDeadline.from_settings(DriftSettings(regenerate_deadline="sometimes"))

    state = SessionState.initial(engine.start_session(SessionRequest("anchor")).state.conditioning, 1)
    ref = state.conditioning.reference_latent
    moved = dataclasses.replace(state, motion_latent=torch.cat([ref + 1.0, ref - 1.0], dim=2))
    half = moved.re_anchor(0.5)
    torch.testing.assert_close(half.motion_latent, torch.cat([ref + 0.5, ref - 0.5], dim=2))
    assert torch.equal(moved.re_anchor(1.0).motion_latent, ref) and moved.re_anchor(0.0) is moved
    assert torch.equal(moved.re_anchor().motion_latent, ref)
    with pytest.raises(ValueError, match="blend"):
        moved.re_anchor(1.5)


# -- the session: no false positives, detection, correction ------------------------------------------------
def test_no_false_positives_over_clean_chunks(engine: FlashTalkEngine) -> None:
    """60 clean chunks (9.6 s) of speech and 20 of silence, default thresholds: nothing is flagged."""
    for seed, chunks, silent in ((3, 60, False), (5, 20, True)):
        session = start(engine, DriftConfig(), chunks=chunks, seed=seed)
        if silent:
            session.reset()
        reports = []
        for _ in range(chunks):
            session.next_chunk()
            reports.append(session.stats.drift)
        assert session.stats.corrections == 0 and session.stats.chunks == chunks
        assert not any(r.drifted for r in reports), [r.reasons for r in reports if r.drifted]
        worst = DriftConfig()
        assert max(r.color_shift for r in reports) < worst.color_shift_max / 4
        assert min(r.similarity for r in reports) > worst.similarity_min + 0.2
        assert worst.sharpness_ratio_min * 2 < min(r.sharpness_ratio for r in reports)
        assert max(r.sharpness_ratio for r in reports) < worst.sharpness_ratio_max * 0.75
        assert max(r.motion_norm_ratio for r in reports) < 1.5


@pytest.mark.parametrize("kind", ["colour", "noise"])
def test_injected_drift_is_detected_and_corrected(
    engine: FlashTalkEngine, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    cc = 0.0 if kind == "colour" else 1.0
    inject = inject_colour_shift if kind == "colour" else inject_noise
    session = start(engine, DriftConfig(regenerate_deadline="always"), color_correction=cc)
    viewer = judge(engine, session)
    before = run(session, viewer, 5)
    assert not any(r.drifted for r in before) and session.stats.corrections == 0

    inject(engine, session)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        after = run(session, viewer, 4)
    stats = session.stats
    assert stats.corrections == 1 and stats.regenerated == 1 and stats.regenerate_skipped == 0
    entry = stats.correction_log[-1]
    expected = "color_shift" if kind == "colour" else "similarity"
    assert any(reason.startswith(expected) for reason in entry["reasons"]), entry
    assert entry["emitted"] == "regenerated" and entry["first_frame"] == 5 * engine.spec.frames_per_chunk
    lines = [r.getMessage() for r in caplog.records if "drift correction #1" in r.getMessage()]
    assert len(lines) == 1 and expected in lines[0] and "regenerated" in lines[0]
    # the offending chunk never reached the output, and every later chunk is within the thresholds
    assert not any(r.drifted for r in after), [r.reasons for r in after]
    assert stats.drift is not None and not stats.drift.drifted


@pytest.mark.parametrize("kind", ["colour", "noise"])
def test_without_the_monitor_the_same_drift_stays(
    engine: FlashTalkEngine, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    cc = 0.0 if kind == "colour" else 1.0
    inject = inject_colour_shift if kind == "colour" else inject_noise
    session = start(engine, DriftConfig(enabled=False), color_correction=cc)
    assert session.monitor is None
    viewer = judge(engine, session)
    run(session, viewer, 5)
    inject(engine, session)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        after = run(session, viewer, 3)
    assert all(r.drifted for r in after), [r.describe() for r in after]  # it propagates through the context
    assert session.stats.corrections == 0 and session.stats.regenerated == 0 and session.stats.drift is None
    assert not [r for r in caplog.records if "drift correction" in r.getMessage()]


def test_re_anchor_alone_when_there_is_no_time_to_regenerate(
    engine: FlashTalkEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Realtime deadline with no budget: the drifted chunk goes out, the context is re-anchored, the next
    chunk is clean again (whereas without correction the drift lasts, see above)."""
    session = start(engine, DriftConfig(regenerate_deadline="realtime", regenerate_budget=1e-6), color_correction=0.0)
    viewer = judge(engine, session)
    run(session, viewer, 3)
    inject_colour_shift(engine, session)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        after = run(session, viewer, 3)
    assert after[0].drifted and not after[1].drifted and not after[2].drifted
    stats = session.stats
    assert stats.corrections == 1 and stats.regenerated == 0 and stats.regenerate_skipped == 1
    assert stats.correction_log[-1]["emitted"] == "original"
    assert any("no regeneration (deadline" in r.getMessage() for r in caplog.records)


def test_realtime_request_override_and_regenerate_off(engine: FlashTalkEngine) -> None:
    engine.drift = DriftConfig(regenerate_deadline="always")
    engine.cfg = dataclasses.replace(engine.cfg, color_correction_strength=0.0)
    session = engine.start_session(SessionRequest("rt", extra={"realtime": True}))
    assert session.deadline.realtime is True
    session = start(engine, DriftConfig(regenerate=False), color_correction=0.0)
    viewer = judge(engine, session)
    run(session, viewer, 2)
    inject_colour_shift(engine, session)
    after = run(session, viewer, 2)
    assert after[0].drifted and not after[1].drifted
    assert session.stats.corrections == 1 and session.stats.regenerated == 0 and session.stats.regenerate_skipped == 0


def test_the_better_attempt_is_emitted(engine: FlashTalkEngine) -> None:
    """When the regenerated chunk scores worse than the first attempt, the first goes out (re-anchored after)."""
    session = start(engine, DriftConfig(regenerate_deadline="always"), color_correction=0.0, chunks=4)
    session.next_chunk()
    real_check = session.monitor.check
    scores = iter([3.0, 5.0])  # first attempt, then the retry: worse

    def fake_check(video: torch.Tensor, motion: torch.Tensor, context: torch.Tensor | None = None) -> DriftReport:
        report = real_check(video, motion, context)
        return dataclasses.replace(report, drifted=True, reasons=("fake",), badness=next(scores))

    session.monitor.check = fake_check  # type: ignore[method-assign]
    before = session.state
    chunk = session.next_chunk()
    entry = session.stats.correction_log[-1]
    assert entry["emitted"] == "original" and entry["regenerated"] and session.stats.drift.badness == 3.0
    assert session.stats.regenerated == 1 and session.stats.corrections == 1
    ref = before.conditioning.reference_latent
    assert torch.equal(session.state.motion_latent, ref)  # the next chunk starts from the reference again
    assert chunk.frames.shape == (4, 64, 48, 3)
