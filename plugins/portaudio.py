"""Helpers around PortAudio (through the ``sounddevice`` module) shared by sinks and audio sources."""
from __future__ import annotations

import logging
from types import ModuleType

__all__ = ["rescan_portaudio"]

log = logging.getLogger(__name__)


def rescan_portaudio(sd: ModuleType) -> None:
    """Make PortAudio enumerate devices again (it only does so at initialisation).

    ``sd`` is the imported ``sounddevice`` module, passed in so that this module never imports it
    (it is an optional extra). Needed when a device is plugged in, or a sound server started, after
    PortAudio came up. Never call it while a stream is open or still closing: re-initialising
    PortAudio under a live stream is undefined. A failure is only logged: the caller's next device
    lookup reports the real problem.
    """
    try:
        sd._terminate()  # sounddevice has no public re-scan; these are its own init/teardown hooks
        sd._initialize()
    except Exception as exc:  # noqa: BLE001 - any failure here just means "no new devices"
        log.debug("PortAudio re-scan failed: %s", exc)
