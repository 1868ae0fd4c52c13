"""Drift self-corrections of an engine session, by kind, as the worker reports them and the metrics count them.

FlashTalk's session stats (``engine.drift.SessionStats``) count ``corrections`` (drifted chunks acted on: the
motion context re-anchored to the reference) and ``regenerated`` (of those, chunks generated a second time). The
metric ``soulx_drift_corrections{kind}`` uses two kinds: ``regenerated`` and ``re_anchored`` (re-anchored only,
no time for a second attempt). Totals restart at zero with each session and each worker generation.
"""
from __future__ import annotations

import threading

__all__ = ["CorrectionTally", "correction_counts"]


def correction_counts(stats: object | None) -> tuple[int, int]:
    """``(regenerated, re_anchored)`` totals from an engine session's stats (zeros for engines without them)."""
    if stats is None:
        return 0, 0
    corrections = int(getattr(stats, "corrections", 0))
    regenerated = int(getattr(stats, "regenerated", 0))
    return regenerated, max(0, corrections - regenerated)


class CorrectionTally:
    """Turns running totals into new corrections per kind; a total that goes down means a new session or worker
    generation started from zero."""

    KINDS = ("regenerated", "re_anchored")

    def __init__(self) -> None:
        self._seen = {kind: 0 for kind in self.KINDS}
        self._lock = threading.Lock()

    def restart(self) -> None:
        """A new worker generation: its totals start from zero."""
        with self._lock:
            self._seen = {kind: 0 for kind in self.KINDS}

    def new(self, regenerated: int, re_anchored: int) -> dict[str, int]:
        """Corrections per kind since the previous call."""
        out = {}
        with self._lock:
            for kind, total in zip(self.KINDS, (regenerated, re_anchored)):
                seen = self._seen[kind]
                out[kind] = total - seen if total >= seen else total
                self._seen[kind] = total
        return {kind: n for kind, n in out.items() if n > 0}
