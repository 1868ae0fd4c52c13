"""The audio front end reproduces the official wav2vec2 / get_audio_embedding (golden README §7)."""
from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file

from engine.refcheck.request import RefRequest
from engine.refcheck.tasks_audio import audio_embed, wav2vec2_forward

CHECKOUT = Path(__file__).resolve().parents[2]
HANDLERS = {
    "audio_embed__once": audio_embed,
    "audio_embed__stream": audio_embed,
    "wav2vec2_forward__a": wav2vec2_forward,
    "wav2vec2_forward__a_legacy_bin": wav2vec2_forward,
}


def _golden_module(golden_dir: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("golden_compare", golden_dir / "compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", sorted(HANDLERS))
def test_audio_case_in_process(case: str, golden_dir: Path, tmp_path: Path) -> None:
    golden = _golden_module(golden_dir)
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps(golden.make_request(str(golden_dir), case)))
    request = RefRequest.from_file(request_path)
    case_dir = golden_dir / "cases" / case
    inputs = load_file(str(case_dir / "inputs.safetensors"))

    produced = HANDLERS[case](inputs, request)

    for name, spec in request.outputs.items():
        assert list(produced[name].shape) == spec["shape"], name
    for name in request.optional_outputs:  # the debug intermediates are produced too
        assert name in produced, name
    report = golden.check_outputs(str(case_dir), {k: v.detach().cpu().numpy() for k, v in produced.items()})
    assert report["max_rel"] <= report["tol"], {k: v["max_rel"] for k, v in report["cmp"].items()}
    # the preprocessing is bit-exact; only the transformer's float32 reduction order differs
    for name in ("debug.loudnorm", "debug.input_values"):
        if name in report["cmp"]:
            assert report["cmp"][name]["max_rel"] == 0.0, (name, report["cmp"][name])


def test_stream_case_through_the_streaming_window(golden_dir: Path) -> None:
    """The 8 s zero-prefilled buffer of the stream case, rebuilt with StreamingAudioWindow."""
    from engine.audio_encoder import AudioEncoder, StreamingAudioWindow

    case_dir = golden_dir / "cases" / "audio_embed__stream"
    wave = load_file(str(case_dir / "inputs.safetensors"))["wave"].numpy()
    expected = load_file(str(case_dir / "expected.safetensors"))
    win = StreamingAudioWindow()
    signal = wave[(wave != 0).argmax():]  # 2.5 s of signal at the end, zeros before
    for part in (signal[:17920], signal[17920:]):
        win.push(part)
    assert (win.window() == wave).all()
    encoder = AudioEncoder.from_folder(golden_dir / "models" / "wav2vec2")
    emb, _ = encoder.embed_window(win, 33)
    ref = expected["emb"]
    assert ((emb - ref).abs().max() / ref.abs().max()).item() <= 1e-4


def test_audio_embed_through_cli(golden_dir: Path, tmp_path: Path) -> None:
    golden = _golden_module(golden_dir)
    cmd = (
        f"cd {shlex.quote(str(CHECKOUT))} && {shlex.quote(sys.executable)} -m engine.refcheck "
        "{task} --inputs {inputs} --outputs {outputs} --request {request}"
    )
    report = golden.run_case(str(golden_dir), "audio_embed__stream", cmd, str(tmp_path), timeout=300)
    assert "error" not in report, report["error"]
    assert report["max_rel"] <= report["tol"], {k: v["max_rel"] for k, v in report["cmp"].items()}
    assert isinstance(report["max_rel"], float) and not torch.isnan(torch.tensor(report["max_rel"]))
