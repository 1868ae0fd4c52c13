"""Per-session text/image cross-attention K/V: computed once, identical results, used by the real session loop."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from test_sequence_parallel import _inputs, _model

from engine.interface import SessionRequest


@pytest.mark.parametrize("case", ["even", "padded"])
def test_cached_cross_kv_gives_the_same_velocity(case: str) -> None:
    model = _model()
    x, t, context, clip_fea, y, audio = _inputs(case)
    with torch.no_grad():
        ref = model(x, t, context, clip_fea, y, audio)
        cross = model.context_kv(context, clip_fea)
        out = model(x, t, context, clip_fea, y, audio, cross=cross)
        other = model.context_kv(torch.randn_like(context), clip_fea)  # a different prompt must change the result
        changed = model(x, t, context, clip_fea, y, audio, cross=other)
    assert torch.equal(out, ref)
    assert not torch.allclose(changed, ref)
    if x.shape[0] > 1:  # K/V of a single prompt do not fit a batch of two
        with pytest.raises(ValueError, match="rebuild it with context_kv"):
            model(x, t, context, clip_fea, y, audio, cross=model.context_kv(context[:1], clip_fea[:1]))


def test_a_session_embeds_the_prompt_once_for_all_steps_and_chunks() -> None:
    from engine.build import build_tiny_engine
    from engine.config import FlashTalkConfig

    engine = build_tiny_engine(FlashTalkConfig(), seed=0)
    transformer = engine.models.dit.transformer
    calls = {"text": 0, "blocks": 0}
    transformer.text_embedding.register_forward_hook(lambda *_: calls.__setitem__("text", calls["text"] + 1))
    transformer.blocks[0].register_forward_hook(lambda *_: calls.__setitem__("blocks", calls["blocks"] + 1))
    session = engine.start_session(SessionRequest(session_id="s", avatar=None, seed=1))
    session.push_audio(np.zeros(3 * engine.spec.samples_per_chunk, dtype=np.float32))
    chunks = [session.next_chunk() for _ in range(2)]
    spec = engine.spec
    assert [c.first_frame for c in chunks] == [0, spec.frames_per_chunk]  # two real chunks, one after the other
    assert all(c.frames.shape == (spec.frames_per_chunk, spec.height, spec.width, 3) for c in chunks)
    assert calls["blocks"] >= 8  # 4 steps x 2 chunks ran through the DiT
    assert calls["text"] == 1  # ... with the prompt embedded once, when the session started
