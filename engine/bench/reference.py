"""Comparison mode: time the *released* inference code path on the same GPU and configuration.

The released code (github.com/Soul-AILab/SoulX-FlashTalk) is never part of this repository: the user clones it
somewhere (outside this checkout, or in a git-ignored folder) and installs its ``requirements.txt``; this module
imports it from there. Nothing of it is copied; what is run is its own code:

* session: ``flash_talk.inference.get_pipeline`` (which builds ``FlashTalkPipeline`` — its ``torch.compile``,
  parallel VAE and xfuser USP wiring as the checkout's module flags say) and ``get_base_data`` (``prepare_params``);
* per chunk, as ``generate_video.py``'s stream mode does: 8 s audio deque -> ``get_audio_embedding`` ->
  ``run_pipeline`` (``FlashTalkPipeline.generate``: DiT steps, VAE decode, colour correction, motion re-encode)
  -> frames to the host.

Only the weight loaders are replaced, for the duration of the pipeline's construction, by random-weight
builders of the same classes (the release's ``WanModel``, ``WanVAE_``, ``Wav2Vec2Model``) at our benchmark's
widths; T5 and CLIP (once per session, outside the per-chunk path) return random tokens of their shapes, as our
benchmark does. Frame count, resolution and steps are set in the release's ``infer_params``; the DiT dtype in its
model config. Per-stage times are the release's own (its ``generate`` synchronises and prints them); audio encode
is timed here with one synchronisation, as ``generate_video.py`` does.

It runs in a separate process (``python -m engine.bench.reference``, or torchrun for ``--world-size > 1``) so
the two 14B models are never in memory together and the release's global state stays out of ours.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from engine.parallel.ranks import (
    torchrun_rank,  # torch-free, like this module's top level
)

__all__ = [
    "REQUIRED_FILES",
    "ReferenceCheckoutError",
    "check_checkout",
    "check_reference_config",
    "compare",
    "format_comparison",
    "import_release",
    "measure_release",
    "model_file_loaders",
    "parse_stage_prints",
    "release_stream_chunk",
    "run_reference",
]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
REPO_URL = "https://github.com/Soul-AILab/SoulX-FlashTalk"
TARGET_SPEEDUP = 1.5  # issue 6 §5: >= 1.5x faster per chunk than the released code path

#: Files of the released checkout this adapter imports or that they read, and what each provides.
REQUIRED_FILES: dict[str, str] = {
    "flash_talk/inference.py": "get_pipeline, get_base_data, get_audio_embedding, run_pipeline",
    "flash_talk/configs/infer_params.yaml": "chunk/resolution parameters read by flash_talk/inference.py",
    "flash_talk/src/pipeline/flash_talk_pipeline.py": "FlashTalkPipeline (prepare_params, generate)",
    "flash_talk/src/distributed/usp_device.py": "get_device, get_parallel_degree",
    "flash_talk/infinite_talk/configs/__init__.py": "multitalk_14B model config",
    "flash_talk/infinite_talk/modules/multitalk_model.py": "WanModel (the DiT)",
    "flash_talk/infinite_talk/audio_analysis/wav2vec2.py": "Wav2Vec2Model",
    "flash_talk/wan/modules/vae.py": "WanVAE, WanVAE_, _video_vae",
}

TEXT_TOKENS = 32
CLIP_TOKENS, CLIP_DIM, TEXT_DIM = 257, 1280, 4096
CACHED_AUDIO_S, SAMPLE_RATE, FPS = 8, 16000, 25

# The release's per-stage prints in FlashTalkPipeline.generate (seconds).
_STAGE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("dit_step", re.compile(r"\[generate\] model denoise per step: ([0-9.eE+-]+)s")),
    ("vae_decode", re.compile(r"\[generate\] decode video frames: ([0-9.eE+-]+)s")),
    ("colour_correction", re.compile(r"\[generate\] colou?r correction: ([0-9.eE+-]+)s")),
    ("motion_encode", re.compile(r"\[generate\] encode motion frames: ([0-9.eE+-]+)s")),
)


class ReferenceCheckoutError(ValueError):
    """The reference checkout is missing, incomplete or cannot be imported; the message says what to do."""


# ----------------------------------------------------------------------------------------------- checks

def check_checkout(path: Path | str) -> Path:
    """The checkout's absolute path, after checking it holds every file in :data:`REQUIRED_FILES`."""
    root = Path(path).expanduser().resolve()
    clone = f"git clone {REPO_URL} {root} && pip install -r {root}/requirements.txt"
    if not root.is_dir():
        raise ReferenceCheckoutError(f"--compare-reference {path}: no such folder; get the released code with: {clone}")
    missing = [f"{rel} ({what})" for rel, what in REQUIRED_FILES.items() if not (root / rel).is_file()]
    if missing:
        raise ReferenceCheckoutError(
            f"--compare-reference {path} is not a SoulX-FlashTalk checkout; missing: " + "; ".join(missing)
            + f". Point it at a clone of {REPO_URL}"
        )
    _check_not_committable(root)
    return root


def _check_not_committable(root: Path) -> None:
    """Refuse a checkout inside this repository unless git ignores it (the released code is never committed)."""
    try:
        root.relative_to(ROOT)
    except ValueError:
        return
    try:
        ignored = subprocess.run(["git", "check-ignore", "-q", str(root)], cwd=ROOT, capture_output=True,
                                 timeout=10, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ignored = False
    if not ignored:
        raise ReferenceCheckoutError(
            f"the reference checkout {root} is inside this repository and not git-ignored; move it outside "
            f"{ROOT} (the released code must never be committed here)"
        )


def check_reference_config(cfg: Any) -> None:
    """Refuse configurations the released code path cannot run: the CPU only at tiny widths (the release is
    CUDA-only; engine.bench.release_compat shims its CUDA calls for the tiny CPU check, not for a 14B run)."""
    if getattr(cfg, "model", "flashtalk") != "flashtalk":
        raise ReferenceCheckoutError("--compare-reference runs SoulX-FlashTalk's release; it has no FlashHead path")
    if not str(cfg.device).startswith("cuda") and not cfg.tiny:
        raise ReferenceCheckoutError(
            "--compare-reference runs the released code, which needs CUDA at full size (it calls "
            "torch.cuda.synchronize); run it on a GPU machine, or on the CPU with --tiny (a check, not a speed)"
        )


# ----------------------------------------------------------------------------------------------- import

@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def import_release(checkout: Path) -> SimpleNamespace:
    """Import the released modules from ``checkout`` (on ``sys.path``; ``inference.py`` reads its yaml from cwd)."""
    checkout = check_checkout(checkout)
    loaded = sys.modules.get("flash_talk")
    if loaded is not None and not str(getattr(loaded, "__file__", "") or "").startswith(str(checkout)):
        raise ReferenceCheckoutError(f"another 'flash_talk' package is already imported ({loaded.__file__}); "
                                     f"run the comparison in a fresh process")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    names = {
        "inference": "flash_talk.inference",
        "pipeline": "flash_talk.src.pipeline.flash_talk_pipeline",
        "model": "flash_talk.infinite_talk.modules.multitalk_model",
        "wav2vec2": "flash_talk.infinite_talk.audio_analysis.wav2vec2",
        "vae": "flash_talk.wan.modules.vae",
    }
    modules: dict[str, ModuleType] = {}
    with _cwd(checkout):
        for key, name in names.items():
            try:
                modules[key] = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.split(".")[0] == "flash_talk":
                    raise ReferenceCheckoutError(f"{checkout}: cannot import {name} ({exc}); is the checkout "
                                                 f"complete? Re-clone {REPO_URL}") from exc
                raise ReferenceCheckoutError(
                    f"the released code ({name}) needs the Python package {exc.name!r}, which is not installed "
                    f"here: pip install -r {checkout}/requirements.txt"
                ) from exc
    return SimpleNamespace(**modules, checkout=checkout)


# ----------------------------------------------------------------------------------------------- random weights

def _release_dit_kwargs(release: SimpleNamespace, tiny: bool) -> dict[str, Any]:
    """Our DiT config as keyword arguments of the release's ``WanModel`` (same names; unknown ones dropped)."""
    import inspect

    from engine.bench.widths import dit_config

    ours = dataclasses.asdict(dit_config(tiny))
    accepted = inspect.signature(release.model.WanModel.__init__).parameters
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in ours.items() if k in accepted}


@contextlib.contextmanager
def random_weight_loaders(release: SimpleNamespace, cfg: Any, device: Any) -> Iterator[None]:
    """Replace the release's checkpoint loaders by random-weight builders of its own classes, then restore."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor

    from engine.bench.config import torch_dtype
    from engine.bench.models import build_random
    from engine.bench.widths import wav2vec2_config

    dtype = torch_dtype(cfg)
    wan_model_cls = release.model.WanModel
    wav2vec_cls = release.wav2vec2.Wav2Vec2Model
    dit_kwargs = _release_dit_kwargs(release, cfg.tiny)
    vae_dim = 8 if cfg.tiny else 96

    class RandomT5:
        def __init__(self, *args: Any, dtype: Any = None, device: Any = None, **kwargs: Any) -> None:
            self.model = torch.nn.Identity()

        def __call__(self, texts: list[str], device: Any) -> list[torch.Tensor]:
            return [torch.randn(TEXT_TOKENS, TEXT_DIM, dtype=dtype, device=device) for _ in texts]

    class RandomCLIP:
        def __init__(self, *args: Any, dtype: Any = None, device: Any = None, **kwargs: Any) -> None:
            self.model = torch.nn.Identity()
            self.device = device

        def visual(self, videos: torch.Tensor) -> torch.Tensor:
            return torch.randn(1, CLIP_TOKENS, CLIP_DIM, dtype=dtype, device=videos.device)

    def dit_from_pretrained(checkpoint_dir: str, device_map: Any = None, torch_dtype: Any = None, **kw: Any) -> Any:
        return build_random(lambda: wan_model_cls(**dit_kwargs), torch.device(device_map or device),
                            torch_dtype or dtype)

    def wav2vec_from_pretrained(path: str, **kw: Any) -> Any:
        return build_random(lambda: wav2vec_cls(wav2vec2_config(cfg.tiny)), torch.device(device), torch.float32)

    def random_video_vae(pretrained_path: Any = None, z_dim: Any = None, dtype: Any = torch.float32, **kw: Any) -> Any:
        # The released Wan2.1 VAE structure (SPEC §4.1): base 96 channels, mults 1/2/4/4, 2 res blocks per stage.
        return build_random(
            lambda: release.vae.WanVAE_(dim=vae_dim, z_dim=z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                        attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0),
            torch.device(device), dtype,
        )

    config = release.inference.multitalk_14B
    patched_config = type(config)(config)
    patched_config.param_dtype = dtype
    patches: list[tuple[Any, str, Any]] = [
        (release.pipeline, "T5EncoderModel", RandomT5),
        (release.pipeline, "CLIPModel", RandomCLIP),
        (release.pipeline, "WanModel", SimpleNamespace(from_pretrained=dit_from_pretrained)),
        (release.pipeline, "Wav2Vec2Model", SimpleNamespace(from_pretrained=wav2vec_from_pretrained)),
        (release.pipeline, "Wav2Vec2FeatureExtractor",
         SimpleNamespace(from_pretrained=lambda *a, **k: Wav2Vec2FeatureExtractor())),
        (release.vae, "_video_vae", random_video_vae),
        (release.inference, "multitalk_14B", patched_config),
    ]
    from engine.bench.release_compat.patches import swapped_attributes  # torch: only when a release runs

    with swapped_attributes(patches):
        yield


def configure_chunk(release: SimpleNamespace, cfg: Any) -> None:
    """Set frames, resolution and steps in the release's ``infer_params`` (what its functions read)."""
    params = release.inference.infer_params
    params.update(frame_num=cfg.frames, sample_steps=cfg.steps, height=cfg.height, width=cfg.width)
    release.inference.target_size = (cfg.height, cfg.width)


# ----------------------------------------------------------------------------------------------- measure

def parse_stage_prints(text: str) -> dict[str, float]:
    """The release's printed stage times of one chunk, in ms (``dit_step_<i>`` numbered in order)."""
    stages: dict[str, float] = {}
    steps = 0
    for line in text.splitlines():
        for name, pattern in _STAGE_PATTERNS:
            match = pattern.search(line)
            if match:
                key = name
                if name == "dit_step":
                    key, steps = f"dit_step_{steps}", steps + 1
                stages[key] = stages.get(key, 0.0) + float(match.group(1)) * 1e3
    return stages


def _release_commit(checkout: Path) -> dict[str, Any]:
    """The checkout's commit: its own git if it is a clone, else the ``RELEASE_COMMIT`` file that
    scripts/make_release_copy.sh writes (a copy inside this repository would otherwise report *our* HEAD)."""
    from engine.bench.report import git_commit

    if (checkout / ".git").exists():
        return git_commit(checkout)
    stamp = checkout / "RELEASE_COMMIT"
    return {"git_commit": stamp.read_text().strip() if stamp.is_file() else None, "git_dirty": None}


def _sync(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def measure_release(checkout: Path, cfg: Any, compile_release: bool = False) -> dict[str, Any]:
    """Build the released pipeline with random weights and stream ``cfg.chunks`` chunks through it.

    The release runs with :mod:`engine.bench.release_compat` in place (stand-ins for the packages it imports but
    the benchmark does not need, its own compile off unless ``compile_release``); the result lists them all.
    """
    from engine.bench.release_compat import release_environment

    with release_environment(lambda: import_release(checkout), str(cfg.device), compile_release) as (release, lines):
        result = _measure_imported(release, cfg)
    return {**result, "release_compile": compile_release, "stand_ins": lines}


def _measure_imported(release: SimpleNamespace, cfg: Any) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image

    from engine.bench.report import summarize

    configure_chunk(release, cfg)
    device = cfg.device
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    with random_weight_loaders(release, cfg, device), contextlib.redirect_stdout(sys.stderr):
        pipeline = release.inference.get_pipeline(world_size=cfg.world_size,
                                                  ckpt_dir=str(release.checkout / "random-weights"),
                                                  wav2vec_dir=str(release.checkout / "random-weights"))
    device = getattr(pipeline, "device", device)
    build_s = time.perf_counter() - t0
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rng = np.random.default_rng(cfg.seed)
    image = Image.fromarray(rng.integers(0, 256, (cfg.height, cfg.width, 3), dtype=np.uint8))
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        release.inference.get_base_data(pipeline, input_prompt="A person is talking.", cond_image=image,
                                        base_seed=cfg.seed)
    _sync(device)
    prepare_ms = (time.perf_counter() - start) * 1e3

    # generate_video.py, stream mode: an 8 s deque of samples, the last frame_num audio frames per chunk.
    slice_samples = (cfg.frames - 5) * SAMPLE_RATE // FPS
    audio = deque([0.0] * (CACHED_AUDIO_S * SAMPLE_RATE), maxlen=CACHED_AUDIO_S * SAMPLE_RATE)
    end_idx = CACHED_AUDIO_S * FPS
    per_chunk: list[dict[str, float]] = []
    wall_ms: list[float] = []
    frames: Any = None
    for index in range(cfg.chunks):
        audio.extend((0.1 * rng.standard_normal(slice_samples)).tolist())
        captured = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(captured):
            embedding = release.inference.get_audio_embedding(pipeline, np.array(audio), end_idx - cfg.frames, end_idx)
            _sync(device)
            audio_ms = (time.perf_counter() - start) * 1e3
            frames = release.inference.run_pipeline(pipeline, embedding).cpu()
        wall_ms.append((time.perf_counter() - start) * 1e3)
        stages = {"audio_encode": audio_ms, **parse_stage_prints(captured.getvalue())}
        per_chunk.append(stages)
        log.info("reference chunk %d: %.1f ms", index, wall_ms[-1])
    summary = summarize(per_chunk, wall_ms, int(frames.shape[0]))
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if str(device).startswith("cuda") else None
    flags = {k: getattr(release.pipeline, k, None) for k in ("COMPILE_MODEL", "COMPILE_VAE", "USE_PARALLEL_VAE")}
    commit = _release_commit(release.checkout)
    return {
        "code": REPO_URL,
        "checkout": str(release.checkout),
        "checkout_commit": commit["git_commit"],
        "checkout_dirty": commit["git_dirty"],
        "module_flags": flags,
        "device": str(device),
        "build_s": round(build_s, 2),
        "prepare_ms": round(prepare_ms, 3),
        "per_chunk_ms": [{k: round(v, 3) for k, v in c.items()} for c in per_chunk],
        "wall_ms": [round(v, 3) for v in wall_ms],
        **summary,
        "time_to_first_frame_ms": round(prepare_ms + wall_ms[0], 3),
        "output_frame_shape": list(frames.shape[1:]),
        "peak_memory_gib": peak,
    }


# ----------------------------------------------------------------------------------------------- dry run on model files

@contextlib.contextmanager
def model_file_loaders(release: SimpleNamespace, models: dict[str, Path], context: Any,
                       clip_fea: Any) -> Iterator[None]:
    """Load the release's DiT and VAE from given files in the released formats (a diffusers folder, a ``.pth``
    with an optional ``vae_config.json`` beside it) instead of random weights; T5 and CLIP return the given
    features. The wav2vec2 folder goes to ``get_pipeline`` as shipped (the release's own ``from_pretrained``)."""
    import inspect

    import torch
    from safetensors.torch import load_file

    wan_model_cls = release.model.WanModel
    release_video_vae = release.vae._video_vae

    class GivenT5:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.model = torch.nn.Identity()

        def __call__(self, texts: list[str], device: Any) -> list[Any]:
            return [context.to(device) for _ in texts]

    class GivenCLIP:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.model = torch.nn.Identity()

        def visual(self, videos: Any) -> Any:
            return clip_fea.to(videos.device)

    def dit_from_folder(checkpoint_dir: str, device_map: Any = None, torch_dtype: Any = None, **kw: Any) -> Any:
        folder = Path(models["dit"])
        config = json.loads((folder / "config.json").read_text())
        accepted = inspect.signature(wan_model_cls.__init__).parameters
        model = wan_model_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()
                                 if k in accepted})
        state: dict[str, Any] = {}
        for shard in sorted(folder.glob("*.safetensors")):
            state.update(load_file(str(shard)))
        # A BF16 checkpoint upcasts exactly; the dry run computes in float32, as the golden reference did.
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        return model.to(device=device_map, dtype=torch_dtype or torch.float32)

    def vae_from_file(pretrained_path: Any = None, z_dim: Any = None, **kwargs: Any) -> Any:
        path = Path(models["vae"])
        config_file = path.parent / "vae_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        z = config.pop("z_dim", z_dim)
        return release_video_vae(pretrained_path=str(path), z_dim=z, **{**kwargs, **config})

    patches = [
        (release.pipeline, "T5EncoderModel", GivenT5),
        (release.pipeline, "CLIPModel", GivenCLIP),
        (release.pipeline, "WanModel", SimpleNamespace(from_pretrained=dit_from_folder)),
        (release.vae, "_video_vae", vae_from_file),
    ]
    from engine.bench.release_compat.patches import swapped_attributes  # torch: only when a release runs

    with swapped_attributes(patches):
        yield


def release_stream_chunk(checkout: Path, models: dict[str, Path], inputs: dict[str, Any], params: dict[str, Any],
                         device: str = "cpu") -> dict[str, Any]:
    """One streamed chunk of the released code (``get_pipeline``, ``get_base_data``, ``run_pipeline``'s
    ``generate``) on given model files and inputs: the golden bundle's ``stream_chunk`` case layout.

    ``inputs``: ``cond_image [1,3,1,H,W]`` in [-1, 1], ``context``, ``clip_fea``, ``audio``; ``params``:
    ``frame_num``, ``motion_frames_num``, ``sampling_steps``, ``shift``, ``color_correction_strength``, ``seed``.
    Returns ``gen_video`` (the corrected frames after the motion frames), ``motion_latent_next`` and
    ``stand_ins``. The noise is the release's own (``torch.Generator`` seeded with ``seed``), as recorded.
    """
    import numpy as np
    import torch
    from PIL import Image

    from engine.bench.release_compat import release_environment

    cond = inputs["cond_image"][0, :, 0]  # [3, H, W] in [-1, 1]: back to the uint8 image it came from
    pixels = ((cond.double() / 2 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    height, width = pixels.shape[:2]
    with release_environment(lambda: import_release(checkout), device) as (release, lines):
        release.inference.infer_params.update(
            frame_num=params["frame_num"], motion_frames_num=params["motion_frames_num"],
            sample_steps=params["sampling_steps"], sample_shift=params["shift"],
            color_correction_strength=params["color_correction_strength"], height=height, width=width)
        release.inference.target_size = (height, width)
        config = type(release.inference.multitalk_14B)(release.inference.multitalk_14B)
        config.param_dtype = torch.float32
        with contextlib.ExitStack() as stack:
            stack.enter_context(model_file_loaders(release, models, inputs["context"], inputs["clip_fea"]))
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            saved_config, release.inference.multitalk_14B = release.inference.multitalk_14B, config
            stack.callback(setattr, release.inference, "multitalk_14B", saved_config)
            pipeline = release.inference.get_pipeline(world_size=1, ckpt_dir=str(models["dit"]),
                                                      wav2vec_dir=str(models["wav2vec2"]))
            image = Image.fromarray(np.ascontiguousarray(pixels))
            release.inference.get_base_data(pipeline, input_prompt="", cond_image=image,
                                            base_seed=int(params["seed"]))
            gen_video = pipeline.generate(inputs["audio"].to(pipeline.device))
    return {"gen_video": gen_video.cpu(), "motion_latent_next": pipeline.latent_motion_frames.float().cpu(),
            "stand_ins": lines}


# ----------------------------------------------------------------------------------------------- compare

def compare(ours: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Speed-ups (reference time / our time) per chunk, for the DiT and per stage both report."""

    def ratio(ref: float | None, our: float | None) -> float | None:
        return round(ref / our, 3) if ref and our else None

    stages = {
        name: {"ours_ms": ours["stages_ms"].get(name), "reference_ms": reference["stages_ms"].get(name),
               "speedup": ratio(reference["stages_ms"].get(name), ours["stages_ms"].get(name))}
        for name in dict.fromkeys([*ours["stages_ms"], *reference["stages_ms"]])
    }
    speedup = ratio(reference["chunk_ms"], ours["chunk_ms"])
    return {
        "speedup_chunk": speedup,
        "speedup_dit": ratio(reference.get("dit_ms"), ours.get("dit_ms")),
        "speedup_first_chunk": ratio(reference["first_chunk_ms"], ours["first_chunk_ms"]),
        "ours_chunk_ms": ours["chunk_ms"],
        "reference_chunk_ms": reference["chunk_ms"],
        "stages": stages,
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup is not None and speedup >= TARGET_SPEEDUP,
    }


def format_comparison(comparison: dict[str, Any]) -> str:
    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f}"

    lines = ["comparison with the released code path (speed-up = reference ms / our ms)",
             f"{'stage':<22}{'ours ms':>12}{'released ms':>14}{'speed-up':>10}"]
    for name, row in comparison["stages"].items():
        sp = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        lines.append(f"{name:<22}{cell(row['ours_ms']):>12}{cell(row['reference_ms']):>14}{sp:>10}")
    sp = comparison["speedup_chunk"]
    lines.append(f"{'chunk (wall)':<22}{cell(comparison['ours_chunk_ms']):>12}"
                 f"{cell(comparison['reference_chunk_ms']):>14}{'-' if sp is None else f'{sp:.2f}x':>10}")
    verdict = "meets" if comparison["meets_target"] else "does NOT meet"
    lines.append(f"per-chunk speed-up {'-' if sp is None else f'{sp:.2f}x'} {verdict} the "
                 f"{comparison['target_speedup']}x target")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- process

def run_reference(checkout: Path, cfg: Any, timeout_s: float | None = None,
                  compile_release: bool = False) -> dict[str, Any]:
    """Measure the released path in a fresh process (torchrun for ``world_size > 1``) and return its figures.

    ``compile_release`` keeps the release's own ``torch.compile`` of the DiT and VAE (``--reference-compile``);
    off by default because it compiles the whole 14B model and the VAE cold, for minutes.
    """
    from engine.bench.cli import _flags, run_module

    log.info("running the released code path from %s", checkout)
    extra = ["--reference-compile"] if compile_release else []
    return run_module("engine.bench.reference", cfg.world_size, [str(checkout), *_flags(cfg), *extra], timeout_s)


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.bench.reference CHECKOUT [bench flags] --out FILE``: measure the released path."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    from engine.bench.cli import add_arguments, config_from_args
    from engine.bench.config import BenchConfigError

    parser = argparse.ArgumentParser(prog="python -m engine.bench.reference", description=main.__doc__)
    parser.add_argument("checkout", type=Path, help="local clone of " + REPO_URL)
    add_arguments(parser)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        result = measure_release(args.checkout, cfg, compile_release=bool(args.reference_compile))
    except (BenchConfigError, ReferenceCheckoutError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if torchrun_rank()[0] == 0:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
