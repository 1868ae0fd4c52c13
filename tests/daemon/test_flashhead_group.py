"""FlashHead as a torchrun group behind the supervisor (CPU, gloo, the tiny-random FlashHead engine): rank 0 talks
ZeroMQ, the DiT is split across 2 ranks with Ulysses sequence parallelism, and the frames equal the single-process
worker's. Same machinery as FlashTalk's group (tests/daemon/test_worker_group.py), selected by engine.kind only."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from live_support import live_config, short_tmp

from engine.interface import FrameChunk
from soulx_live.bus import FrameSubscriber
from soulx_live.supervisor import Supervisor
from soulx_live.worker_launch import WorkerLaunch

pytestmark = pytest.mark.timeout(240)


def _run(root: Path, world: int, n: int = 3) -> tuple[list[FrameChunk], int, WorkerLaunch]:
    cfg = live_config(root, **{"engine.kind": "flashhead", "engine.flashhead.preset": "tiny-random",
                               "engine.flashhead.world_size": world, "engine.drift.enabled": False,
                               "supervisor.init_timeout_s": 60.0, "supervisor.heartbeat_timeout_s": 30.0})
    launch = WorkerLaunch.from_config(cfg, subscribers=1)
    sub = FrameSubscriber(launch.frames, hwm_chunks=64)
    sup = Supervisor(cfg.supervisor, launch, sample_rate=16000)
    sup.start()
    try:
        spec = sup.wait_ready(90)
        sup.client.start_session("s", seed=0)
        pcm = (0.3 * np.random.default_rng(0).standard_normal(spec.samples_per_chunk * (n + 2))).astype(np.float32)
        sup.client.push_audio(pcm)
        chunks: list[FrameChunk] = []
        end = time.monotonic() + 60
        while len(chunks) < n and time.monotonic() < end:
            item = sub.recv(timeout_ms=200)
            if isinstance(item, FrameChunk):
                chunks.append(item)
        assert len(chunks) == n, f"got {len(chunks)} of {n} chunks"
        return chunks, sup.world_size, launch
    finally:
        sup.close(5)
        sub.close()


def test_a_flashhead_group_of_two_equals_one_process() -> None:
    pytest.importorskip("torch")
    with short_tmp() as root:
        one, w1, launch1 = _run(root / "one", 1)
        two, w2, launch2 = _run(root / "two", 2)
    assert (w1, w2) == (1, 2) and launch1.ranks == 1
    assert launch2.ranks == 2 and "--nproc_per_node=2" in launch2.argv
    worst = 0
    for a, b in zip(one, two):
        assert a.first_frame == b.first_frame and np.array_equal(a.audio, b.audio)
        worst = max(worst, int(np.abs(a.frames.astype(int) - b.frames.astype(int)).max()))
    assert worst <= 1, f"frames of the 2-rank FlashHead group differ from one process's by up to {worst}/255"
