"""``soulx-live obs setup|status``: put the avatar into OBS Studio in one command, or check the link.

``setup`` connects to obs-websocket (``sinks.obs.host/port/password``), creates or updates the scene
``sinks.obs.scene`` with the Media Source ``sinks.obs.source_name`` reading the daemon's feed at
``tcp://sinks.obs.feed_host:feed_port``, fits it to the canvas and prints what it did. The daemon need
not run yet: the source reconnects every second until the daemon serves the feed. ``status`` prints
OBS's version, the program scene and whether the source exists and points at the feed.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

NAME = "obs"
HELP = "create/update the avatar source in OBS Studio (setup) or check the link (status)"

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE = 0, 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("setup", "status"), help="setup: create/update the scene and source; "
                        "status: show what OBS has")
    parser.add_argument("--show", action="store_true", help="setup: also switch OBS's program to the avatar scene")
    parser.add_argument("--scene", default=None, help="scene to put the source in (default: sinks.obs.scene)")


def run(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    extra: dict[str, object] = {}
    if args.scene:
        extra["sinks.obs.scene"] = args.scene
    config = load(args, extra)
    cfg = config.sinks.obs
    from plugins.obs.client import ObsConnection, ObsError

    obs = ObsConnection.from_config(cfg)
    try:
        if args.action == "setup":
            return _setup(obs, cfg, show=args.show)
        return _status(obs, cfg)
    except ObsError as exc:
        _out(f"error: {exc}")
        return EXIT_FAILURE
    finally:
        obs.close()


def _setup(obs: Any, cfg: Any, *, show: bool) -> int:
    from plugins.obs.feed import feed_url
    from plugins.obs.setup import ensure_source

    url = feed_url(cfg.feed_host, cfg.feed_port)
    report = ensure_source(obs, cfg.scene, cfg.source_name, url, show_scene=show)
    _out(f"OBS at {obs.where}:")
    for action in report.actions or ["nothing to change"]:
        _out(f"  - {action}")
    _out(f"the source shows the avatar while `soulx-live run` serves the feed at {url} "
         f"(set sinks.obs.enabled=true); it reconnects by itself within a second")
    if not cfg.enabled:
        _out("note: sinks.obs.enabled is false in this configuration, so the daemon will not serve the feed")
    return EXIT_OK


def _status(obs: Any, cfg: Any) -> int:
    from plugins.obs.feed import feed_url
    from plugins.obs.setup import FEED_INPUT_KIND

    version = obs.call("GetVersion")
    program = obs.call("GetCurrentProgramScene").get("currentProgramSceneName", "?")
    _out(f"OBS {version.get('obsVersion', '?')} (obs-websocket {version.get('obsWebSocketVersion', '?')}) at {obs.where}; "
         f"program scene {program!r}")
    inputs = {i["inputName"]: i.get("inputKind", "") for i in obs.call("GetInputList").get("inputs", [])}
    url = feed_url(cfg.feed_host, cfg.feed_port)
    if cfg.source_name not in inputs:
        _out(f"source {cfg.source_name!r} is missing: run `soulx-live obs setup`")
        return EXIT_FAILURE
    if inputs[cfg.source_name] != FEED_INPUT_KIND:
        _out(f"source {cfg.source_name!r} is a {inputs[cfg.source_name]!r}, not a Media Source: set sinks.obs.source_name")
        return EXIT_FAILURE
    current = obs.call("GetInputSettings", {"inputName": cfg.source_name}).get("inputSettings", {}).get("input")
    state = obs.call("GetMediaInputStatus", {"inputName": cfg.source_name}).get("mediaState", "?")
    _out(f"source {cfg.source_name!r} reads {current} (media state {state})")
    if state != "OBS_MEDIA_STATE_PLAYING":
        _out("no live feed right now: is `soulx-live run` running with sinks.obs.enabled=true?")
    if current != url:
        _out(f"it does not point at the configured feed {url}: run `soulx-live obs setup`")
        return EXIT_FAILURE
    return EXIT_OK


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
