"""``engine.flashtalk.compile`` / ``fp8`` through ``build_engine`` on the tiny-random preset (CPU): the levers are
installed on the real DiT and the frames stay what eager float32 gives (compile) or close to it (fp8)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.build import build_engine
from engine.interface import SessionRequest
from engine.ops.fp8 import Fp8Linear
from soulx_live.config import EngineConfig


def _frames(**flashtalk: object) -> tuple[np.ndarray, object]:
    engine = build_engine(EngineConfig(kind="flashtalk", flashtalk={"preset": "tiny-random", **flashtalk}))
    session = engine.start_session(SessionRequest(session_id="s", avatar=None, seed=3))
    t = np.arange(2 * engine.spec.samples_per_chunk) / 16000
    session.push_audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    return np.concatenate([session.next_chunk().frames for _ in range(2)]).astype(np.int16), engine


@pytest.mark.timeout(300)
def test_compiled_blocks_give_the_eager_frames() -> None:
    eager, _ = _frames()
    compiled, engine = _frames(compile=True)
    blocks = engine.models.dit.transformer.blocks
    assert all(block._compiled_call_impl is not None for block in blocks)
    diff = np.abs(compiled - eager)
    assert diff.max() <= 1 and diff.mean() < 0.05  # fp32 rounding may flip a uint8 level at most


def test_fp8_swaps_the_block_gemms_and_stays_close() -> None:
    eager, _ = _frames()
    fp8, engine = _frames(fp8=True)
    block = engine.models.dit.transformer.blocks[0]
    assert isinstance(block.ffn[0], Fp8Linear) and isinstance(block.self_attn.q, Fp8Linear)
    diff = np.abs(fp8 - eager)
    assert 0 < diff.mean() < 4.0  # quantised (not identical), within a few uint8 levels on average


def test_memory_settings_install_the_mode() -> None:
    from engine.build import memory_mode
    from engine.config import FlashTalkConfigError
    from engine.memory import MemoryMode
    from engine.ops.fp8_weights import Fp8WeightLinear

    _, engine = _frames(memory="offload", fp8_weights=True)
    transformer = engine.models.dit.transformer
    assert transformer.offloader.on_device() == (0,)  # after the chunks: block 0 prefetched for the next step
    assert isinstance(transformer.blocks[0].audio_cross_attn.proj, Fp8WeightLinear)
    old_name = EngineConfig(kind="flashtalk", flashtalk={"cpu_offload": True}).flashtalk
    assert memory_mode(old_name) == MemoryMode(offload=True)  # cpu_offload: true is the old name of offload
    with pytest.raises(FlashTalkConfigError, match="compile=false"):
        build_engine(EngineConfig(kind="flashtalk", flashtalk={"preset": "tiny-random", "memory": "offload",
                                                               "compile": True}))
