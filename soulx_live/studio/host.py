"""The Studio inside one daemon run: builds the gated sinks and the preview, serves the page, says where.

The daemon calls :meth:`StudioHost.sink_factory` to wrap its sink factory (every sink behind a
:class:`~soulx_live.studio.gate.SinkGate`, plus the preview sink), :meth:`start` once its metrics are up and
:meth:`close` at the end. The login link goes to the terminal through ``announce`` (the CLI's stdout; the log
is on stderr), never through logging.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugins.base import FrameSink
from soulx_live.config import SoulxConfig
from soulx_live.studio.auth import StudioAuth
from soulx_live.studio.controls import StudioControls
from soulx_live.studio.gate import SinkGate
from soulx_live.studio.health import health_figures
from soulx_live.studio.preview import PreviewSink

__all__ = ["StudioHost", "attach_studio"]

log = logging.getLogger(__name__)

SinkFactory = Callable[[SoulxConfig], list[FrameSink]]
SINK_KINDS = ("recorder", "virtualcam", "virtualmic", "obs")  # the config's sinks, each switchable on the page


class StudioHost:
    """``daemon``: the :class:`~soulx_live.daemon.Daemon` being served."""

    def __init__(self, daemon: Any, announce: Callable[[str], None] | None = None) -> None:
        self.daemon = daemon
        self.config: SoulxConfig = daemon.config
        self.auth = StudioAuth()
        self.gates: dict[str, SinkGate] = {}
        self.controls = StudioControls(daemon, self.gates, add_sink=self.add_sink)
        self.server: Any = None
        self.url: str | None = None
        self._announce = announce
        self._rebuilt = 0
        self._build: tuple[SinkFactory, SoulxConfig] | None = None  # the run's own sink factory and config

    # -- composition -----------------------------------------------------------------------------

    def sink_factory(self, inner: SinkFactory) -> SinkFactory:
        """``inner``'s sinks, each behind a gate, and the preview sink."""
        def build(config: SoulxConfig) -> list[FrameSink]:
            self._build = (inner, config)
            gates = [SinkGate(sink, self._rebuilder(inner, config, sink.name, getattr(sink, "path", None)))
                     for sink in inner(config)]
            gates.append(SinkGate(self._preview(), self._preview))
            self.gates.clear()
            self.gates.update({gate.name: gate for gate in gates})
            return list(gates)
        return build

    def _preview(self) -> PreviewSink:
        server = self.server
        return PreviewSink(lambda data: server.send(data) if server else None,
                           lambda: bool(server and server.watching()),
                           lambda epoch: server.send_json({"type": "flush", "epoch": epoch}) if server else None,
                           quality=self.config.studio.preview_quality)

    def add_sink(self, name: str) -> SinkGate:
        """Switch on a sink the config left off: built and opened on its new fan-out thread (a failure to build
        or open shows as its state, ``failed: <why>``)."""
        if name not in SINK_KINDS or self._build is None:
            raise ValueError(f"no sink kind {name!r}; one of {', '.join(SINK_KINDS)}")
        inner, config = self._build
        gate = SinkGate(None, self._rebuilder(inner, config, name, None), name=name,
                        queue_chunks=16 if name == "recorder" else 0)  # the recorder prefers late to lost
        self.daemon.fanout.add(gate)
        self.gates[name] = gate
        return gate

    def _rebuilder(self, inner: SinkFactory, config: SoulxConfig, name: str,
                   path: Path | None) -> Callable[[], FrameSink] | None:
        """A fresh sink of kind ``name`` for (re-)enabling; a recorder that wrote ``path`` writes a new numbered file
        (nothing is overwritten)."""
        section = getattr(config.sinks, name, None)
        if section is None or not hasattr(section, "enabled"):
            return None  # an injected sink (tests): it cannot be built again

        def rebuild() -> FrameSink:
            self._rebuilt += 1
            sinks = {key: {"enabled": key == name} for key in ("recorder", "virtualcam", "virtualmic", "obs")}
            if name == "recorder" and path is not None:  # the first recording's file (also when the daemon named it)
                old = Path(path)
                sinks["recorder"]["path"] = str(old.with_name(f"{old.stem}-{self._rebuilt + 1}{old.suffix}"))
            update = config.model_copy(update={"sinks": config.sinks.model_copy(update={
                key: getattr(config.sinks, key).model_copy(update=value) for key, value in sinks.items()})})
            return next(s for s in inner(update) if s.name == name)
        return rebuild

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str | None:
        """Serve the page; a busy port costs the page, not the session (logged, and said at the terminal)."""
        from soulx_live.studio.server import StudioServer

        cfg = self.config.studio
        server = StudioServer(cfg.host, cfg.port, self.auth, self.controls, self.state, self.health)
        try:
            self.url = server.start()
        except OSError as exc:
            log.warning("%s", exc)
            if self._announce is not None:
                self._announce(f"Studio: not served ({exc})")
            return None
        self.server = server
        push = self.config.push
        if push.http_enabled and push.http_port in (cfg.port, 0) and push.http_host == cfg.host:
            self.daemon.push.http_mount = server.mount_push  # one loopback port for the page and the push API
        self.daemon.speech_listeners.append(self._on_speech)
        log.info("Studio page on %s (log in with the one-time link printed at start)", self.url)
        if self._announce is not None:
            self._announce(f"Studio: {self.login_url()}  (one-time link: it logs one browser in)")
        if cfg.open_browser:
            import webbrowser

            webbrowser.open(self.login_url())
        return self.url

    def close(self) -> None:
        self.controls.close()
        if self.server is not None:
            self.server.close()
            self.server = None

    def new_link(self) -> str | None:
        """A fresh one-time login link (``soulx-live studio``); the previous unused one stops working."""
        if self.url is None:
            return None
        log.info("studio: a new one-time login link was handed out")
        return self.url + self.auth.new_code()

    def login_url(self) -> str:
        assert self.url is not None
        return self.url + self.auth.login_path()

    # -- what the page reads ---------------------------------------------------------------------

    def sink_states(self) -> dict[str, str]:
        return self.controls.sink_states()

    def health(self) -> dict[str, Any]:
        return health_figures(self.daemon.status(), self.daemon.metrics)

    def state(self) -> dict[str, Any]:
        status = self.daemon.status()
        cfg = self.config
        bridge = self.daemon.push_handler
        return {
            "state": status.state, "engine": status.engine, "session": status.session_id, "detail": status.detail,
            "uptime_s": status.uptime_s, "chunks": status.chunks_done, "restarts": status.restarts,
            "sinks": [{"name": name, "enabled": gate.enabled, "state": status.sinks.get(name, gate.state),
                       "can_reopen": gate.can_reopen} for name, gate in self.gates.items()]
            + [{"name": name, "enabled": False, "state": "off in the config", "can_reopen": True}
               for name in SINK_KINDS if name not in self.gates and self._build is not None],
            "avatar": self.controls.avatar,
            "audio": {"configured": cfg.audio.source, "pick": self.controls.audio_pick,
                      "device": self.controls.audio_device, "switchable": bridge is not None,
                      "devices": _input_devices()},
            "tts": {"voice": cfg.tts.voice, "rate_wpm": cfg.tts.rate_wpm, "backend": cfg.tts.backend,
                    "available": bridge is not None},
            "obs": {"enabled": cfg.sinks.obs.enabled},
            "metrics_on": self.daemon.metrics is not None,
        }

    def _on_speech(self, event: object) -> None:
        server = self.server
        if server is not None:
            server.send_json({"type": "speech", "kind": getattr(event, "kind", ""),
                              "utterance_id": getattr(event, "utterance_id", "")})


def _input_devices() -> list[str]:
    """Sound input names for the page's picker ([] without sounddevice/PortAudio)."""
    try:
        from soulx_live.devices import list_audio_devices

        return [d.name for d in list_audio_devices() if d.max_input_channels > 0]
    except Exception:  # noqa: BLE001 - no sound stack: the picker offers the default device only
        return []


def attach_studio(daemon: Any, sink_factory: SinkFactory,
                  announce: Callable[[str], None] | None) -> tuple[StudioHost | None, SinkFactory]:
    """The daemon's Studio when ``studio.enabled`` is true, and the sink factory to use (wrapped when it is)."""
    if not daemon.config.studio.enabled:
        return None, sink_factory
    from engine.extras import require

    require("aiohttp", "http", "the Studio page")  # fail before anything starts, with the install hint
    studio = StudioHost(daemon, announce)
    return studio, studio.sink_factory(sink_factory)
