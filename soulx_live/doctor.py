"""``soulx-live doctor``: what is installed and working, each problem with its fix.

Every check is a small function returning one :class:`Check` row. ``ok`` is True (working), False
(broken or missing) or None (optional and not in use, e.g. OBS when no OBS sink is configured).
``required`` rows are what the default lite engine, the bus and the recorder need; only those make
``doctor`` exit non-zero. Checks never raise: a crashing probe is reported as a failed row.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from engine.extras import install_hint
from engine.loading.layout import flashhead_weights_problems, weights_problems  # the released layout is the engine's knowledge
from soulx_live.devices import list_video_devices, v4l2loopback_loaded

__all__ = ["Check", "format_table", "run_checks"]

log = logging.getLogger(__name__)


class Check(NamedTuple):
    name: str
    ok: bool | None
    detail: str
    fix: str = ""
    required: bool = False


# -- python packages -----------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def check_python() -> Check:
    v = sys.version_info
    ok = v >= (3, 10)
    return Check("python", ok, f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
                 "" if ok else "use Python 3.10 or newer", required=True)


def _module_check(name: str, module: str, dist: str, fix: str, required: bool = False) -> Check:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return Check(name, False if required else None, f"not installed ({exc.name or module})", fix, required)
    except (OSError, RuntimeError) as exc:  # installed but broken: ABI mismatch, missing shared library
        return Check(name, False, f"installed but fails to import: {exc}", fix, required)
    return Check(name, True, f"{dist} {_version(dist)}", "", required)


def check_core_packages() -> list[Check]:
    fix = 'pip install -e . (or pip install soulx-live) to get the core dependencies'
    rows = [
        _module_check(f"package {dist}", module, dist, fix, required=True)
        for module, dist in (("numpy", "numpy"), ("zmq", "pyzmq"), ("msgspec", "msgspec"), ("pydantic", "pydantic"),
                             ("yaml", "pyyaml"), ("PIL", "pillow"), ("cv2", "opencv-python-headless"))
    ]
    return rows


def check_pyav() -> Check:
    try:
        import av
    except ImportError:
        return Check("PyAV (mp4 + audio decode)", False, "not installed", "pip install av", required=True)
    missing = []
    for codec, mode in (("libx264", "w"), ("aac", "w"), ("mp3", "r"), ("flac", "r")):
        try:
            av.codec.Codec(codec, mode)
        except Exception:  # noqa: BLE001 - PyAV raises several types for unknown codecs
            missing.append(f"{codec} ({'encoder' if mode == 'w' else 'decoder'})")
    if missing:
        return Check("PyAV (mp4 + audio decode)", False, f"av {av.__version__} lacks {', '.join(missing)}",
                     "install the PyPI wheel of av (pip install --force-reinstall av), which bundles these codecs", True)
    return Check("PyAV (mp4 + audio decode)", True, f"av {av.__version__}, FFmpeg with libx264 + aac", required=True)


def check_remote_encoder(wanted: str) -> Check:
    """The H.264 encoder ``soulx-live serve`` would use here (``remote.video_encoder``), and every one that opens."""
    from soulx_live.remote.encoders import EncoderUnavailable, choose_encoder, usable_encoders

    usable = usable_encoders()
    try:
        name = choose_encoder(wanted, usable)
    except EncoderUnavailable as exc:
        return Check("H.264 encoder (remote video)", False, str(exc), "set remote.video_encoder=auto", required=False)
    return Check("H.264 encoder (remote video)", True,
                 f"{name} (remote.video_encoder={wanted}; opens here: {', '.join(usable)})", required=False)


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("torch", False, "not installed", "pip install torch (CPU) or see README for a CUDA build", True)]
    except (OSError, RuntimeError) as exc:
        return [Check("torch", False, f"fails to import: {exc}", "reinstall torch matching your CUDA driver", True)]
    rows = [Check("torch", True, f"torch {torch.__version__}", required=True)]
    cuda_build = torch.version.cuda
    try:
        available = torch.cuda.is_available()
    except RuntimeError as exc:
        available, why = False, str(exc)
    else:
        why = ""
    if available:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows.append(Check("CUDA", True, f"CUDA {cuda_build}, {len(names)} GPU(s): {', '.join(names)}"))
    elif cuda_build is None:
        rows.append(Check("CUDA", None, "CPU-only torch build (fine for the lite engine)",
                          'FlashTalk needs a CUDA build: pip install torch --index-url https://download.pytorch.org/whl/cu124'))
    else:
        rows.append(Check("CUDA", False, f"torch built for CUDA {cuda_build} but no GPU is usable {why}".strip(),
                          "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"))
    return rows


def check_optional_packages() -> list[Check]:
    return [
        _module_check("transformers (FlashTalk audio)", "transformers", "transformers", install_hint("engine")),
        _module_check("flash-attn", "flash_attn", "flash-attn", install_hint("gpu") + " (needs CUDA and a matching torch)"),
        _xfuser_check(),
    ]


def _xfuser_check() -> Check:
    """Through the engine's one xfuser module: xfuser raises at import without a GPU, which is not a defect."""
    if importlib.util.find_spec("xfuser") is None:
        return Check("xfuser (multi-GPU)", None, "not installed (the native all-to-all/ring path is used)",
                     install_hint("multigpu"))
    from engine.parallel.xfuser_attention import xfuser_probe

    modules, reason = xfuser_probe()
    return Check("xfuser (multi-GPU)", True if modules else None, f"xfuser {_version('xfuser')}: {reason}",
                 "" if modules else install_hint("multigpu"))


# -- devices and services --------------------------------------------------------------------------


def check_virtual_camera() -> list[Check]:
    rows = [_module_check("pyvirtualcam", "pyvirtualcam", "pyvirtualcam", install_hint("vcam"))]
    modprobe = 'sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="soulx-live"'
    loaded = v4l2loopback_loaded()
    cams = [d for d in list_video_devices() if d.is_loopback]
    if loaded and cams:
        rows.append(Check("v4l2loopback", True, ", ".join(f"{d.path} ({d.name})" for d in cams)))
    elif loaded:
        rows.append(Check("v4l2loopback", False, "module loaded but no loopback /dev/video* device",
                          "sudo modprobe -r v4l2loopback && " + modprobe.split("&& ", 1)[1]))
    elif sys.platform.startswith("linux"):
        rows.append(Check("v4l2loopback", None, "kernel module not loaded (needed only for the virtual camera)", modprobe))
    else:
        rows.append(Check("virtual camera backend", None, f"{sys.platform}: pyvirtualcam uses OBS Virtual Camera",
                          "install OBS Studio and start its virtual camera once"))
    return rows


def check_sounddevice() -> Check:
    try:
        import sounddevice as sd
    except ImportError:
        return Check("sounddevice / PortAudio", None, "not installed (needed for microphone or system-audio input)",
                     install_hint("audio"))
    except OSError as exc:
        return Check("sounddevice / PortAudio", False, f"PortAudio library missing: {exc}",
                     "sudo apt install libportaudio2")
    try:
        devices = sd.query_devices()
    except Exception as exc:  # noqa: BLE001 - PortAudio errors have no stable type
        return Check("sounddevice / PortAudio", False, f"cannot query devices: {exc}", "check the sound server (pactl info)")
    n_in = sum(1 for d in devices if d["max_input_channels"] > 0)
    return Check("sounddevice / PortAudio", True, f"sounddevice {sd.__version__}, {len(devices)} devices ({n_in} inputs)")


def check_sound_server(timeout_s: float = 3.0) -> Check:
    if not sys.platform.startswith("linux"):
        return Check("PulseAudio / PipeWire", None, f"not applicable on {sys.platform}")
    pactl = shutil.which("pactl")
    if pactl is None:
        return Check("PulseAudio / PipeWire", None, "pactl not found (needed for system-audio loopback)",
                     "sudo apt install pulseaudio-utils (works with PipeWire too)")
    try:
        proc = subprocess.run([pactl, "info"], capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return Check("PulseAudio / PipeWire", False, f"pactl info did not answer in {timeout_s:g} s", "restart the sound server")
    if proc.returncode != 0:
        return Check("PulseAudio / PipeWire", False, f"no sound server: {proc.stderr.strip() or proc.stdout.strip()}",
                     "start it: systemctl --user start pipewire-pulse (or pulseaudio --start)")
    server = next((line.split(":", 1)[1].strip() for line in proc.stdout.splitlines() if line.startswith("Server Name")), "?")
    return Check("PulseAudio / PipeWire", True, server)


def check_obs(enabled: bool, host: str, port: int, timeout_s: float = 2.0) -> Check:
    if not enabled:
        return Check("OBS websocket", None, "not configured (sinks.obs.enabled is false)")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        return Check("OBS websocket", False, f"{host}:{port} not reachable: {exc}",
                     "start OBS and enable Tools > WebSocket Server Settings > Enable WebSocket server")
    return Check("OBS websocket", True, f"{host}:{port} accepts connections")


def check_espeak() -> Check:
    """The espeak-ng the default TTS speaks with: the wheel's or the system's, its version and files."""
    from soulx_live.tts.base import TtsError
    from soulx_live.tts.espeak import espeak_in_use

    try:
        detail = espeak_in_use()
    except TtsError as exc:
        return Check("espeak-ng (default TTS)", False, str(exc),
                     "pip install espeakng-loader (or sudo apt install espeak-ng)")
    return Check("espeak-ng (default TTS)", True, detail)


# -- weights ---------------------------------------------------------------------------------------


def check_weights(folder: Path | None, kind: str) -> Check:
    if kind == "flashhead":
        return check_flashhead_weights(folder)
    fix = "huggingface-cli download Soul-AILab/SoulX-FlashTalk-14B --local-dir models/SoulX-FlashTalk-14B, then --set engine.weights_dir=models/SoulX-FlashTalk-14B"
    needed = kind == "flashtalk"
    if folder is None:
        return Check("FlashTalk weights", False if needed else None,
                     "engine.weights_dir not set" + ("" if needed else " (only the flashtalk engine needs it)"), fix, needed)
    problems = weights_problems(folder)
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        return Check("FlashTalk weights", False, f"{folder}: {shown}", fix, needed)
    return Check("FlashTalk weights", True, str(folder), required=needed)


def check_flashhead_weights(folder: Path | None) -> Check:
    """The SoulX-FlashHead-1_3B folder for the Pro model: Model_Pro/, VAE_Wan/Wan2.1_VAE.pth, wav2vec2-base-960h/."""
    fix = ("huggingface-cli download Soul-AILab/SoulX-FlashHead-1_3B --local-dir models/SoulX-FlashHead-1_3B and "
           "huggingface-cli download facebook/wav2vec2-base-960h --local-dir models/wav2vec2-base-960h, then "
           "--set engine.weights_dir=models/SoulX-FlashHead-1_3B")
    if folder is None:
        return Check("FlashHead weights", False, "engine.weights_dir not set", fix, True)
    problems = flashhead_weights_problems(folder)
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        return Check("FlashHead weights", False, f"{folder}: {shown}", fix, True)
    return Check("FlashHead weights", True, str(folder), required=True)


def check_matte_model(wanted: bool) -> Check:
    """The person-segmentation model that alpha output (``sinks.*.alpha``) reads from the mediapipe wheel."""
    from engine.matting.model import MODEL_INSTALL, MatteModelMissing, find_model

    try:
        path = find_model()
    except MatteModelMissing as exc:
        return Check("person matte model (alpha)", False if wanted else None, str(exc).split(";")[0], MODEL_INSTALL, wanted)
    return Check("person matte model (alpha)", True, f"{path.name} ({path.stat().st_size:,} bytes) at {path.parent}", "", wanted)


# -- running and printing --------------------------------------------------------------------------


def run_checks(config: object | None = None) -> list[Check]:
    """Run every check; ``config`` (a ``SoulxConfig``) supplies the weights folder and the OBS address."""
    engine = getattr(config, "engine", None)
    obs = getattr(getattr(config, "sinks", None), "obs", None)
    probes: list[Callable[[], Check | list[Check]]] = [
        check_python,
        check_core_packages,
        check_pyav,
        lambda: check_remote_encoder(getattr(getattr(config, "remote", None), "video_encoder", "auto")),
        check_torch,
        check_optional_packages,
        check_virtual_camera,
        check_sounddevice,
        check_sound_server,
        lambda: check_obs(bool(obs and obs.enabled), getattr(obs, "host", "127.0.0.1"), getattr(obs, "port", 4455),
                          min(float(getattr(obs, "timeout_s", 2.0)), 5.0)),
        lambda: check_weights(getattr(engine, "weights_dir", None), getattr(engine, "kind", "lite")),
        check_espeak,
        lambda: check_matte_model(_alpha_wanted(config)),
    ]
    rows: list[Check] = []
    for probe in probes:
        try:
            result = probe()
        except Exception as exc:  # noqa: BLE001 - one broken probe must not hide the others
            log.debug("doctor probe %s failed", probe, exc_info=True)
            result = Check(getattr(probe, "__name__", "check").removeprefix("check_"), False, f"check crashed: {exc!r}")
        rows.extend(result if isinstance(result, list) else [result])
    return rows


def _alpha_wanted(config: object) -> bool:
    from soulx_live.config import SoulxConfig
    from soulx_live.factory.engine import alpha_wanted

    return isinstance(config, SoulxConfig) and alpha_wanted(config)


def format_table(rows: Sequence[Check]) -> str:
    """Fixed-width table: status, name, detail; a fix line under each row that has a problem."""
    mark = {True: "ok", False: "FAIL", None: "--"}
    width = max(len(r.name) for r in rows) if rows else 0
    lines = []
    for r in rows:
        status = mark[r.ok] if r.ok is not False or r.required else "warn"
        lines.append(f"{status:<5} {r.name:<{width}}  {r.detail}")
        if r.fix and r.ok is not True:
            lines.append(f"{'':<5} {'':<{width}}  fix: {r.fix}")
    return "\n".join(lines)
