"""UtteranceTracker: started/finished by played position, interrupted with the played part."""
from __future__ import annotations

import pytest

from soulx_live.push.utterances import SpeechEvent, UtteranceTracker


def _tracker() -> tuple[UtteranceTracker, list[SpeechEvent]]:
    events: list[SpeechEvent] = []
    return UtteranceTracker(16000, events.append), events


def test_started_then_finished_as_playback_passes() -> None:
    t, events = _tracker()
    t.add("a", 16000, 8000)  # 1.0 s .. 1.5 s
    t.on_played(16000)
    assert events == []  # reaching the start is not passing it
    t.on_played(16001)
    assert events == [SpeechEvent("started", "a", 1.0, 0.0)]
    t.on_played(23999)
    assert len(events) == 1
    t.on_played(24000)
    assert events[-1] == SpeechEvent("finished", "a", 1.5, 0.5)
    assert t.pending == 0
    t.on_played(99999)
    assert len(events) == 2  # never twice


def test_one_jump_over_several_utterances_keeps_order() -> None:
    t, events = _tracker()
    t.add("b", 8000, 8000)
    t.add("a", 0, 8000)  # added out of order: still reported in timeline order
    t.on_played(20000)
    assert [(e.kind, e.utterance_id) for e in events] == [
        ("started", "a"), ("finished", "a"), ("started", "b"), ("finished", "b")]


def test_interrupt_reports_played_position_of_each_unfinished() -> None:
    t, events = _tracker()
    t.add("done", 0, 4000)
    t.add("mid", 4000, 16000)
    t.add("later", 20000, 16000)
    t.on_played(12000)
    t.interrupt(12000)
    kinds = [(e.kind, e.utterance_id) for e in events]
    assert kinds == [("started", "done"), ("finished", "done"), ("started", "mid"),
                     ("interrupted", "mid"), ("interrupted", "later")]
    mid, later = events[-2], events[-1]
    assert mid.played_s == pytest.approx(0.5) and mid.position_s == pytest.approx(0.75)
    assert later.played_s == 0.0
    assert t.pending == 0
    t.on_played(40000)
    assert len(events) == 5  # interrupted utterances never finish


def test_bad_listener_does_not_stop_tracking() -> None:
    seen: list[str] = []

    def emit(e: SpeechEvent) -> None:
        seen.append(e.kind)
        raise RuntimeError("listener bug")

    t = UtteranceTracker(16000, emit)
    t.add("a", 0, 10)
    t.on_played(100)
    assert seen == ["started", "finished"]


def test_rejects_empty_utterance_and_bad_rate() -> None:
    t, _ = _tracker()
    with pytest.raises(ValueError, match="n_samples"):
        t.add("a", 0, 0)
    with pytest.raises(ValueError, match="sample_rate"):
        UtteranceTracker(0, lambda e: None)


def test_lost_audio_is_reported_and_finished_counts_only_what_played() -> None:
    t, events = _tracker()
    t.add("a", 16000, 16000)  # 1.0 s .. 2.0 s
    t.add("b", 40000, 8000)  # 2.5 s .. 3.0 s
    t.on_played(20000)
    t.lost(24000, 4000)  # 1.5 s .. 1.75 s of "a" never reached the engine (an outage past the replay limit)
    assert events[-1] == SpeechEvent("lost", "a", 1.5, 0.25)
    t.on_played(32000)
    assert events[-1] == SpeechEvent("finished", "a", 2.0, 0.75)  # not 1.0: a quarter second never played
    t.on_played(48000)
    assert [e.kind for e in events if e.utterance_id == "b"] == ["started", "finished"]  # untouched
    assert events[-1].played_s == 0.5
