"""Runtime configuration of the FlashTalk engine, and its device and dtype policy.

``FlashTalkConfig`` holds the streaming settings of the release (spec §6.1, ``infer_params.yaml``);
the model architecture is not here, it comes from ``config.json`` beside the weights. The config is
plain typed data: validated when built, hashable, no torch dtypes inside (dtypes are names).

``resolve_device`` and ``resolve_dtypes`` turn the config into a ``torch.device`` and a
``DtypePolicy``, each with a reason string for the log. Nothing here touches CUDA at import; only
calling ``resolve_device`` asks torch whether a GPU is usable.

Released precision (spec §6.2-6.5, §7.3, §12.1; ``wan_multitalk_14B.py`` at HEAD): DiT weights and
compute bf16, VAE weights bf16 (``param_dtype``; the first release used fp32), colour correction in
the decoded video's dtype (bf16), wav2vec2 fp32, noise: first draw bf16, step draws fp32. On the CPU
every component runs in fp32: bf16 convolutions and matmuls are slow there, and fp32 is the golden
bundle's reference precision.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "DEFAULT_PROMPT",
    "DtypePolicy",
    "FlashTalkConfig",
    "FlashTalkConfigError",
    "resolve_device",
    "resolve_dtypes",
]

log = logging.getLogger(__name__)

#: ``generate_video.py``'s default prompt (used when a session asks for none).
DEFAULT_PROMPT = (
    "A person is talking. Only the foreground characters are moving, the background remains static."
)

DtypeName = Literal["auto", "bf16", "fp16", "fp32"]
_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class FlashTalkConfigError(ValueError):
    """A FlashTalk setting is invalid; the message says which value to use instead."""


@dataclass(frozen=True)
class FlashTalkConfig:
    """Streaming settings; defaults are the released ones (768x448, 33 frames, 4 steps, shift 5).

    ``frame_num`` pixel frames are generated per chunk; the first ``motion_frames`` of them re-create
    the previous chunk's tail and are dropped, so each chunk emits ``frame_num - motion_frames``
    frames (28 released) and consumes that many frames of audio (17,920 samples at 16 kHz / 25 fps).
    """

    height: int = 768
    width: int = 448
    frame_num: int = 33
    motion_frames: int = 5
    sampling_steps: int = 4
    shift: float = 5.0
    num_timesteps: int = 1000
    color_correction_strength: float = 1.0
    fps: int = 25
    sample_rate: int = 16000
    audio_buffer_s: float = 8.0
    seed: int = 9999
    vae_stride: tuple[int, int, int] = (4, 8, 8)
    patch_size: tuple[int, int, int] = (1, 2, 2)
    device: str | None = None  # None / "auto": CUDA when usable, else CPU
    dtype: DtypeName = "auto"  # DiT and VAE; "auto": bf16 on CUDA (as released), fp32 on CPU

    def __post_init__(self) -> None:
        object.__setattr__(self, "vae_stride", tuple(int(v) for v in self.vae_stride))
        object.__setattr__(self, "patch_size", tuple(int(v) for v in self.patch_size))
        st, ss = self.vae_stride[0], self.vae_stride[1] * self.patch_size[1]
        if self.height % ss or self.width % ss or self.height <= 0 or self.width <= 0:
            raise FlashTalkConfigError(
                f"height x width must be positive multiples of {ss} (VAE x{self.vae_stride[1]}, patch "
                f"x{self.patch_size[1]}), got {self.height}x{self.width}; the released size is 768x448"
            )
        if self.frame_num < 1 or (self.frame_num - 1) % st:
            raise FlashTalkConfigError(
                f"frame_num must be {st}k+1 (the VAE compresses time {st}x), got {self.frame_num}; released: 33"
            )
        if not 0 < self.motion_frames < self.frame_num:
            raise FlashTalkConfigError(
                f"motion_frames must be in 1..frame_num-1, got {self.motion_frames} with frame_num "
                f"{self.frame_num}; released: 5"
            )
        if self.sampling_steps < 1 or self.num_timesteps < 1 or not self.shift > 0:
            raise FlashTalkConfigError(
                f"need sampling_steps >= 1, num_timesteps >= 1 and shift > 0, got {self.sampling_steps}, "
                f"{self.num_timesteps}, {self.shift}; released: 4, 1000, 5.0"
            )
        if not 0.0 <= self.color_correction_strength <= 1.0:
            raise FlashTalkConfigError(
                f"color_correction_strength must be in [0, 1], got {self.color_correction_strength}; released: 1.0"
            )
        if self.fps <= 0 or self.sample_rate <= 0 or self.sample_rate % self.fps:
            raise FlashTalkConfigError(
                f"sample_rate ({self.sample_rate}) must be a positive whole multiple of fps ({self.fps}); "
                "released: 16000 Hz at 25 fps"
            )
        if self.audio_buffer_s * self.fps < self.frame_num:
            raise FlashTalkConfigError(
                f"audio_buffer_s ({self.audio_buffer_s}) must cover frame_num ({self.frame_num}) frames; released: 8"
            )
        if self.dtype not in ("auto", *_DTYPES):
            raise FlashTalkConfigError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {self.dtype!r}")

    # -- derived geometry ---------------------------------------------------------------------------------
    @property
    def frames_per_chunk(self) -> int:
        """Frames each chunk emits (the release's ``slice_len``): ``frame_num - motion_frames``."""
        return self.frame_num - self.motion_frames

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps

    @property
    def samples_per_chunk(self) -> int:
        """New audio samples per chunk: 28 * 640 = 17,920 released."""
        return self.frames_per_chunk * self.samples_per_frame

    @property
    def latent_frames(self) -> int:
        return (self.frame_num - 1) // self.vae_stride[0] + 1

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // self.vae_stride[1], self.width // self.vae_stride[2]

    def seq_len(self, sp_size: int = 1) -> int:
        """DiT tokens per chunk rounded up to a multiple of ``sp_size`` (12,096 released)."""
        lat_h, lat_w = self.latent_hw
        tokens = self.latent_frames * lat_h * lat_w // (self.patch_size[1] * self.patch_size[2])
        return math.ceil(tokens / sp_size) * sp_size


@dataclass(frozen=True)
class DtypePolicy:
    """Per-component dtypes, resolved once for a device, with the reason (logged)."""

    dit: torch.dtype
    vae: torch.dtype
    audio: torch.dtype
    conditioning: torch.dtype  # T5 context / CLIP tokens as handed to the DiT
    reason: str


def resolve_device(requested: str | None = None) -> tuple[torch.device, str]:
    """The device to run on and why. ``None``/"auto" picks CUDA when usable, else the CPU.

    An explicit ``"cuda[:N]"`` that is not usable raises :class:`FlashTalkConfigError` naming the fix.
    """
    choice = (requested or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
            return device, f"auto: CUDA is available ({torch.cuda.get_device_name(device)})"
        return torch.device("cpu"), "auto: no usable CUDA device, running on the CPU (far from real time)"
    try:
        device = torch.device(choice)
    except RuntimeError as exc:
        raise FlashTalkConfigError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FlashTalkConfigError(
                f"device {requested!r} was asked for but torch sees no usable CUDA GPU "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); install a CUDA build of "
                "torch or set device: cpu"
            )
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise FlashTalkConfigError(
                f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) visible; use cuda:0.."
            )
        device = torch.device("cuda", index)
        return device, f"requested {requested!r} ({torch.cuda.get_device_name(device)})"
    if device.type != "cpu":
        raise FlashTalkConfigError(f"device {requested!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device, f"requested {requested!r}"


def resolve_dtypes(device: torch.device, requested: DtypeName = "auto") -> DtypePolicy:
    """Component dtypes for ``device``: as released on CUDA (bf16 DiT/VAE, fp32 wav2vec2), fp32 on CPU."""
    if requested == "auto":
        name = "bf16" if device.type == "cuda" else "fp32"
        why = (
            "auto on CUDA: bf16 DiT and VAE as released (param_dtype), fp32 wav2vec2"
            if device.type == "cuda"
            else "auto on CPU: fp32 everywhere (bf16 is slow on CPUs; fp32 is the golden reference precision)"
        )
    elif requested in _DTYPES:
        name, why = requested, f"requested {requested} for the DiT and VAE; wav2vec2 stays fp32 as released"
    else:
        raise FlashTalkConfigError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {requested!r}")
    dtype = _DTYPES[name]
    policy = DtypePolicy(dit=dtype, vae=dtype, audio=torch.float32, conditioning=dtype, reason=why)
    log.info("FlashTalk dtypes on %s: DiT %s, VAE %s, wav2vec2 %s (%s)", device, dtype, dtype, torch.float32, why)
    return policy
