"""Create or update the avatar's scene and Media Source in OBS (idempotent, safe to run repeatedly).

The source is an ``ffmpeg_source`` reading the feed served by :class:`~plugins.obs.feed.FeedServer`,
with the low-latency settings measured in ``integration.md`` §1: reconnect after 1 s (OBS's default
is 10 s, which delays the first picture when OBS starts before the daemon), never closed when
inactive, and ffmpeg told not to buffer or probe. The scene item is fitted into the canvas
(aspect kept, centred). Settings are only written when they differ, because writing them restarts
the Media Source.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from plugins.obs.client import ObsConnection, ObsError

__all__ = ["FEED_INPUT_KIND", "SetupReport", "ensure_source", "feed_input_settings", "switch_scene"]

log = logging.getLogger(__name__)

FEED_INPUT_KIND = "ffmpeg_source"
LOW_LATENCY_FFMPEG_OPTIONS = "fflags=nobuffer probesize=32 analyzeduration=0"
OBS_BOUNDS_SCALE_INNER = "OBS_BOUNDS_SCALE_INNER"
OBS_ALIGN_CENTER = 0


def feed_input_settings(url: str) -> dict[str, Any]:
    """The Media Source settings for a live feed at ``url``."""
    return {
        "is_local_file": False,
        "input": url,
        "input_format": "nut",
        "reconnect_delay_sec": 1,
        "close_when_inactive": False,
        "restart_on_activate": False,
        "clear_on_media_end": False,
        "hw_decode": False,
        "buffering_mb": 1,
        "ffmpeg_options": LOW_LATENCY_FFMPEG_OPTIONS,
    }


@dataclass
class SetupReport:
    """What :func:`ensure_source` did (printed by ``soulx-live obs setup``)."""

    scene: str
    source: str
    url: str
    scene_item_id: int = -1
    canvas: tuple[int, int] = (0, 0)
    actions: list[str] = field(default_factory=list)

    def summary(self) -> str:
        done = "; ".join(self.actions) if self.actions else "nothing to change"
        return f"OBS scene {self.scene!r}, source {self.source!r} reading {self.url}: {done}"


def ensure_source(obs: ObsConnection, scene: str, source: str, url: str, *, show_scene: bool = False) -> SetupReport:
    """Make ``scene`` hold the Media Source ``source`` reading ``url``; a newly placed item is fitted to the canvas.

    An item that already was in the scene keeps its position and size (the user may have moved it).

    Raises :class:`ObsError` (e.g. ``kind="conflict"`` when ``source`` names an input of another kind).
    """
    report = SetupReport(scene=scene, source=source, url=url)
    scenes = {s["sceneName"] for s in obs.call("GetSceneList").get("scenes", [])}
    if scene not in scenes:
        obs.call("CreateScene", {"sceneName": scene})
        report.actions.append(f"created scene {scene!r}")
    settings = feed_input_settings(url)
    inputs = {i["inputName"]: i.get("inputKind", "") for i in obs.call("GetInputList").get("inputs", [])}
    if source in inputs:
        if inputs[source] != FEED_INPUT_KIND:
            raise ObsError(f"OBS already has an input {source!r} of kind {inputs[source]!r}, not a Media Source: rename or "
                           f"delete it in OBS, or set sinks.obs.source_name to another name", kind="conflict")
        current = obs.call("GetInputSettings", {"inputName": source}).get("inputSettings", {})
        if any(current.get(k) != v for k, v in settings.items()):
            obs.call("SetInputSettings", {"inputName": source, "inputSettings": settings, "overlay": True})
            report.actions.append(f"pointed source {source!r} at {url}")
        report.scene_item_id = _scene_item(obs, scene, source, report)
    else:
        reply = obs.call("CreateInput", {"sceneName": scene, "inputName": source, "inputKind": FEED_INPUT_KIND,
                                         "inputSettings": settings, "sceneItemEnabled": True})
        report.scene_item_id = int(reply.get("sceneItemId", -1))
        report.actions.append(f"created Media Source {source!r} reading {url}")
        if report.scene_item_id < 0:
            report.scene_item_id = _scene_item(obs, scene, source, report)
    if any(a.startswith(("created Media Source", "added ")) for a in report.actions):  # newly placed
        report.canvas = _fit_to_canvas(obs, scene, report.scene_item_id)
        report.actions.append(f"fitted it to the {report.canvas[0]}x{report.canvas[1]} canvas")
    if show_scene:
        switch_scene(obs, scene)
        report.actions.append(f"switched the program to {scene!r}")
    log.info("obs: %s", report.summary())
    return report


def switch_scene(obs: ObsConnection, scene: str) -> None:
    """Make ``scene`` the program scene (ObsError naming the fix when it does not exist)."""
    try:
        obs.call("SetCurrentProgramScene", {"sceneName": scene})
    except ObsError as exc:
        if exc.code == 600:
            raise ObsError(f"OBS has no scene {scene!r}: create it in OBS or fix sinks.obs.speaking_scene/idle_scene",
                           kind="request", code=600) from None
        raise


def _scene_item(obs: ObsConnection, scene: str, source: str, report: SetupReport) -> int:
    """The id of ``source``'s item in ``scene``, adding it to the scene when it is not there."""
    try:
        return int(obs.call("GetSceneItemId", {"sceneName": scene, "sourceName": source})["sceneItemId"])
    except ObsError as exc:
        if exc.code != 600:  # 600: ResourceNotFound, the source is not in this scene yet
            raise
    reply = obs.call("CreateSceneItem", {"sceneName": scene, "sourceName": source, "sceneItemEnabled": True})
    report.actions.append(f"added {source!r} to scene {scene!r}")
    return int(reply["sceneItemId"])


def _fit_to_canvas(obs: ObsConnection, scene: str, item_id: int) -> tuple[int, int]:
    video = obs.call("GetVideoSettings")
    width, height = int(video["baseWidth"]), int(video["baseHeight"])
    transform = {
        "positionX": 0.0, "positionY": 0.0, "alignment": 5,  # top-left corner at the canvas origin
        "boundsType": OBS_BOUNDS_SCALE_INNER, "boundsAlignment": OBS_ALIGN_CENTER,
        "boundsWidth": float(width), "boundsHeight": float(height),
    }
    obs.call("SetSceneItemTransform", {"sceneName": scene, "sceneItemId": item_id, "sceneItemTransform": transform})
    return width, height
