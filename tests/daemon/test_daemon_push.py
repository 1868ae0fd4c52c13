"""audio.source=push in the live daemon: idle on silence, pushed PCM on the timeline, bad pushes,
speech events, barge-in. Real worker process (or in-process where named), real ZeroMQ."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from live_support import (
    CHUNK_S,
    SR,
    DaemonThread,
    ProbeSink,
    assert_contiguous,
    live_config,
    short_tmp,
    wait_for,
)

from soulx_live.audio.push_source import PushSource
from soulx_live.daemon import Daemon

pytestmark = pytest.mark.timeout(40)


def _tone(seconds: float, amp: float = 0.3, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _push_daemon(root: Path, **overrides: object) -> tuple[Daemon, ProbeSink]:
    config = live_config(root, **{"audio.source": "push", "push.enabled": False, **overrides})
    probe = ProbeSink()
    return Daemon(config, sink_factory=lambda _: [probe]), probe


def _handler(daemon: Daemon):  # type: ignore[no-untyped-def]
    wait_for(lambda: daemon.push_handler is not None, 15, "the push handler")
    return daemon.push_handler


def test_push_source_places_audio_at_the_timeline_position() -> None:
    src = PushSource(sample_rate=SR, block_samples=640)
    assert np.all(src.next_block() == 0) and src.position == 640  # silence while nothing is pushed
    assert src.enqueue(np.ones(1000, np.float32)) == 640  # at the current position
    assert src.enqueue(np.full(300, 0.5, np.float32)) == 1640  # after the audio not played yet
    a, b = src.next_block(), src.next_block()
    assert np.all(a == 1) and np.all(b[:360] == 1) and np.all(b[360:660 - 0][:280] == 0.5)
    assert src.queued_samples == 20 and src.clear() == 20 and np.all(src.next_block() == 0)
    assert src.position == 4 * 640


def test_pushed_pcm_becomes_frames_and_bad_pushes_do_not_end_the_session() -> None:
    with short_tmp() as root:
        daemon, probe = _push_daemon(root, **{"push.max_packet_s": 2.0})
        assert daemon.isolation == "process"
        runner = DaemonThread(daemon).start()
        try:
            handler = _handler(daemon)
            wait_for(lambda: len(probe.snapshot()) >= 5, 15, "idle frames while nothing is pushed")
            assert not probe.speech_writes(), "speech frames before anything was pushed"
            t_push = time.monotonic()
            receipt = handler.push_pcm(_tone(0.6), utterance_id="u1")
            source = daemon.driver.intake.source if daemon.driver.intake is not None else None
            assert isinstance(source, PushSource)
            assert 0 < receipt.start_sample <= source.position + 640 and receipt.n_samples == int(0.6 * SR)
            wait_for(lambda: len(probe.speech_writes()) >= 3, 5, "frames carrying the pushed audio")
            latency = probe.speech_writes()[0].mono - t_push
            for bad, error in [(np.full(640, np.nan, np.float32), ValueError), (np.zeros(640, np.int16), TypeError),
                               (np.zeros((2, 640), np.float32), ValueError), (np.zeros(0, np.float32), ValueError),
                               (_tone(3.0), ValueError)]:
                with pytest.raises(error, match="utterance bad"):
                    handler.push_pcm(bad, utterance_id="bad")
            spoken = len(probe.speech_writes())
            handler.push_pcm(_tone(0.4, freq=330.0), utterance_id="u2")  # the session goes on
            wait_for(lambda: len(probe.speech_writes()) >= spoken + 2, 5, "frames of the push after the bad ones")
            status = daemon.status()
            assert handler.status()["rejected"] == 5 and handler.status()["utterances"] == 2
        finally:
            code = runner.stop()
    print(f"silence -> speech: first pushed audio reached the sink {latency * 1000:.0f} ms after push_pcm")
    assert code == 0 and status.state == "running"
    writes = probe.snapshot()
    assert_contiguous(writes)
    audio = np.concatenate([w.audio for w in writes])
    voiced = int(np.count_nonzero(np.abs(audio) > 0.01))
    assert abs(voiced - int(1.0 * SR)) <= 0.05 * SR, f"{voiced} voiced samples at the sink, pushed {SR} (0.6 s + 0.4 s)"
    assert latency <= 2 * CHUNK_S + 0.3, f"pushed audio took {latency:.2f} s to reach the sink"


def test_speech_events_started_and_finished_follow_the_sinks() -> None:
    with short_tmp() as root:
        daemon, probe = _push_daemon(root)
        events: list[object] = []
        daemon.speech_listeners.append(events.append)
        runner = DaemonThread(daemon).start()
        try:
            handler = _handler(daemon)
            wait_for(lambda: len(probe.snapshot()) >= 3, 15, "idle frames")
            t_push = time.monotonic()
            receipt = handler.push_pcm(_tone(0.5), utterance_id="e1")
            wait_for(lambda: any(getattr(e, "kind", "") == "finished" for e in events), 5, "the finished event")
            t_finished = time.monotonic()
        finally:
            runner.stop()
    kinds = [(e.kind, e.utterance_id) for e in events]  # type: ignore[attr-defined]
    assert kinds[:2] == [("started", "e1"), ("finished", "e1")], kinds
    started = events[0]
    assert abs(started.position_s - receipt.start_sample / SR) <= 2 * CHUNK_S  # type: ignore[attr-defined]
    assert 0.5 - 0.05 <= t_finished - t_push <= 0.5 + 2.0


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_interrupt_stops_pushed_speech_within_200_ms(isolation: str) -> None:
    with short_tmp() as root:
        daemon, probe = _push_daemon(root, **{"supervisor.isolation": isolation})
        runner = DaemonThread(daemon).start()
        try:
            handler = _handler(daemon)
            wait_for(lambda: len(probe.snapshot()) >= 2, 15, "idle frames")
            handler.push_pcm(_tone(8.0), utterance_id="long")  # max_packet_s default 30 s
            wait_for(lambda: len(probe.speech_writes()) >= 3, 5, "speech frames")
            before = len(probe.snapshot())
            t0 = time.monotonic()
            epoch = handler.interrupt()
            wait_for(lambda: any(w.rms == 0.0 for w in probe.snapshot()[before:]), 3, "silence after the interrupt")
            time.sleep(4 * CHUNK_S)  # later speech chunks would show up here
            after = probe.snapshot()[before:]
            daemon_epoch = daemon.epoch
        finally:
            runner.stop()
    first_silent = next(w.mono for w in after if w.rms == 0.0) - t0
    late_speech = [round(w.mono - t0, 3) for w in after if w.rms > 0.01 and w.mono > t0 + 0.05]
    print(f"{isolation}: barge-in -> first silent frames at the sink after {first_silent * 1000:.0f} ms")
    assert epoch == 1 and daemon_epoch == 1
    assert probe.interrupts == [1], "the sink's interrupt(epoch) was not called"
    assert not late_speech, f"speech reached the sink after the interrupt at {late_speech} s"
    assert first_silent <= 0.2, f"first silent frames {first_silent * 1000:.0f} ms after the interrupt (limit 200 ms)"


def test_the_push_server_is_hosted_when_built() -> None:
    with short_tmp() as root:
        daemon, _probe = _push_daemon(root, **{"push.enabled": True})
        runner = DaemonThread(daemon).start()
        try:
            _handler(daemon)
            wait_for(lambda: daemon.push.server is not None, 5, "the push server")
            server = daemon.push.server
            assert server.zmq_address and server.token  # type: ignore[attr-defined]
        finally:
            runner.stop()
    assert daemon.push.server is None  # closed with the session


class FakeMetrics:
    """Records the calls the daemon makes on ``soulx_live.metrics.DaemonMetrics`` (contract C4)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))

    def serve(self, host: str, port: int) -> int:
        self.calls.append(("serve", (host, port)))
        return 12345

    def snapshot(self) -> dict[str, float]:
        return {"restarts_total": 0.0, "calls": float(len(self.calls))}

    def names(self) -> set[str]:
        return {name for name, _ in self.calls}


def test_metrics_are_wired_when_the_metrics_module_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    made: list[FakeMetrics] = []
    module = types.ModuleType("soulx_live.metrics")
    module.DaemonMetrics = lambda: made.append(FakeMetrics()) or made[-1]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "soulx_live.metrics", module)
    with short_tmp() as root:
        daemon, probe = _push_daemon(root, **{"metrics.enabled": True, "metrics.port": 0})
        runner = DaemonThread(daemon).start()
        try:
            handler = _handler(daemon)
            wait_for(lambda: len(probe.snapshot()) >= 2, 15, "idle frames")
            handler.push_pcm(_tone(2.0), utterance_id="m1")
            wait_for(lambda: len(probe.speech_writes()) >= 1, 5, "speech")
            handler.interrupt()
            wait_for(lambda: "observe_bargein_latency" in made[0].names(), 3, "the barge-in latency")
            status = daemon.status()
        finally:
            runner.stop()
    metrics = made[0]
    assert {"serve", "observe_ttff", "set_queue_depth", "observe_bargein_latency", "close"} <= metrics.names()
    bargein = next(args[0] for name, args in metrics.calls if name == "observe_bargein_latency")
    assert 0 <= bargein <= 0.2  # type: ignore[operator]
    assert status.metrics["calls"] > 0


def test_say_synthesises_queues_and_forwards_phonemes(monkeypatch: pytest.MonkeyPatch) -> None:
    """say() with a stand-in TTS (contract C3): the speech reaches the sink and the phoneme spans reach
    the engine session on the session timeline (in-process engine, so the session can be watched)."""
    import types
    from dataclasses import dataclass

    from engine.lite.engine import LiteConfig, LiteEngine

    @dataclass(frozen=True)
    class Span:
        start_s: float
        end_s: float
        phoneme: str

    @dataclass(frozen=True)
    class Utterance:
        text: str
        pcm: np.ndarray
        sample_rate: int
        phonemes: tuple[Span, ...]

    class Synth:
        def synthesize(self, text: str, voice: str | None = None) -> Utterance:
            return Utterance(text, _tone(0.5), SR, (Span(0.0, 0.2, "h"), Span(0.2, 0.5, "oU")))

    tts = types.ModuleType("soulx_live.tts")
    tts.build_tts = lambda config: Synth()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "soulx_live.tts", tts)
    seen: list[list[tuple[int, int, str]]] = []

    class Recording(LiteEngine):
        def start_session(self, request):  # type: ignore[no-untyped-def]
            session = super().start_session(request)
            session.push_phonemes = seen.append  # type: ignore[attr-defined]
            return session

    with short_tmp() as root:
        daemon, probe = _push_daemon(root)
        daemon = Daemon(daemon.config, engine_factory=lambda _: Recording(LiteConfig(width=96, height=96)),
                        sink_factory=lambda _: [probe])
        assert daemon.isolation == "thread"
        runner = DaemonThread(daemon).start()
        try:
            handler = _handler(daemon)
            wait_for(lambda: len(probe.snapshot()) >= 2, 15, "idle frames")
            receipt = handler.say("hello", voice=None, utterance_id="s1")
            wait_for(lambda: len(probe.speech_writes()) >= 2 and bool(seen), 5, "spoken frames and phonemes")
            with pytest.raises(ValueError, match="empty text"):
                handler.say("  ", voice=None, utterance_id="s2")
        finally:
            runner.stop()
    start = receipt.start_sample
    assert receipt.n_samples == SR // 2
    assert seen[0] == [(start, start + int(0.2 * SR), "h"), (start + int(0.2 * SR), start + SR // 2, "oU")]


def test_script_source_speaks_with_real_espeak_and_forwards_phonemes(tmp_path: Path) -> None:
    """audio.source=script with the real espeak-ng and ScriptSource, rendered as fast as possible (in-process):
    the recorder gets the script's whole timeline and the lite session gets every line's phoneme spans."""
    from engine.lite.engine import LiteConfig, LiteEngine

    seen: list[list[tuple[int, int, str]]] = []

    class Recording(LiteEngine):
        def start_session(self, request):  # type: ignore[no-untyped-def]
            session = super().start_session(request)
            real = session.push_phonemes
            session.push_phonemes = lambda spans: (seen.append(spans), real(spans))  # type: ignore[attr-defined]
            return session

    script = tmp_path / "lines.txt"
    script.write_text("0.2 Hello there.\n+0.5 Welcome to the show.\n")
    with short_tmp() as root:
        config = live_config(root, **{"audio.source": "script", "tts.script": str(script), "audio.realtime": False})
        probe = ProbeSink()
        daemon = Daemon(config, engine_factory=lambda _: Recording(LiteConfig(width=96, height=96)),
                        sink_factory=lambda _: [probe])
        assert daemon.isolation == "thread"
        assert daemon.run() == 0
    assert len(seen) == 2 and all(len(spans) >= 5 for spans in seen)
    assert seen[0][0][0] >= int(0.2 * SR) and seen[1][0][0] > seen[0][-1][1] + int(0.4 * SR)
    frames = sum(w.n for w in probe.snapshot())
    assert frames * 640 >= seen[1][-1][1]  # the whole script was rendered
    assert len(probe.speech_writes()) >= 5


def test_say_over_the_push_api_with_real_espeak() -> None:
    """`soulx-live say` path: PushClient.say -> daemon (worker process) -> real espeak-ng -> frames with speech,
    and the started/finished events come back to the client."""
    from soulx_live.push.client import PushClient

    with short_tmp() as root:
        daemon, probe = _push_daemon(root, **{"push.enabled": True})
        runner = DaemonThread(daemon).start()
        try:
            _handler(daemon)
            wait_for(lambda: daemon.push.server is not None and len(probe.snapshot()) >= 2, 15, "push server, idle")
            with PushClient(daemon.config) as client:
                client.subscribe()
                client.say("Hello from the push API.")
                kinds: list[str] = []
                for event in client.events(timeout_s=10):
                    kinds.append(event.kind)
                    if event.kind == "finished":
                        break
            speech = probe.speech_writes()
        finally:
            runner.stop()
    assert kinds[:1] == ["started"] and kinds[-1] == "finished", kinds
    assert len(speech) >= 5


class RecordingTracker:
    """Stands in for UtteranceTracker: records what the bridge tells it."""

    def __init__(self) -> None:
        self.added: list[tuple[str, int, int]] = []
        self.played: list[tuple[float, int]] = []
        self.interrupted: list[int] = []

    def add(self, utterance_id: str, start_sample: int, n_samples: int) -> None:
        self.added.append((utterance_id, start_sample, n_samples))

    def on_played(self, sample: int) -> None:
        self.played.append((time.monotonic(), sample))

    def interrupt(self, at_sample: int) -> None:
        self.interrupted.append(at_sample)

    def reached(self, sample: int) -> float | None:
        return next((t for t, s in self.played if s >= sample), None)


def test_played_position_follows_the_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracker's on_played comes from the sinks' progress: it passes a push's start when its first
    frames reach the sink and its end when its last frames do, and never runs ahead of the fed audio."""
    import soulx_live.push_bridge as bridge_mod

    tracker = RecordingTracker()
    monkeypatch.setattr(bridge_mod, "make_tracker", lambda rate, emit: tracker)
    with short_tmp() as root:
        daemon, probe = _push_daemon(root)
        runner = DaemonThread(daemon).start()
        try:
            handler = _handler(daemon)
            wait_for(lambda: len(probe.snapshot()) >= 3, 15, "idle frames")
            receipt = handler.push_pcm(_tone(0.6), utterance_id="p1")
            end = receipt.start_sample + receipt.n_samples
            wait_for(lambda: tracker.reached(end) is not None, 5, "the played position to pass the push's end")
            first_speech = probe.speech_writes()[0].mono
            last_speech = probe.speech_writes()[-1].mono
            handler.interrupt()
        finally:
            runner.stop()
    positions = [s for _, s in tracker.played]
    assert positions == sorted(positions) and tracker.added == [("p1", receipt.start_sample, receipt.n_samples)]
    started_at, finished_at = tracker.reached(receipt.start_sample + 1), tracker.reached(end)
    assert started_at is not None and finished_at is not None
    print(f"played position vs frames at the sink: start {1000 * (started_at - first_speech):+.0f} ms, "
          f"end {1000 * (finished_at - last_speech):+.0f} ms")
    # within about one chunk (and the daemon's 50 ms feed tick) of the frames reaching the sink
    assert abs(started_at - first_speech) <= CHUNK_S + 0.1, (started_at - first_speech)
    assert abs(finished_at - last_speech) <= CHUNK_S + 0.1, (finished_at - last_speech)
    assert tracker.interrupted and tracker.interrupted[0] >= end


def test_interrupt_command_reaches_the_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from soulx_live.commands import interrupt as command
    from soulx_live.errors import DaemonUnavailable

    with short_tmp() as root:
        daemon, probe = _push_daemon(root, **{"supervisor.isolation": "thread"})
        args = argparse.Namespace(timeout=2.0)
        with pytest.raises(DaemonUnavailable, match="no daemon is running"):
            command.run(args, lambda _args, _extra: daemon.config)
        runner = DaemonThread(daemon).start()
        try:
            wait_for(lambda: len(probe.snapshot()) >= 1, 15, "frames")
            assert command.run(args, lambda _args, _extra: daemon.config) == 0
        finally:
            runner.stop()
    assert "interrupted: epoch 1" in capsys.readouterr().out and daemon.epoch == 1


def test_speech_events_reach_listeners_and_sinks_with_on_speech() -> None:
    from types import SimpleNamespace

    from soulx_live.factory.sinks import build_sinks

    with short_tmp() as root:
        config = live_config(root, **{"sinks.obs.enabled": True})
        pytest.importorskip("obsws_python")
        sinks = build_sinks(config)
        assert [type(s).__name__ for s in sinks] == ["ObsSink"]
        daemon = Daemon(config)
    speaking: list[bool] = []
    heard: list[object] = []
    daemon.fanout.sinks = [SimpleNamespace(name="obs", on_speech=speaking.append), ProbeSink()]  # type: ignore[list-item]
    daemon.speech_listeners.append(heard.append)
    for kind in ("started", "finished", "started", "interrupted"):
        daemon.push.emit_speech(SimpleNamespace(kind=kind, utterance_id="u", position_s=0.0, played_s=0.0))
    assert speaking == [True, False, True, False] and len(heard) == 4


def test_a_stop_that_cuts_an_utterance_tells_the_push_clients() -> None:
    """Shutdown in the middle of a pushed utterance: the client gets ``interrupted`` with how much played, instead
    of waiting for a ``finished`` that never comes (the events go out before the push server closes)."""
    from soulx_live.push.client import PushClient

    with short_tmp() as root:
        daemon, probe = _push_daemon(root, **{"push.enabled": True, "push.max_packet_s": 10.0})
        runner = DaemonThread(daemon).start()
        try:
            _handler(daemon)
            wait_for(lambda: daemon.push.server is not None and len(probe.snapshot()) >= 2, 15, "push server, idle")
            with PushClient(daemon.config) as client:
                client.subscribe()
                client.push_pcm((_tone(8.0) * 32767).astype(np.int16), SR, utterance_id="long")
                events = client.events(timeout_s=10)
                first = next(events)
                assert first.kind == "started"
                daemon.request_stop("test: stop mid-utterance")
                rest = list(client.events(timeout_s=5))
        finally:
            runner.stop()
    cut = [e for e in rest if e.utterance_id == "long"]
    assert [e.kind for e in cut] == ["interrupted"], rest
    assert 0 < cut[0].played_s < 8.0
