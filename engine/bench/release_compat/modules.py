"""Stand-in modules for the packages the released code imports at module level but the benchmark never needs.

Each is installed in ``sys.modules`` only when the real package is missing, only for the reference run, and
removed afterwards (:func:`stand_in_modules`). Every one installed is reported with one line, so the result
JSON says exactly what was not the release's own dependency.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

__all__ = ["STAND_INS", "stand_in_modules"]

log = logging.getLogger(__name__)


def _module(name: str, **attrs: Any) -> ModuleType:
    mod = ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__dict__["__release_compat__"] = True
    # A spec without a loader: libraries that probe with importlib.util.find_spec (transformers does) see a
    # module, and their version lookup (no dist-info) still reports the package as absent.
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return mod


def _unavailable(what: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"release_compat: {what} is not stood in (not on the benchmarked path)")
    return fail


def _xformers() -> dict[str, ModuleType]:
    from engine.bench.release_compat import attention

    attn_bias = _module("xformers.ops.fmha.attn_bias", BlockDiagonalMask=attention.BlockDiagonalMask)
    fmha = _module("xformers.ops.fmha", attn_bias=attn_bias)
    ops = _module("xformers.ops", fmha=fmha, memory_efficient_attention=attention.memory_efficient_attention)
    return {"xformers": _module("xformers", ops=ops), "xformers.ops": ops, "xformers.ops.fmha": fmha,
            "xformers.ops.fmha.attn_bias": attn_bias}


class _SingleGroup:
    """xfuser's process group at world size 1."""
    rank = rank_in_group = 0
    world_size = 1

    def all_gather(self, tensor: Any, dim: int = 0) -> Any:
        return tensor


def _xfuser() -> dict[str, ModuleType]:
    from engine.bench.release_compat import attention

    class XFuserLongContextAttention:
        """Ulysses/ring attention at world size 1 is plain attention: SDPA on ``[B, L, H, D]``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __call__(self, attn: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
            return attention.sdpa_blhd(query, key, value)

    group = _SingleGroup()
    distributed = _module(
        "xfuser.core.distributed",
        get_sequence_parallel_rank=lambda: 0, get_sequence_parallel_world_size=lambda: 1,
        get_sp_group=lambda: group, get_world_group=lambda: group,
        init_distributed_environment=_unavailable("xfuser multi-GPU init"),
        initialize_model_parallel=_unavailable("xfuser multi-GPU init"),
    )
    long_ctx = _module("xfuser.core.long_ctx_attention", xFuserLongContextAttention=XFuserLongContextAttention)
    core = _module("xfuser.core", distributed=distributed, long_ctx_attention=long_ctx)
    return {"xfuser": _module("xfuser", core=core), "xfuser.core": core, "xfuser.core.distributed": distributed,
            "xfuser.core.long_ctx_attention": long_ctx}


def _quanto() -> dict[str, ModuleType]:
    # T5 quantisation: T5 runs once per session (outside the measured chunks) and is replaced by random tokens.
    quanto = _module("optimum.quanto", quantize=lambda *a, **k: None, freeze=lambda *a, **k: None,
                     requantize=lambda *a, **k: None, qint8="qint8")
    return {"optimum": _module("optimum", quanto=quanto), "optimum.quanto": quanto}


def _diffusers() -> dict[str, ModuleType]:
    import torch

    class ModelMixin(torch.nn.Module):
        """diffusers' mixin without hub loading: the adapter builds and loads the models itself."""

    class ConfigMixin:
        config_name = "config.json"

    def register_to_config(init: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(init)
        def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self.config = dict(kwargs)  # what diffusers records, for code that reads model.config
        return wrapped

    config_utils = _module("diffusers.configuration_utils", ConfigMixin=ConfigMixin,
                           register_to_config=register_to_config)
    modeling_utils = _module("diffusers.models.modeling_utils", ModelMixin=ModelMixin)
    models = _module("diffusers.models", modeling_utils=modeling_utils, ModelMixin=ModelMixin)
    return {"diffusers": _module("diffusers", ModelMixin=ModelMixin, configuration_utils=config_utils,
                                 models=models),
            "diffusers.configuration_utils": config_utils, "diffusers.models": models,
            "diffusers.models.modeling_utils": modeling_utils}


def _flash_attn() -> dict[str, ModuleType]:
    from engine.bench.release_compat import attention

    return {"flash_attn": _module("flash_attn", flash_attn_varlen_func=attention.flash_attn_varlen_func)}


def _loguru() -> dict[str, ModuleType]:
    return {"loguru": _module("loguru", logger=logging.getLogger("release"))}


def _easydict() -> dict[str, ModuleType]:
    class EasyDict(dict):
        """Attribute access on a dict (what the release's model config uses)."""

        def __getattr__(self, name: str) -> Any:
            try:
                return self[name]
            except KeyError as exc:
                raise AttributeError(name) from exc

        def __setattr__(self, name: str, value: Any) -> None:
            self[name] = value

    return {"easydict": _module("easydict", EasyDict=EasyDict)}


def _einops() -> dict[str, ModuleType]:
    from engine.bench.release_compat import einops_lite

    return {"einops": _module("einops", rearrange=einops_lite.rearrange, repeat=einops_lite.repeat)}


def _torchvision() -> dict[str, ModuleType]:
    def center_crop(img: Any, output_size: Any) -> Any:
        """torchvision's centre crop of ``[..., H, W]`` (same rounding: top = round((H - h) / 2))."""
        h, w = (output_size, output_size) if isinstance(output_size, int) else output_size
        top, left = round((img.shape[-2] - h) / 2.0), round((img.shape[-1] - w) / 2.0)
        if top < 0 or left < 0:
            raise NotImplementedError("release_compat: centre crop with padding is not stood in")
        return img[..., top:top + h, left:left + w]

    functional = _module("torchvision.transforms.functional", center_crop=center_crop)
    transforms = _module("torchvision.transforms", functional=functional,
                         Compose=_unavailable("torchvision.transforms (CLIP preprocessing)"),
                         InterpolationMode=_module("InterpolationMode", BICUBIC="bicubic"))
    utils = _module("torchvision.utils", make_grid=_unavailable("torchvision.utils.make_grid"))
    return {"torchvision": _module("torchvision", transforms=transforms, utils=utils),
            "torchvision.transforms": transforms, "torchvision.transforms.functional": functional,
            "torchvision.utils": utils}


def _skimage() -> dict[str, ModuleType]:
    color = _module("skimage.color", rgb2lab=_unavailable("skimage.color"), lab2rgb=_unavailable("skimage.color"))
    return {"skimage": _module("skimage", color=color), "skimage.color": color}


def _imageio() -> dict[str, ModuleType]:
    return {"imageio": _module("imageio", get_writer=_unavailable("imageio.get_writer (video files)"))}


#: package -> (one line for the result JSON, builder of its modules).
STAND_INS: dict[str, tuple[str, Callable[[], dict[str, ModuleType]]]] = {
    "xformers": ("xformers.ops.memory_efficient_attention (+ BlockDiagonalMask) on torch SDPA", _xformers),
    "xfuser": ("xfuser at world size 1: sequence-parallel rank 0 of 1, long-context attention on SDPA", _xfuser),
    "optimum": ("optimum.quanto quantize/freeze/requantize as no-ops (T5 only, replaced by random tokens)",
                _quanto),
    "diffusers": ("diffusers ModelMixin/ConfigMixin/register_to_config as plain nn.Module mixins", _diffusers),
    "flash_attn": ("flash_attn.flash_attn_varlen_func on torch SDPA (one call per packed sequence)", _flash_attn),
    "loguru": ("loguru.logger as a stdlib logging.Logger", _loguru),
    "easydict": ("easydict.EasyDict as a dict with attribute access", _easydict),
    "einops": ("einops.rearrange by reshape/permute (no repeat/reduce)", _einops),
    "torchvision": ("torchvision.transforms.functional.center_crop by slicing; the rest raises", _torchvision),
    "skimage": ("skimage.color raising (only the unused numpy colour-match path needs it)", _skimage),
    "imageio": ("imageio raising (video writing, not benchmarked)", _imageio),
}


def _installed(package: str) -> bool:
    existing = sys.modules.get(package)
    if existing is not None:
        return not getattr(existing, "__release_compat__", False)
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _preload_real_dependencies() -> None:
    """Import what the release uses from transformers *before* any stand-in exists: transformers probes for
    torchvision once (cached) and would otherwise take the torchvision stand-in for the real package."""
    import transformers
    import transformers.modeling_outputs

    for name in ("Wav2Vec2Config", "Wav2Vec2Model", "Wav2Vec2FeatureExtractor", "AutoTokenizer"):
        getattr(transformers, name)


@contextlib.contextmanager
def stand_in_modules(packages: list[str] | None = None) -> Iterator[dict[str, str]]:
    """Put stand-ins for the missing ones of ``packages`` (default: all) in ``sys.modules``; restore on exit.

    Yields ``{package: one-line description}`` of those installed (packages that are really installed are used).
    """
    _preload_real_dependencies()
    chosen = {p: STAND_INS[p] for p in (packages or list(STAND_INS))}
    modules: dict[str, ModuleType] = {}
    used: dict[str, str] = {}
    for package, (line, build) in chosen.items():
        if _installed(package):
            continue
        modules.update(build())
        used[package] = line
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    if used:
        log.info("release_compat: stand-ins for %s", ", ".join(used))
    try:
        yield used
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
