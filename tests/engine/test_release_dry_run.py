"""CPU dry run of the RELEASED SoulX-FlashTalk code beside ours, through ``--compare-reference``'s machinery.

The released code (a git-ignored copy in third_party/SoulX-FlashTalk, made by scripts/make_release_copy.sh from
a local mirror) runs at tiny widths on the golden bundle's random-weight models in the released formats, with
engine.bench.release_compat's stand-ins in place; it must give the same frames as our engine on the same inputs,
within the golden tolerances. This proves the comparison runs the same computation on both sides. The stand-in
unit tests below need no release.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from golden_support import (
    golden_inputs,
    golden_models,
    golden_module,
    golden_request,
    has_case,
    require_case,
)
from safetensors.torch import load_file

from engine.bench.release_compat import (
    release_environment,
    stand_in_modules,
    with_hidden_states,
)
from engine.refcheck.__main__ import resolve_handler

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "third_party" / "SoulX-FlashTalk"
MAKE_COPY = "bash scripts/make_release_copy.sh [MIRROR_GIT_DIR]"
CASE = "stream_chunk__chunk0"


@pytest.fixture
def release_copy() -> Path:
    if not (RELEASE / "flash_talk" / "inference.py").is_file():
        pytest.skip(f"no copy of the released code at {RELEASE}; make it from a local mirror with: {MAKE_COPY}")
    before = set(sys.modules)
    yield RELEASE
    for name in set(sys.modules) - before:  # the next import starts clean (and sees no stand-in)
        if name == "flash_talk" or name.startswith("flash_talk."):
            del sys.modules[name]
    if str(RELEASE) in sys.path:
        sys.path.remove(str(RELEASE))


def _max_rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    ref64 = ref.double()
    return float((out.double() - ref64).abs().max() / ref64.abs().max())


def test_release_stream_chunk_gives_our_frames(release_copy: Path, golden_dir: Path, tmp_path: Path) -> None:
    from engine.bench.reference import release_stream_chunk

    require_case(golden_dir, CASE)
    models = golden_models()
    request = golden_request(golden_dir, CASE, tmp_path)
    inputs = golden_inputs(golden_dir, CASE)
    with torch.inference_mode():
        ours = resolve_handler("stream_chunk")(inputs, request)
        theirs = release_stream_chunk(
            release_copy, {"dit": models / "dit", "vae": models / "vae_dim8" / "Wan2.1_VAE.pth",
                           "wav2vec2": models / "wav2vec2"}, inputs, request.params)
    tol = golden_module(golden_dir).TOL["stream_chunk"]
    for name in ("gen_video", "motion_latent_next"):
        assert theirs[name].shape == ours[name].shape, name
        assert _max_rel(theirs[name], ours[name]) <= tol, name
    if has_case(golden_dir, "stream_chunk__chunk1"):  # the full bundle records chunk 0's hand-off; the subset not
        expected = golden_inputs(golden_dir, "stream_chunk__chunk1")["latent_motion_frames"]
        assert _max_rel(theirs["motion_latent_next"], expected) <= tol
    stood_in = " ".join(theirs["stand_ins"])
    assert "flash_attention" in stood_in and "torch.compile" in stood_in  # recorded, not hidden
    assert "xformers" not in sys.modules or not getattr(sys.modules["xformers"], "__release_compat__", False)


def test_release_wav2vec2_hidden_states_match_the_golden(release_copy: Path, golden_dir: Path) -> None:
    """The release's own Wav2Vec2Model under this transformers, hidden states via the compat hooks if needed."""
    from engine.bench.reference import import_release

    case = "wav2vec2_forward__a"
    require_case(golden_dir, case)
    inputs = golden_inputs(golden_dir, case)
    with release_environment(lambda: import_release(release_copy), "cpu") as (release, _):
        model = release.wav2vec2.Wav2Vec2Model.from_pretrained(str(golden_models() / "wav2vec2")).eval()
        with torch.inference_mode():
            out = model(inputs["input_values"][None], seq_len=int(inputs["seq_len"]), output_hidden_states=True)
    # as preprocess_audio stacks them: [1, layers, frames, C] -> [frames, layers, C]
    hidden = torch.stack(out.hidden_states[1:], dim=1).squeeze(0).permute(1, 0, 2)
    ref = load_file(str(golden_dir / "cases" / case / "expected.safetensors"))["hidden"]
    assert _max_rel(hidden, ref) <= golden_module(golden_dir).TOL["wav2vec2_forward"]


# ----------------------------------------------------------------------------------------------- no release needed

def test_stand_ins_live_only_inside_the_context() -> None:
    assert "xfuser" not in sys.modules
    with stand_in_modules(["xfuser", "easydict"]) as used:
        from xfuser.core.distributed import get_sequence_parallel_world_size

        assert get_sequence_parallel_world_size() == 1 and "xfuser" in used
    assert "xfuser" not in sys.modules and "xfuser.core.distributed" not in sys.modules


def test_sdpa_stand_ins_match_plain_attention() -> None:
    from engine.bench.release_compat.attention import (
        BlockDiagonalMask,
        flash_attn_varlen_func,
        memory_efficient_attention,
        sdpa_blhd,
    )

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 6, 2, 4, generator=g) for _ in range(3))
    blocks = memory_efficient_attention(q, k, v, attn_bias=BlockDiagonalMask.from_seqlens([2, 4], [3, 3]))
    assert torch.allclose(blocks[:, :2], sdpa_blhd(q[:, :2], k[:, :3], v[:, :3]), atol=1e-6)
    assert torch.allclose(blocks[:, 2:], sdpa_blhd(q[:, 2:], k[:, 3:], v[:, 3:]), atol=1e-6)
    packed = flash_attn_varlen_func(q[0], k[0], v[0], torch.tensor([0, 2, 6]), torch.tensor([0, 3, 6]))
    assert torch.allclose(packed[None], blocks, atol=1e-6)


class _Layer(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x + 1,)


class _Encoder(torch.nn.Module):
    def __init__(self, native: bool) -> None:
        super().__init__()
        self.layers, self.native = torch.nn.ModuleList([_Layer(), _Layer()]), native

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        states = [x]
        for layer in self.layers:
            states.append(layer(states[-1])[0])
        # transformers 4 returns the tuple; transformers 5 (as the release calls it) returns None.
        return SimpleNamespace(last_hidden_state=states[-1], hidden_states=tuple(states) if self.native else None)


@pytest.mark.parametrize("native", [True, False], ids=["transformers4-tuple", "transformers5-none"])
def test_hidden_state_hooks(native: bool) -> None:
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = _Encoder(native)

        def forward(self, x: torch.Tensor, output_hidden_states: bool | None = None) -> SimpleNamespace:
            return self.encoder(x)

    Model.forward = with_hidden_states(Model.forward)  # type: ignore[method-assign]
    out = Model()(torch.zeros(2), output_hidden_states=True)
    assert [float(h[0]) for h in out.hidden_states[1:]] == [1.0, 2.0]
