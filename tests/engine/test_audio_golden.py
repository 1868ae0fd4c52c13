"""The audio front end reproduces the official wav2vec2 / get_audio_embedding (golden README §7)."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers", reason='the FlashTalk audio front end needs the [engine] extra: pip install -e ".[engine]" (or ".[all]")')
from golden_support import check_case, golden_inputs, golden_request, per_tensor_errors
from safetensors.torch import load_file

from engine.refcheck.tasks_audio import audio_embed, wav2vec2_forward

HANDLERS = {
    "audio_embed__once": audio_embed,
    "audio_embed__stream": audio_embed,
    "wav2vec2_forward__a": wav2vec2_forward,
    "wav2vec2_forward__a_legacy_bin": wav2vec2_forward,
}



@pytest.mark.parametrize("case", sorted(HANDLERS))
def test_audio_case_in_process(case: str, golden_dir: Path, tmp_path: Path) -> None:
    request = golden_request(golden_dir, case, tmp_path)
    produced = HANDLERS[case](golden_inputs(golden_dir, case), request)

    for name, spec in request.outputs.items():
        assert list(produced[name].shape) == spec["shape"], name
    for name in request.optional_outputs:  # the debug intermediates are produced too
        assert name in produced, name
    report = check_case(golden_dir, case, produced)
    assert report["max_rel"] <= report["tol"], per_tensor_errors(report)
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
