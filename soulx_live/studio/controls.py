"""What the Studio page's controls do to the running daemon.

Every failure is a :class:`StudioError` with a stable ``code``, a message that names the fix, and the HTTP
status the page gets; the page shows the message as it is.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from soulx_live.runtime_dir import runtime_dir
from soulx_live.studio.gate import SinkGate
from soulx_live.studio.live_input import LiveInput

__all__ = ["StudioControls", "StudioError"]

log = logging.getLogger(__name__)

MAX_TEXT = 2000
AUDIO_PICKS = ("none", "mic", "loopback")


class StudioError(Exception):
    """A refused control: ``code`` for programs, ``message`` for people, ``status`` for HTTP."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def decode_portrait(data: bytes) -> np.ndarray:
    """An uploaded image as uint8 RGB, with a face in it (:class:`StudioError` ``no_face`` / ``bad_image``)."""
    from engine.lite.face_locator import NoFaceError, locate_face

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise StudioError("bad_image", "the file is not an image this page can read; upload a PNG or JPEG photo", 415)
    rgb = np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    try:
        locate_face(rgb)
    except NoFaceError as exc:
        raise StudioError("no_face", f"No face found: {exc}", 422) from None
    return rgb


class StudioControls:
    """``daemon``: the running :class:`~soulx_live.daemon.Daemon` (its status, interrupt, driver, push handler)."""

    def __init__(self, daemon: Any, gates: dict[str, SinkGate],
                 add_sink: Callable[[str], SinkGate] | None = None) -> None:
        self.daemon = daemon
        self.config = daemon.config
        self.gates = gates
        self._add_sink = add_sink
        self.avatar: str = str(self.config.engine.avatar) if self.config.engine.avatar else "built-in"
        self.audio_pick = "none"
        self.audio_device: str | None = None
        self._input: LiveInput | None = None
        self._lock = threading.Lock()
        self._synths: dict[tuple[str, int], Any] = {}

    # -- speech ----------------------------------------------------------------------------------

    def say(self, text: str, voice: str | None, rate_wpm: int | None) -> dict[str, Any]:
        bridge = self._bridge("speak typed text")
        text = text.strip()
        if not text:
            raise StudioError("empty", "type something to say first")
        if len(text) > MAX_TEXT:
            raise StudioError("too_long", f"{len(text)} characters; at most {MAX_TEXT} at a time (split it)")
        if rate_wpm is not None and not 80 <= rate_wpm <= 450:
            raise StudioError("bad_rate", f"rate {rate_wpm} words/minute is out of range; pick 80-450")
        synth = self._synth(voice or self.config.tts.voice, rate_wpm or self.config.tts.rate_wpm)
        try:
            receipt = bridge.say(text, voice=voice or None, utterance_id=uuid.uuid4().hex[:12], synth=synth)
        except ValueError as exc:  # queue full, bad voice: the message says what to do
            raise StudioError("refused", str(exc), 429 if "queued" in str(exc) else 400) from None
        except Exception as exc:  # noqa: BLE001 - TtsError (unknown voice, missing backend) names its fix
            raise StudioError("tts_failed", f"speech synthesis failed: {exc}", 400) from None
        sr = bridge.sample_rate
        return {"utterance_id": receipt.utterance_id, "start_s": receipt.start_sample / sr,
                "duration_s": receipt.n_samples / sr}

    def interrupt(self) -> dict[str, Any]:
        start = time.monotonic()
        bridge = self.daemon.push_handler
        epoch = bridge.interrupt() if bridge is not None else self.daemon.interrupt()
        return {"epoch": int(epoch), "took_ms": (time.monotonic() - start) * 1000.0}

    # -- avatar ----------------------------------------------------------------------------------

    def set_avatar(self, data: bytes, filename: str) -> dict[str, Any]:
        """Check the photo for a face, keep it in the runtime dir, interrupt and start a new session with it."""
        limit = int(self.config.studio.max_upload_mb * 2**20)
        if len(data) > limit:
            raise StudioError("too_large", f"the image is {len(data) / 2**20:.1f} MB; at most "
                                           f"studio.max_upload_mb={self.config.studio.max_upload_mb:g} MB", 413)
        rgb = decode_portrait(data)
        folder = runtime_dir(self.config.bus)
        path = folder / f"studio-avatar-{uuid.uuid4().hex[:8]}.png"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())
        self.daemon.interrupt()
        self.daemon.driver.change_avatar(path)
        self.avatar = Path(filename).name or path.name
        log.info("studio: new avatar (%dx%d) for a new session", rgb.shape[1], rgb.shape[0])
        return {"avatar": self.avatar, "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}

    # -- sinks -----------------------------------------------------------------------------------

    def set_sink(self, name: str, enabled: bool) -> dict[str, Any]:
        gate = self.gates.get(name)
        if gate is None and enabled and self._add_sink is not None:
            try:
                self._add_sink(name)
            except ValueError as exc:
                raise StudioError("no_sink", str(exc), 404) from None
            except RuntimeError as exc:  # the session is not running (yet, or any more)
                raise StudioError("not_running", f"cannot add sink {name} now: {exc}", 409) from None
            log.info("studio: sink %s switched on (it was off in the config)", name)
            return {"sink": name, "enabled": True}
        if gate is None:
            raise StudioError("no_sink", f"no sink {name!r} in this run (sinks: {', '.join(self.gates) or 'none'})",
                              404)
        try:
            gate.set_enabled(enabled)
        except ValueError as exc:
            raise StudioError("cannot_reopen", str(exc), 409) from None
        log.info("studio: sink %s %s", name, "enabled" if enabled else "disabled")
        return {"sink": name, "enabled": enabled}

    def sink_states(self) -> dict[str, str]:
        """The sinks switched off on the page (``status`` shows them so; the others report themselves)."""
        return {name: gate.state if gate.state.startswith("failed") else "disabled"
                for name, gate in self.gates.items() if not gate.enabled}

    # -- audio input -----------------------------------------------------------------------------

    def set_audio(self, pick: str, device: str | None) -> dict[str, Any]:
        if pick not in AUDIO_PICKS:
            raise StudioError("bad_source", f"audio source {pick!r}: pick one of {', '.join(AUDIO_PICKS)}")
        source = self._push_source()
        with self._lock:
            old, self._input = self._input, None
            source.mix = None
            if old is not None:
                old.stop()
            if pick != "none":
                from soulx_live.audio.device_source import open_live_source

                try:
                    live = open_live_source(pick, device or None, sample_rate=source.sample_rate,
                                            block_samples=source.block_samples)
                except Exception as exc:  # noqa: BLE001 - no sound server, no such device, no sounddevice: named
                    self.audio_pick, self.audio_device = "none", None
                    raise StudioError("no_device", f"cannot open {pick} {device or '(default)'}: {exc}", 409) from None
                self._input = LiveInput(live, source.sample_rate)
                self._input.start()
                source.mix = self._input.read
            self.audio_pick, self.audio_device = pick, device or None
        log.info("studio: audio input %s %s", pick, device or "")
        return {"source": pick, "device": device}

    def close(self) -> None:
        with self._lock:
            if self._input is not None:
                self._input.stop()
                self._input = None

    # -- OBS -------------------------------------------------------------------------------------

    def obs_scenes(self) -> dict[str, Any]:
        with self._obs() as obs:
            reply = obs.call("GetSceneList")
        return {"scenes": [s.get("sceneName", "") for s in reversed(reply.get("scenes", []))],
                "current": reply.get("currentProgramSceneName")}

    def obs_scene(self, scene: str) -> dict[str, Any]:
        from plugins.obs.setup import switch_scene

        with self._obs() as obs:
            switch_scene(obs, scene)
        log.info("studio: OBS scene switched")
        return {"scene": scene}

    # -- helpers ---------------------------------------------------------------------------------

    def _obs(self) -> Any:
        if not self.config.sinks.obs.enabled:
            raise StudioError("obs_off", "OBS is not enabled; set sinks.obs.enabled=true (and its host/port/password) "
                                         "and restart the daemon", 409)
        from plugins.obs.client import ObsConnection, ObsError

        return _ObsSession(ObsConnection.from_config(self.config.sinks.obs), ObsError)

    def _bridge(self, what: str) -> Any:
        bridge = self.daemon.push_handler
        if bridge is None:
            raise StudioError("no_push", f"to {what} the daemon needs audio.source=push (it plays "
                                         f"{self.config.audio.source!r}); restart with --set audio.source=push", 409)
        return bridge

    def _push_source(self) -> Any:
        return self._bridge("pick an audio input on this page").source

    def _synth(self, voice: str, rate_wpm: int) -> Any:
        key = (voice, rate_wpm)
        if key not in self._synths:
            from soulx_live.tts import build_tts

            self._synths[key] = build_tts(self.config.tts.model_copy(update={"rate_wpm": rate_wpm}))
        return self._synths[key]


class _ObsSession:
    """One short obs-websocket connection; its errors become :class:`StudioError` ``obs_failed``."""

    def __init__(self, conn: Any, error_type: type[Exception]) -> None:
        self.conn = conn
        self.error_type = error_type

    def __enter__(self) -> Any:
        try:
            self.conn.connect()
        except self.error_type as exc:
            raise StudioError("obs_failed", str(exc), 502) from None
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.close()
        if isinstance(exc, self.error_type):
            raise StudioError("obs_failed", str(exc), 502) from None
