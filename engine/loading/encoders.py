"""Loading the once-per-session encoders from the released weights folder (spec §2.9, §3).

Files in ``models/SoulX-FlashTalk-14B/``:

* ``models_t5_umt5-xxl-enc-bf16.pth`` — flat umT5-XXL encoder state dict (keys: ``engine.models.t5``).
* ``google/umt5-xxl/`` — the Hugging Face tokenizer folder for it.
* ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` — the whole open-clip model. Only
  ``visual.*`` is loaded (prefix stripped, keys in ``engine.models.clip``). The XLM-RoBERTa text tower
  (``textual.*``) and the contrastive temperature (``log_scale``) are skipped by name: FlashTalk
  loads them but never calls them. Any other key is an error (wrong file).

Both loaders build on the meta device and assign the tensors strictly (``engine.loading.state_dict``).
"""
from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import Any

import torch

from engine.loading.layout import CLIP_CHECKPOINT, T5_CHECKPOINT, T5_TOKENIZER_DIR
from engine.loading.state_dict import CheckpointError, build_on_meta, load_into, read_torch_file
from engine.models.clip import CLIPVisionConfig, CLIPVisionEncoder
from engine.models.t5 import T5Config, UMT5Encoder

log = logging.getLogger(__name__)

CLIP_VISUAL_PREFIX = "visual."
# Parts of the open-clip checkpoint that FlashTalk never runs: skipped explicitly, not silently.
CLIP_SKIPPED_PREFIXES = ("textual.",)
CLIP_SKIPPED_KEYS = ("log_scale",)


def load_t5_encoder(
    pth: Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    config: T5Config | None = None,
) -> UMT5Encoder:
    """Build the umT5 encoder on meta and assign ``pth`` (released: bf16, ~11 GB) strictly."""
    cfg = config or T5Config()
    model = build_on_meta(lambda: UMT5Encoder(cfg))
    state = read_torch_file(Path(pth))
    load_into(model, state, str(pth), dtype=dtype, device=device)
    return model.eval().requires_grad_(False)


def clip_visual_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Select the visual tower from a full open-clip state dict and strip its prefix."""
    visual: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        if key.startswith(CLIP_VISUAL_PREFIX):
            visual[key[len(CLIP_VISUAL_PREFIX):]] = tensor
        elif not (key.startswith(CLIP_SKIPPED_PREFIXES) or key in CLIP_SKIPPED_KEYS):
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{source} has {len(unknown)} key(s) outside visual.*/textual.*/log_scale, e.g. {sorted(unknown)[:3]}; "
            f"it is not the open-clip XLM-RoBERTa ViT-H/14 checkpoint ({CLIP_CHECKPOINT})"
        )
    if not visual:
        raise CheckpointError(f"{source} has no visual.* tensors; expected {CLIP_CHECKPOINT}")
    return visual


def load_clip_visual(
    pth: Path,
    *,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str = "cpu",
    config: CLIPVisionConfig | None = None,
) -> CLIPVisionEncoder:
    """Build the CLIP visual tower on meta and assign the ``visual.*`` tensors of ``pth`` strictly.

    The release runs it with fp16 weights on CUDA; use fp32 on CPU.
    """
    cfg = config or CLIPVisionConfig()
    model = build_on_meta(lambda: CLIPVisionEncoder(cfg))
    state = clip_visual_state(read_torch_file(Path(pth)), str(pth))
    load_into(model, state, f"{pth} (visual.*)", dtype=dtype, device=device)
    return model.eval().requires_grad_(False)


def load_umt5_tokenizer(folder: Path) -> Any:
    """The umT5 tokenizer from the local folder (never from the network)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"umT5 tokenizer folder not found: {folder}. It ships with the weights as "
            f"'{T5_TOKENIZER_DIR}/' next to {T5_CHECKPOINT}; point the engine at that weights folder."
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the umT5 tokenizer from {folder}: {exc}") from exc


_SAFE_WITHOUT_FTFY = re.compile(r"[\x20-\x25\x27-\x7e\t\n\r]*")  # printable ASCII except '&'


def clean_prompt(text: str) -> str:
    """The release's ``clean='whitespace'``: ftfy fix, HTML-unescape twice, strip, collapse whitespace.

    ``ftfy.fix_text`` leaves printable ASCII without '&' unchanged, so such prompts (the default one
    included) need no ftfy; anything else does.
    """
    try:
        import ftfy
    except ImportError:
        if not _SAFE_WITHOUT_FTFY.fullmatch(text):
            raise ImportError(
                "this prompt has non-ASCII characters or '&', which the release cleans with ftfy: "
                'pip install ftfy  (or pip install "soulx-live[engine]")'
            ) from None
    else:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def tokenize_prompts(tokenizer: Any, prompts: list[str], *, text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and tokenize as released: special tokens added, padded/truncated to ``text_len``.

    Returns ``(ids, mask)``, both ``(len(prompts), text_len)`` int64.
    """
    out = tokenizer(
        [clean_prompt(p) for p in prompts],
        padding="max_length",
        truncation=True,
        max_length=text_len,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    return out["input_ids"].long(), out["attention_mask"].long()
