"""Sessions start from one request builder: offline ``render`` asks for no play-out deadline (a drifting FlashTalk
chunk is always generated again), a live run asks for the real-time one, and a file rendered as fast as possible
by the daemon counts as offline."""
from __future__ import annotations

import sys
from pathlib import Path

from engine.interface import AvatarEngine, SessionRequest
from engine.lite import LiteConfig, LiteEngine
from soulx_live.config import SoulxConfig, load_config
from soulx_live.daemon import Daemon
from soulx_live.render import render

sys.path.insert(0, str(Path(__file__).parent))

from daemon_fakes import tone, write_audio  # noqa: E402


class _RecordingEngine:
    """The lite engine, remembering each session request (a thin wrapper, no fake frames)."""

    def __init__(self) -> None:
        self._engine = LiteEngine(LiteConfig(width=64, height=64))
        self.name, self.spec = self._engine.name, self._engine.spec
        self.requests: list[SessionRequest] = []

    def start_session(self, request: SessionRequest):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return self._engine.start_session(request)


def _config(tmp_path: Path, **overrides: object) -> SoulxConfig:
    return load_config(None, env={}, overrides={"bus.runtime_dir": str(tmp_path / "rt"), "metrics.enabled": False,
                                                 **overrides})


def test_render_starts_an_offline_session(tmp_path: Path) -> None:
    engine = _RecordingEngine()
    wav = write_audio(tmp_path / "s.wav", tone(0.5, 16000, 200.0), 16000)
    factory: object = lambda config: engine  # noqa: E731
    render(wav, None, tmp_path / "o.mp4", _config(tmp_path), progress=False, engine_factory=factory)  # type: ignore[arg-type]
    assert [r.extra.get("realtime") for r in engine.requests] == [False]


def test_the_daemon_asks_for_real_time_only_when_the_source_is_live(tmp_path: Path) -> None:
    wav = write_audio(tmp_path / "s.wav", tone(0.5, 16000, 200.0), 16000)
    seen = []
    for realtime in (False, True):
        engine = _RecordingEngine()
        config = _config(tmp_path, **{"audio.file": str(wav), "audio.realtime": realtime})

        def factory(config: SoulxConfig, engine: _RecordingEngine = engine) -> AvatarEngine:
            return engine  # type: ignore[return-value]

        assert Daemon(config, engine_factory=factory, sink_factory=lambda c: []).run() == 0
        seen += [r.extra.get("realtime") for r in engine.requests]
    assert seen == [False, True]
