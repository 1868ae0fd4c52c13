"""SoulX-FlashHead Pro against its release: every case of ../shared/golden-flashhead through
``python -m engine.refcheck`` (compared by the bundle's own compare.py at its tolerances), plus the loader and
precision facts the cases cannot show on the CPU in float32."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from golden_support import (
    CHECKOUT,
    SHARED_GOLDEN_FLASHHEAD,
    flashhead_golden_or_skip,
    golden_module,
    locate_flashhead_golden,
)
from safetensors.torch import load_file

from engine.loading.dit import AUDIO_PROJ_PATCH_NAME, load_dit
from engine.loading.state_dict import CheckpointError
from engine.models.transformer import WanAudioTransformer

REFCHECK = (
    f"cd {CHECKOUT} && {{python}} -m engine.refcheck {{task}} --inputs {{inputs}} --outputs {{outputs}} "
    "--request {request}"
)


def _cases() -> list[str]:
    golden = locate_flashhead_golden()
    return [] if golden is None else sorted(golden_module(golden).list_cases(str(golden)))


_NO_BUNDLE = pytest.param("none", marks=pytest.mark.skip(reason=f"no FlashHead golden bundle at {SHARED_GOLDEN_FLASHHEAD}"))


@pytest.mark.parametrize("case", _cases() or [_NO_BUNDLE])
def test_flashhead_case_through_refcheck(case: str, tmp_path: Path) -> None:
    import shlex
    import sys

    golden = flashhead_golden_or_skip()
    cmd = REFCHECK.replace("{python}", shlex.quote(sys.executable))
    report = golden_module(golden).run_case(str(golden), case, cmd, str(tmp_path), timeout=600)
    assert "error" not in report, report["error"]
    assert report["max_rel"] <= report["tol"], {k: v["max_rel"] for k, v in report["cmp"].items()}


def test_expected_case_set() -> None:
    """The bundle's 5 tasks are all exercised (a renamed or dropped case must not shrink the proof silently)."""
    golden = flashhead_golden_or_skip()
    tasks = {case.split("__")[0] for case in _cases()}
    assert tasks == {"fh_dit_forward", "fh_audio_embed", "fh_prepare", "fh_sampler", "fh_stream_chunk"}
    assert len(_cases()) == 9, golden


@pytest.fixture
def fh_dit_dir() -> Path:
    return flashhead_golden_or_skip() / "models" / "dit"


def test_flashhead_is_the_same_dit_family(fh_dit_dir: Path) -> None:
    """One module, the FlashHead variant: audio-only cross-attention with q/k norms, no image or audio branch."""
    model = load_dit(fh_dit_dir)
    assert type(model) is WanAudioTransformer and model.config.variant == "flashhead"
    block = model.blocks[0]
    assert block.audio_cross_attn is None and block.norm_x is None
    assert sorted(n for n, _ in block.cross_attn.named_parameters()) == [
        "k.bias", "k.weight", "norm_k.weight", "norm_q.weight", "o.bias", "o.weight", "q.bias", "q.weight",
        "v.bias", "v.weight",
    ]
    assert not hasattr(model, "img_emb")
    file_keys = set(load_file(str(fh_dit_dir / "diffusion_pytorch_model.safetensors")))
    assert set(model.state_dict()) == file_keys  # strict: every released tensor has a home, nothing extra


def test_audio_projection_widths_must_match_the_weights(fh_dit_dir: Path, tmp_path: Path) -> None:
    """Without the bundle's width patch the release's 512/1536/32 apply and the tiny weights are refused by name."""
    folder = tmp_path / "dit"
    folder.mkdir()
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        shutil.copy(fh_dit_dir / name, folder / name)
    with pytest.raises(CheckpointError, match=AUDIO_PROJ_PATCH_NAME):
        load_dit(folder)
    shutil.copy(fh_dit_dir / AUDIO_PROJ_PATCH_NAME, folder / AUDIO_PROJ_PATCH_NAME)
    assert load_dit(folder).config.context_tokens == 4


def _forward(model: WanAudioTransformer, t: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 4, 4, generator=gen)
    y = torch.randn(1, 16, 2, 4, 4, generator=gen)
    audio = torch.randn(1, 5, 5, 12, 768, generator=gen)
    with torch.inference_mode():
        return model(x, torch.tensor([t]), None, None, y, audio)


def test_bf16_release_precision(fh_dit_dir: Path) -> None:
    """In bf16 FlashHead rounds the timestep to bf16 before the sinusoid (937.5 -> 936, as released) and returns
    the velocity in bf16; in float32 the two timesteps differ."""
    bf16 = load_dit(fh_dit_dir, dtype=torch.bfloat16)
    out = _forward(bf16, 937.5)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, _forward(bf16, 936.0))
    fp32 = load_dit(fh_dit_dir)
    assert not torch.equal(_forward(fp32, 937.5), _forward(fp32, 936.0))


def test_sampler_updates_in_bf16_as_flashheads_release() -> None:
    """With a bf16 velocity (FlashHead on the GPU) the update runs in bf16 with the sigmas rounded to bf16 first,
    exactly as the release's loop (written out here) does; the golden cases cover the float32 path."""
    from engine.sampler import GivenNoise, denoise, shifted_timesteps

    g = torch.Generator().manual_seed(0)
    bf16 = torch.bfloat16
    init, v = torch.randn(2, 1, 16, 3, 2, 2, generator=g).to(bf16)
    motion = torch.randn(1, 16, 1, 2, 2, generator=g).to(bf16)
    steps = torch.randn(4, 1, 16, 3, 2, 2, generator=g).to(bf16)
    timesteps = shifted_timesteps(4, 5.0)
    out = denoise(lambda latent, t: v, init, motion, timesteps, GivenNoise(init, steps))
    noise = init.clone()
    for i in range(4):
        noise[:, :, :1] = motion
        t_i, t_next = (timesteps[i] / 1000).to(bf16), (timesteps[i + 1] / 1000).to(bf16)
        x_0 = noise - v * t_i
        noise = (1 - t_next) * x_0 + t_next * steps[i]
    noise[:, :, :1] = motion
    assert out.dtype == bf16 and torch.equal(out, noise)
