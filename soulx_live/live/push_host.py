"""The push API inside the daemon: the bridge from pushed audio to the push source, the optional server, and
speech events (started/finished/interrupted) to sinks that react to them (OBS scene switch), to in-process
listeners and to the push API's clients.

``audio.source=push``: :class:`~soulx_live.push_bridge.PushBridge` plus (when ``push.enabled``) the ZeroMQ/HTTP
:class:`~soulx_live.push.server.PushServer`. ``audio.source=script``: the script's phoneme timings go to the
engine session.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from engine.interface import ChunkSpec
from soulx_live.audio.push_source import PushSource
from soulx_live.audio.source import AudioSource
from soulx_live.config import SoulxConfig
from soulx_live.push_bridge import PushBridge

__all__ = ["PushHost", "SpeechListener"]

log = logging.getLogger(__name__)

SpeechListener = Callable[[object], None]
Phonemes = list[tuple[int, int, str]]


class PushHost:
    """Hosts the push API for one run; ``sinks`` returns the run's sinks (for their ``on_speech``)."""

    def __init__(self, config: SoulxConfig, sinks: Callable[[], list[Any]]) -> None:
        self._config = config
        self._sinks = sinks
        self.listeners: list[SpeechListener] = []
        self.bridge: PushBridge | None = None
        self.server: Any = None
        self.http_mount: Callable[[Any], str] | None = None  # the Studio serves the push HTTP API on its port

    def start(self, source: AudioSource, spec: ChunkSpec, *, interrupt: Callable[[], int],
              push_phonemes: Callable[[Phonemes], None], status: Callable[[], dict[str, object]]) -> None:
        if hasattr(source, "on_phonemes"):  # ScriptSource: spans on the fed timeline, as push_phonemes takes them
            source.on_phonemes = push_phonemes
        if not isinstance(source, PushSource):
            return
        from soulx_live.push_bridge import make_tracker

        tracker = make_tracker(spec.sample_rate, self.emit_speech)
        self.bridge = PushBridge(self._config, source, tracker, interrupt=interrupt, push_phonemes=push_phonemes,
                                 status=status)
        if not self._config.push.enabled:
            log.info("push.enabled is false: pushed audio only through Daemon.push_handler")
            return
        try:
            from soulx_live.push.server import PushServer
        except ImportError as exc:
            log.warning("the push server is not part of this build (%s); only Daemon.push_handler can push audio", exc)
            return
        server = PushServer(self._config, self.bridge, http_mount=self.http_mount)
        server.start()
        self.server = server
        log.info("push API on %s%s", server.zmq_address, f" and {server.http_url}" if server.http_url else "")

    def stop(self) -> None:
        """The session is over: cut what is unfinished (its clients get the events), then close the server."""
        if self.bridge is not None:
            self.bridge.session_ended()
        server, self.server = self.server, None
        if server is not None:
            try:
                server.close()
            except Exception:
                log.exception("closing the push server failed")

    def emit_speech(self, event: object) -> None:
        """A speech event of pushed audio: to sinks with ``on_speech``, listeners, and the push clients."""
        kind = getattr(event, "kind", "")
        if kind in ("started", "finished", "interrupted"):  # "lost" changes nothing a scene shows
            for sink in self._sinks():  # e.g. the OBS sink switches scenes while the avatar speaks
                on_speech = getattr(sink, "on_speech", None)
                if on_speech is not None:
                    on_speech(kind == "started")
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("speech listener failed")
        server = self.server
        if server is not None:
            server.publish_event(event)

    def audio_lost(self, start_sample: int, n_samples: int) -> None:
        """Fed-timeline samples the engine never got (an outage past the replay limit): the utterances they belong
        to say so (a ``lost`` event, and ``finished`` reports only what played). Any thread."""
        bridge = self.bridge
        if bridge is not None:
            bridge.tracker.lost(start_sample, n_samples)

    def report_played(self, played_samples: int) -> None:
        """How far the sinks have played: utterances finish when their last sample was shown."""
        if self.bridge is not None:
            self.bridge.on_played(played_samples)
