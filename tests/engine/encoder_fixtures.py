"""Tiny stand-ins for the released encoder files, shared by the encoder and conditioning tests.

They are written in the released formats (flat torch state dicts in ``.pth`` files, a Hugging Face
tokenizer folder) so the real loading code runs on them; only the widths are small.
"""
from __future__ import annotations

from pathlib import Path

import torch

from engine.loading.encoders import CLIP_CHECKPOINT, T5_CHECKPOINT, T5_TOKENIZER_DIR
from engine.models.clip import CLIPVisionConfig, CLIPVisionEncoder
from engine.models.t5 import T5Config, UMT5Encoder

WORDS = "a person is talking only the foreground characters are moving background remains static".split()


def randomize(module: torch.nn.Module, seed: int, std: float = 0.3) -> torch.nn.Module:
    """Every parameter random (so every one of them affects the output)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


def tiny_t5(seed: int = 0) -> UMT5Encoder:
    return randomize(UMT5Encoder(T5Config.tiny()), seed).eval()


def tiny_clip(seed: int = 1) -> CLIPVisionEncoder:
    return randomize(CLIPVisionEncoder(CLIPVisionConfig.tiny()), seed).eval()


def write_tokenizer(folder: Path) -> Path:
    """A word-level fast tokenizer with umT5's special ids (pad 0, eos 1, unk 2) and EOS appended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return folder


def clip_file_state(model: CLIPVisionEncoder) -> dict[str, torch.Tensor]:
    """The visual tower as the released open-clip file holds it: ``visual.*`` plus unused text parts."""
    state = {f"visual.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    state["textual.token_embedding.weight"] = torch.zeros(8, 4)
    state["textual.head.0.weight"] = torch.zeros(4, 4)
    state["log_scale"] = torch.tensor(4.6052)
    return state


def write_weights_folder(folder: Path) -> tuple[Path, UMT5Encoder, CLIPVisionEncoder]:
    """A weights folder in the released layout holding tiny T5, CLIP and tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    t5, clip = tiny_t5(), tiny_clip()
    torch.save({k: v.to(torch.bfloat16) for k, v in t5.state_dict().items()}, folder / T5_CHECKPOINT)
    torch.save(clip_file_state(clip), folder / CLIP_CHECKPOINT)
    write_tokenizer(folder / T5_TOKENIZER_DIR)
    return folder, t5, clip
