"""One media clock for the virtual camera and the virtual microphone, so lips and voice leave together.

The session timeline is counted in audio samples (frame ``k`` starts at sample ``k * samples_per_frame``). The
clock maps that timeline to wall time with one anchor: sample ``s0`` plays at wall time ``t0``; sample ``s`` plays
at ``t0 + (s - s0) / sample_rate``. Both sinks ask the clock (the camera: "which sample is due at this tick?",
the microphone: "which samples must be written now to be heard on time?"), and nothing is accumulated: every
answer is computed from the anchor, with the sample count an exact integer, so a 24-hour session drifts no more
than its first second. The anchor is set by the first chunk (plus ``latency_s`` of jitter buffer, so a late chunk
is not played early), and moved — for both sinks at once — when the timeline jumps: a barge-in epoch, a new
session, chunks so late that holding on would let the picture lag the voice (``max_late_s``), or a backlog
after an outage (``max_ahead_s``, at least two chunks: skipped so the latency does not grow by the outage).

A backlog arrives as a burst of chunks in quick succession. Once a late chunk or a backlog moved the anchor, the
clock keeps following the burst (each chunk that would play more than ``latency_s`` + ``catch_up_slack_s`` after
it arrived moves the anchor again) until chunks arrive at their normal pace, so after an outage the latency
returns to ``latency_s`` instead of keeping what was left of the backlog. ``reanchors`` counts episodes (a burst
is one), which is what a viewer notices.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

__all__ = ["AvClock"]

log = logging.getLogger(__name__)


class AvClock:
    """Shared by the sinks of one daemon; thread-safe."""

    def __init__(self, sample_rate: int = 16000, *, latency_s: float = 0.12, max_late_s: float = 0.25,
                 max_ahead_s: float = 0.6, catch_up_slack_s: float = 0.1,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.sample_rate = sample_rate
        self.latency_s = latency_s
        self.max_late_s = max_late_s
        self.max_ahead_s = max_ahead_s
        self.catch_up_slack_s = catch_up_slack_s
        self._clock = clock
        self._lock = threading.Lock()
        self._anchor: tuple[float, int] | None = None  # (t0 wall seconds, s0 samples)
        self._epoch = 0
        self._session: str | None = None
        self._catching_up = False  # following a burst after a late chunk or a backlog
        self._last_observed = 0.0
        self.reanchors = 0

    def now(self) -> float:
        return self._clock()

    @property
    def anchored(self) -> bool:
        return self._anchor is not None

    def observe(self, audio_t0: int, *, n_samples: int = 0, epoch: int = 0, session: str | None = None) -> None:
        """A chunk of ``n_samples`` starting at sample ``audio_t0`` arrived: anchor on the first one, re-anchor on
        a jump, on a late chunk, and on a backlog (a burst after an outage: its oldest part is skipped so the
        latency stays bounded instead of growing by the outage)."""
        with self._lock:
            now = self._clock()
            in_burst = self._catching_up and now - self._last_observed < 0.5 * n_samples / self.sample_rate
            self._last_observed = now
            reason = self._reason(audio_t0, n_samples, epoch, session, now)
            if not reason and in_burst and self._ahead_s(audio_t0, now) > self.latency_s + self.catch_up_slack_s:
                self._anchor = (now + self.latency_s, audio_t0)  # the same episode: the burst goes on
            elif reason:
                if self._anchor is not None:
                    self.reanchors += 1
                    log.info("A/V clock: re-anchoring at sample %d (%s)", audio_t0, reason)
                self._anchor = (now + self.latency_s, audio_t0)
                self._catching_up = "late" in reason or "backlog" in reason
            elif not in_burst:
                self._catching_up = False
            self._epoch, self._session = max(self._epoch, epoch), session if session is not None else self._session

    def sample_at(self, wall: float) -> int | None:
        """The timeline sample that plays at wall time ``wall`` (None before the first chunk)."""
        anchor = self._anchor
        if anchor is None:
            return None
        t0, s0 = anchor
        return s0 + math.floor((wall - t0) * self.sample_rate)

    def wall_at(self, sample: int) -> float | None:
        """When timeline sample ``sample`` plays."""
        anchor = self._anchor
        if anchor is None:
            return None
        t0, s0 = anchor
        return t0 + (sample - s0) / self.sample_rate

    def _ahead_s(self, audio_t0: int, now: float) -> float:
        """How long after ``now`` sample ``audio_t0`` plays on the current anchor."""
        playing = self.sample_at(now)
        assert playing is not None
        return (audio_t0 - playing) / self.sample_rate

    def _reason(self, audio_t0: int, n_samples: int, epoch: int, session: str | None, now: float) -> str:
        if self._anchor is None:
            return "first chunk"
        if epoch > self._epoch:
            return f"epoch {epoch}"
        if session is not None and self._session is not None and session != self._session:
            return "new session"
        playing = self.sample_at(now)
        assert playing is not None
        late_s = (playing - audio_t0) / self.sample_rate
        if late_s > self.max_late_s:
            return f"chunk {late_s * 1000:.0f} ms late"
        ahead_limit = self.latency_s + max(self.max_ahead_s, 2.0 * n_samples / self.sample_rate)
        if -late_s > ahead_limit:
            return f"{-late_s:.2f} s of backlog"
        return ""
