"""Per-session conditioning computed once, cached on disk, encoders freed right after use.

FlashTalk keeps umT5-XXL (~11 GB) and CLIP ViT-H resident to encode one constant prompt and one
reference image (ARCHITECTURE anti-pattern 11). Here:

* ``ConditioningCache`` stores each result as a safetensors file named by a content hash of
  everything the result depends on (prompt text or image bytes + size, model file identity, format
  version). A lookup that hits never calls ``compute``.
* ``Conditioner`` ties the cache to a weights folder in the released layout (spec §2.9): on a miss
  it loads the encoder, encodes, and frees it (``del`` + ``gc`` + ``torch.cuda.empty_cache``).

Cache files are written atomically (temp file in the same folder + fsync + ``os.replace``), so a
crash or a second process can never leave a half-written entry under the final name. An unreadable
or stale entry is logged as a warning and recomputed.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine.loading.encoders import (
    load_clip_visual,
    load_t5_encoder,
    load_umt5_tokenizer,
    tokenize_prompts,
)
from engine.loading.layout import CLIP_CHECKPOINT, T5_CHECKPOINT, T5_TOKENIZER_DIR, VAE_CHECKPOINT
from engine.models.clip import CLIPVisionConfig, clip_preprocess
from engine.models.t5 import T5Config
from engine.prepare import reference_pixels

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_IDENTITY_BYTES = 1 << 20  # head and tail read for a model file's identity


def file_identity(path: Path) -> str:
    """Cheap identity of a (multi-GB) model file: name, size and a hash of its first and last MiB.

    The tail of a torch zip checkpoint is its central directory, which carries a CRC32 of every
    record, so any change of the weights changes the identity; copying the file does not.
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(_IDENTITY_BYTES))
        if size > _IDENTITY_BYTES:
            f.seek(max(_IDENTITY_BYTES, size - _IDENTITY_BYTES))
            digest.update(f.read())
    return f"{path.name}:{size}:{digest.hexdigest()[:16]}"


def _hash_fields(*fields: bytes) -> str:
    digest = hashlib.sha256()
    for field in fields:
        digest.update(len(field).to_bytes(8, "little"))
        digest.update(field)
    return digest.hexdigest()


def _as_uint8_image(image_u8: np.ndarray | torch.Tensor) -> np.ndarray:
    array = image_u8.detach().cpu().numpy() if isinstance(image_u8, torch.Tensor) else np.asarray(image_u8)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


class ConditioningCache:
    """Disk cache of text embeddings (per prompt), CLIP tokens and reference latents (per avatar image).

    ``text_model_id`` / ``image_model_id`` identify the encoder weights (see ``file_identity``);
    they are part of every key, so new weights never reuse stale entries. Returned tensors are on
    the CPU in the dtype ``compute`` produced.
    """

    def __init__(
        self, cache_dir: Path, *, text_model_id: str = "", image_model_id: str = "", vae_model_id: str = ""
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.text_model_id = text_model_id
        self.image_model_id = image_model_id
        self.vae_model_id = vae_model_id

    def text_key(self, prompt: str) -> str:
        return _hash_fields(b"text", str(FORMAT_VERSION).encode(), self.text_model_id.encode(), prompt.encode())

    def image_key(self, image_u8: np.ndarray | torch.Tensor, target_hw: tuple[int, int] | None = None) -> str:
        image = _as_uint8_image(image_u8)
        target = b"" if target_hw is None else f"{target_hw[0]}x{target_hw[1]}".encode()
        shape = "x".join(map(str, image.shape)).encode()
        return _hash_fields(
            b"image", str(FORMAT_VERSION).encode(), self.image_model_id.encode(), shape, target, image.tobytes()
        )

    def reference_key(self, image_u8: np.ndarray | torch.Tensor, params: str) -> str:
        image = _as_uint8_image(image_u8)
        shape = "x".join(map(str, image.shape)).encode()
        return _hash_fields(
            b"reference", str(FORMAT_VERSION).encode(), self.vae_model_id.encode(), params.encode(), shape,
            image.tobytes(),
        )

    def get_text(self, prompt: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The embedding of ``prompt``; ``compute()`` runs only on a miss."""
        return self._get("text", self.text_key(prompt), lambda: {"value": compute()})["value"]

    def get_image(
        self,
        image_u8: np.ndarray | torch.Tensor,
        compute: Callable[[], torch.Tensor],
        *,
        target_hw: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """The CLIP tokens of ``image_u8`` (H, W, 3) at ``target_hw``; ``compute()`` runs only on a miss."""
        return self._get("image", self.image_key(image_u8, target_hw), lambda: {"value": compute()})["value"]

    def get_reference(
        self, image_u8: np.ndarray | torch.Tensor, params: str, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """The VAE latents of a reference image (e.g. ``y`` and the first motion latent).

        ``params`` names everything besides the image and the VAE weights that shapes them (frame
        count, dtype); ``compute()`` runs only on a miss."""
        return self._get("reference", self.reference_key(image_u8, params), compute)

    def path_for(self, kind: str, key: str) -> Path:
        return self.cache_dir / f"{kind}-{key}.safetensors"

    def _get(
        self, kind: str, key: str, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        path = self.path_for(kind, key)
        if path.is_file():
            cached = self._read(path, key)
            if cached is not None:
                return cached
        values = {name: t.detach().to("cpu").contiguous() for name, t in compute().items()}
        self._write(path, key, values)
        return values

    def _read(self, path: Path, key: str) -> dict[str, torch.Tensor] | None:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("key") != key or meta.get("format_version") != str(FORMAT_VERSION):
                    raise ValueError("entry does not match its key or format version")
                return {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("conditioning cache entry %s is unreadable (%s); recomputing it", path, exc)
            return None

    def _write(self, path: Path, key: str, values: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        payload = save(values, metadata={"key": key, "format_version": str(FORMAT_VERSION)})
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.cache_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/soulx-live/conditioning`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "soulx-live" / "conditioning"


def release_memory(device: torch.device) -> None:
    """Give freed encoder memory back: Python garbage, then the CUDA caching allocator."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Conditioner:
    """Text context and CLIP tokens for a weights folder in the released layout, via the cache.

    ``text_context(prompt)`` -> ``(L_real, 4096)``; ``image_tokens(image_u8)`` -> ``(1, 257, 1280)``;
    both in ``out_dtype`` (bf16, the DiT dtype) on ``device``. Encoders are loaded only on a cache
    miss and freed before the call returns.
    """

    def __init__(
        self,
        weights_dir: Path,
        *,
        cache_dir: Path | None = None,
        device: torch.device | str = "cpu",
        out_dtype: torch.dtype = torch.bfloat16,
        t5_dtype: torch.dtype = torch.bfloat16,
        clip_dtype: torch.dtype | None = None,
        t5_config: T5Config | None = None,
        clip_config: CLIPVisionConfig | None = None,
    ) -> None:
        self.weights_dir = Path(weights_dir)
        self.device = torch.device(device)
        self.out_dtype = out_dtype
        self.t5_dtype = t5_dtype
        # The release runs CLIP with fp16 weights on CUDA; fp16 convolutions are slow/absent on CPU.
        self.clip_dtype = clip_dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.t5_config = t5_config or T5Config()
        self.clip_config = clip_config or CLIPVisionConfig()
        self.t5_path = self.weights_dir / T5_CHECKPOINT
        self.clip_path = self.weights_dir / CLIP_CHECKPOINT
        self.tokenizer_dir = self.weights_dir / T5_TOKENIZER_DIR
        self.cache = ConditioningCache(
            cache_dir or default_cache_dir(),
            text_model_id=self._identity(self.t5_path, self.tokenizer_dir / "tokenizer.json"),
            image_model_id=self._identity(self.clip_path),
            vae_model_id=self._identity(self.weights_dir / VAE_CHECKPOINT),
        )

    @staticmethod
    def _identity(*paths: Path) -> str:
        # A missing file gets a placeholder id; loading it on a miss raises the real error.
        return "|".join(file_identity(p) if p.is_file() else f"{p.name}:missing" for p in paths)

    def text_context(self, prompt: str) -> torch.Tensor:
        value = self.cache.get_text(prompt, lambda: self._encode_text(prompt))
        return value.to(device=self.device, dtype=self.out_dtype)

    def image_tokens(self, image_u8: np.ndarray) -> torch.Tensor:
        """``image_u8``: the reference exactly as the DiT sees it (already resized/cropped), (H, W, 3)."""
        image = _as_uint8_image(image_u8)
        value = self.cache.get_image(image, lambda: self._encode_image(image), target_hw=image.shape[:2])
        return value.to(device=self.device, dtype=self.out_dtype)

    def reference_latents(
        self, image_u8: np.ndarray, params: str, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """VAE latents of the fitted reference image, computed once per image/VAE/``params``."""
        values = self.cache.get_reference(_as_uint8_image(image_u8), params, compute)
        return {name: t.to(device=self.device) for name, t in values.items()}

    def _encode_text(self, prompt: str) -> torch.Tensor:
        tokenizer = load_umt5_tokenizer(self.tokenizer_dir)  # before the 11 GB load: fail fast
        ids, mask = tokenize_prompts(tokenizer, [prompt], text_len=self.t5_config.text_len)
        model = load_t5_encoder(self.t5_path, dtype=self.t5_dtype, device=self.device, config=self.t5_config)
        try:
            with torch.inference_mode():
                return model.encode(ids.to(self.device), mask.to(self.device))[0].clone()
        finally:
            del model
            release_memory(self.device)

    def _encode_image(self, image_u8: np.ndarray) -> torch.Tensor:
        model = load_clip_visual(self.clip_path, dtype=self.clip_dtype, device=self.device, config=self.clip_config)
        try:
            # The release preprocesses in the pipeline dtype (bf16) and casts to the CLIP dtype inside.
            video = reference_pixels(image_u8, device=self.device, dtype=self.out_dtype)
            with torch.inference_mode():
                return model(clip_preprocess(video, self.clip_config))
        finally:
            del model
            release_memory(self.device)
