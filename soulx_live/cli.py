"""``soulx-live``: the command line.

Commands: ``run`` (the daemon in the foreground), ``demo``, ``render``, ``devices``, ``doctor``,
``status``. Global options (before or after the command): ``--config FILE``, ``--set KEY=VALUE``
(repeatable, dotted config keys), ``-v/--verbose`` (debug logs and tracebacks).

Exit codes: 0 success; 1 failure while running; 2 bad usage or configuration; 3 ``status`` found no
daemon; 130 interrupted before the daemon started. Errors are one line on stderr (no traceback
unless ``--verbose``). Tables go to stdout, logs to stderr.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from soulx_live import __version__
from soulx_live.log import setup_logging

if TYPE_CHECKING:
    from soulx_live.config import SoulxConfig

__all__ = ["EXIT_FAILURE", "EXIT_NO_DAEMON", "EXIT_OK", "EXIT_USAGE", "main"]

log = logging.getLogger("soulx_live.cli")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_INTERRUPTED = 130

DEFAULT_DEMO_OUT = Path("out/demo.mp4")


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


# --- argument parsing -----------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every command takes; ``suppress`` keeps a sub-command from resetting them."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", metavar="FILE", type=Path, default=default,
                        help="YAML config file (default: $SOULX_CONFIG, else the packaged defaults)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append",
                        default=argparse.SUPPRESS if suppress else [],
                        help="override one config key, e.g. --set engine.seed=3 (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="debug logging, and tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soulx-live",
        description="Local daemon that turns live audio into a live talking avatar (virtual camera, OBS, mp4).",
        epilog="Exit codes: 0 ok, 1 failure, 2 bad usage or config, 3 no daemon (status).",
    )
    parser.add_argument("--version", action="version", version=f"soulx-live {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(p, suppress=True)
        return p

    run = command("run", "run the daemon in the foreground (Ctrl-C drains and exits, a second Ctrl-C forces)")
    run.add_argument("--audio", metavar="FILE", type=Path, help="play this audio file as the input (audio.source=file)")
    run.add_argument("--avatar", metavar="IMAGE", type=Path, help="portrait to animate (engine.avatar)")
    run.add_argument("--record", metavar="OUT.mp4", type=Path, help="also record the output to this mp4")
    run.add_argument("--remote", metavar="HOST:PORT", help="use the engine of `soulx-live serve` there (remote.address)")
    run.add_argument("--server-key", metavar="KEY", help="the server's public key, text or .key file (remote.server_public_key)")
    run.add_argument("--open", action="store_true", help="open the Studio page in the default browser")
    run.add_argument("--no-studio", action="store_true", help="do not serve the Studio page (studio.enabled=false)")

    demo = command("demo", "built-in speech -> lite renderer -> bus -> recorder: writes a playable mp4")
    demo.add_argument("-o", "--output", metavar="OUT.mp4", type=Path, default=DEFAULT_DEMO_OUT,
                      help=f"output file (default: {DEFAULT_DEMO_OUT})")
    demo.add_argument("--audio", metavar="FILE", type=Path, help="speech to use instead of the built-in one")
    demo.add_argument("--avatar", metavar="IMAGE", type=Path, help="portrait to use instead of the built-in one")
    demo.add_argument("--fast", action="store_true", help="feed the audio as fast as possible instead of in real time")

    render = command("render", "offline: audio file + portrait -> mp4 with the audio muxed")
    render.add_argument("audio", metavar="AUDIO", type=Path, help="speech: wav/mp3/flac/ogg..., any rate and channels")
    render.add_argument("--avatar", metavar="IMAGE", type=Path, help="portrait (default: engine.avatar, else the built-in one)")
    render.add_argument("-o", "--output", metavar="OUT.mp4", type=Path, required=True, help="output mp4")
    render.add_argument("--no-progress", action="store_true", help="no progress bar (it is shown only when stderr is a terminal)")

    command("devices", "list audio inputs/outputs and cameras (video devices)")
    command("doctor", "check what is installed and working; each problem with its fix")
    status = command("status", "ask the running daemon for its state")
    status.add_argument("--timeout", metavar="S", type=float, default=2.0, help="seconds to wait for an answer (default 2)")
    status.add_argument("--json", action="store_true", help="print the reply as JSON")
    for module in _extra_command_modules():
        module.add_arguments(command(module.NAME, module.HELP))
    return parser


# Commands that live in their own module (soulx_live/commands/<name>.py). Each module defines NAME, HELP,
# add_arguments(parser) and run(args, config_loader) -> exit code, and imports nothing heavy at import time.
EXTRA_COMMANDS: tuple[str, ...] = ("bench", "interrupt", "keys", "obs", "say", "serve", "studio")


def _extra_command_modules() -> list[object]:
    import importlib

    return [importlib.import_module(f"soulx_live.commands.{name}") for name in EXTRA_COMMANDS]


# Keys whose values are secrets: never accepted from the command line (readable by any local user).
SECRET_KEYS = frozenset({"push.token"})


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` (values are parsed by the config loader)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE (e.g. --set engine.seed=3), got {item!r}")
        if key.strip() in SECRET_KEYS:  # the value is not echoed: it is the secret
            raise UsageError(f"--set {key.strip()}=... is refused: a command line is visible to every local user "
                             "(ps, /proc). Give the token in a file, --set push.token_file=PATH (mode 0600), or in "
                             "the environment, SOULX_PUSH__TOKEN=... (or push.token in the config file)")
        out[key.strip()] = value
    return out


def load(args: argparse.Namespace, extra: dict[str, object] | None = None) -> object:
    """The effective configuration for this command (file < env < --set < command flags)."""
    from soulx_live.config import load_config

    path = args.config or (Path(os.environ["SOULX_CONFIG"]) if os.environ.get("SOULX_CONFIG") else None)
    overrides: dict[str, object] = dict(parse_overrides(args.overrides))
    overrides.update(extra or {})
    return load_config(path, overrides=overrides)


def _configure_logging(args: argparse.Namespace, config: object | None, process_name: str) -> None:
    cfg = getattr(config, "logging", None)
    level = "DEBUG" if args.verbose else getattr(cfg, "level", "INFO")
    setup_logging(level=level, fmt=getattr(cfg, "format", "text"), process_name=process_name)


def _out(text: str) -> None:
    sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    sys.stdout.flush()


# --- commands -------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    extra: dict[str, object] = {}
    if args.audio is not None:
        extra.update({"audio.source": "file", "audio.file": args.audio.resolve()})
    if args.avatar is not None:
        extra["engine.avatar"] = args.avatar.resolve()
    if args.record is not None:
        extra.update({"sinks.recorder.enabled": True, "sinks.recorder.path": args.record.resolve()})
    if args.remote is not None:
        extra["remote.address"] = args.remote
    if args.server_key is not None:
        extra["remote.server_public_key"] = args.server_key
    if args.open:
        extra["studio.open_browser"] = True
    config = load(args, extra)
    _configure_logging(args, config, "daemon")
    from soulx_live.daemon import Daemon

    config = _studio_defaults(config, args)  # type: ignore[arg-type]
    return Daemon(config, announce=_out).run()  # the Studio's one-time link: to stdout, never to the log (stderr)


def _studio_defaults(config: SoulxConfig, args: argparse.Namespace) -> SoulxConfig:
    """``run`` serves the Studio unless told not to (studio.enabled null means "on here"); with the Studio and no
    audio named (no --audio, no audio.file), the avatar waits for typed text or a picked input (audio.source=push)
    instead of playing the built-in demo speech and exiting."""
    import importlib.util

    off = args.no_studio or config.studio.enabled is False
    if not off and config.studio.enabled is None and importlib.util.find_spec("aiohttp") is None:
        log.warning('the Studio page needs aiohttp (pip install "soulx-live[http]"); '
                    "running without it")
        off = True
    if off:
        return config.model_copy(update={"studio": config.studio.model_copy(update={"enabled": False})})
    update: dict[str, object] = {"studio": config.studio.model_copy(update={"enabled": True})}
    if args.audio is None and config.audio.source == "file" and config.audio.file is None:
        update["audio"] = config.audio.model_copy(update={"source": "push"})
    return config.model_copy(update=update)



def cmd_demo(args: argparse.Namespace) -> int:
    out = args.output.resolve()
    extra: dict[str, object] = {
        "engine.kind": "lite",
        "engine.avatar": args.avatar.resolve() if args.avatar else None,
        "audio.source": "file",
        "audio.file": args.audio.resolve() if args.audio else None,
        "audio.realtime": not args.fast,
        "sinks.recorder.enabled": True,
        "sinks.recorder.path": out,
    }
    camera = _virtual_camera()
    if camera is not None:
        extra["sinks.virtualcam.enabled"] = True
        extra["sinks.virtualcam.device"] = camera
    config = load(args, extra)
    _configure_logging(args, config, "demo")
    from plugins.recorder import probe_media
    from soulx_live.daemon import Daemon

    if camera is not None:
        log.info("also feeding the virtual camera %s", camera)
    code = Daemon(config).run()
    if not out.is_file():
        log.error("the demo did not produce %s", out)
        return code or EXIT_FAILURE
    info = probe_media(out)
    log.info("demo written to %s: video %.3f s (%d frames), audio %.3f s, A/V difference %.1f ms",
             out, info.video_s, info.frames, info.audio_s, 1000 * abs(info.video_s - info.audio_s))
    return code


def _virtual_camera() -> str | None:
    """The first v4l2loopback device when pyvirtualcam is installed, else None (the demo then records only)."""
    import importlib.util

    from soulx_live.devices import list_video_devices

    if importlib.util.find_spec("pyvirtualcam") is None:
        return None
    cams = [d for d in list_video_devices() if d.is_loopback]
    return cams[0].path if cams else None


def cmd_render(args: argparse.Namespace) -> int:
    config = load(args)
    _configure_logging(args, config, "render")
    from soulx_live.render import render

    t0 = time.monotonic()
    show = not args.no_progress and sys.stderr.isatty()  # a \r progress bar is noise in a log file
    stats = render(args.audio, args.avatar, args.output, config, progress=show)
    elapsed = time.monotonic() - t0
    log.info("rendered %s: %d frames, video %.3f s, audio %.3f s in %.1f s (%.2fx real time)",
             stats.path, stats.frames, stats.video_duration_s, stats.audio_duration_s, elapsed,
             stats.video_duration_s / elapsed if elapsed > 0 else 0.0)
    return EXIT_OK


def cmd_devices(args: argparse.Namespace) -> int:
    _configure_logging(args, None, "cli")
    from soulx_live.devices import audio_unavailable_reason, list_audio_devices, list_video_devices

    lines = ["Audio devices:"]
    reason = audio_unavailable_reason()
    if reason is not None:
        lines.append(f"  unavailable: {reason}")
    else:
        devices = list_audio_devices()
        if not devices:
            lines.append("  none found (is a sound server running? see `soulx-live doctor`)")
        for d in devices:
            marks = ", ".join(m for m, on in (("default input", d.is_default_input), ("default output", d.is_default_output)) if on)
            lines.append(f"  [{d.index:>2}] in {d.max_input_channels:>2}  out {d.max_output_channels:>2}  "
                         f"{d.default_samplerate:>7.0f} Hz  {d.name} ({d.hostapi}){f'  <- {marks}' if marks else ''}")
    lines.append("Cameras (video devices):")
    cams = list_video_devices()
    if not cams:
        lines.append("  none (/dev/video* is empty; for a virtual camera load v4l2loopback, see `soulx-live doctor`)")
    for c in cams:
        lines.append(f"  {c.path}  {c.name}{'  (virtual: v4l2loopback)' if c.is_loopback else ''}")
    _out("\n".join(lines))
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from soulx_live.config import ConfigError
    from soulx_live.doctor import Check, format_table, run_checks

    config = None
    try:
        config = load(args)
        config_row = Check("config", True, str(args.config or os.environ.get("SOULX_CONFIG") or "packaged defaults"), required=True)
    except ConfigError as exc:
        config_row = Check("config", False, str(exc).replace("\n", " "), "fix the key named above", required=True)
    _configure_logging(args, config, "cli")
    rows = [config_row, *run_checks(config)]
    _out(format_table(rows))
    failed = [r for r in rows if r.required and r.ok is False]
    return EXIT_FAILURE if failed else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    config = load(args)
    _configure_logging(args, config, "cli")
    from soulx_live.control.client import query_status
    from soulx_live.errors import DaemonUnavailable

    try:
        reply = query_status(config.bus, timeout_s=args.timeout)
    except DaemonUnavailable as exc:
        sys.stderr.write(f"soulx-live: {exc}\n")
        return EXIT_NO_DAEMON
    if args.json:
        import msgspec

        _out(msgspec.json.encode(reply).decode())
        return EXIT_OK
    from soulx_live.status_table import format_status

    _out(format_status(reply))
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "demo": cmd_demo,
    "render": cmd_render,
    "devices": cmd_devices,
    "doctor": cmd_doctor,
    "status": cmd_status,
}


# --- entry point ----------------------------------------------------------------------------------


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is the whole story for the user (shown as one line, no traceback)."""
    from engine.extras import MissingExtraError
    from plugins.base import SinkError
    from soulx_live.audio.file import AudioFileError
    from soulx_live.errors import DaemonError
    from soulx_live.runtime_dir import RuntimeDirError

    found: list[type[BaseException]] = [AudioFileError, DaemonError, MissingExtraError, RuntimeDirError, SinkError, OSError]
    # Engine errors: only from modules already loaded (importing them just to compare would load torch/cv2).
    for module, name in (("engine.loading.state_dict", "CheckpointError"), ("engine.lite.face_locator", "NoFaceError")):
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (``soulx-live`` exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    setup_logging(level="DEBUG" if args.verbose else "INFO", process_name="cli")
    from soulx_live.config import ConfigError

    try:
        if args.command in COMMANDS:
            return COMMANDS[args.command](args)
        import importlib

        return importlib.import_module(f"soulx_live.commands.{args.command.replace('-', '_')}").run(args, load)
    except (ConfigError, UsageError) as exc:
        return _fail(args, exc, EXIT_USAGE)
    except KeyboardInterrupt:
        sys.stderr.write("soulx-live: interrupted\n")
        return EXIT_INTERRUPTED
    except _expected_errors() as exc:
        return _fail(args, exc, EXIT_FAILURE)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback only with --verbose
        return _fail(args, exc, EXIT_FAILURE, unexpected=True)


def _fail(args: argparse.Namespace, exc: BaseException, code: int, unexpected: bool = False) -> int:
    if args.verbose:
        log.debug("traceback", exc_info=exc)
    text = str(exc) or type(exc).__name__
    if unexpected:
        text = f"unexpected {type(exc).__name__}: {text}" + ("" if args.verbose else " (run with --verbose for the traceback)")
    sys.stderr.write(f"soulx-live: error: {text}\n")
    return code

