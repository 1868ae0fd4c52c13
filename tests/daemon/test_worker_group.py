"""The engine worker as a torchrun group (CPU, gloo, the tiny-random FlashTalk engine): rank 0 alone talks ZeroMQ,
the others mirror its session by broadcast, the DiT is split across them with Ulysses sequence parallelism, the VAE
(``engine.flashtalk.tiny_vae: wan``, a tiny random WanVAE) into bands of rows, and the frames equal the
single-process worker's. A rank killed with SIGKILL brings the group down and the supervisor restarts all of it."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from live_support import live_config, short_tmp

from engine.interface import FrameChunk
from soulx_live.bus import FrameSubscriber
from soulx_live.supervisor import Supervisor
from soulx_live.worker_launch import WorkerLaunch

pytestmark = pytest.mark.timeout(120)


def _config(root: Path, world: int, tiny_vae: str = "patch"):  # type: ignore[no-untyped-def]
    return live_config(root, **{"engine.kind": "flashtalk", "engine.flashtalk.preset": "tiny-random",
                                "engine.flashtalk.world_size": world, "engine.flashtalk.tiny_vae": tiny_vae,
                                "engine.drift.enabled": False,
                                "supervisor.init_timeout_s": 60.0, "supervisor.heartbeat_timeout_s": 30.0,
                                "supervisor.restart_backoff_s": [0.2]})


def _chunks(sub: FrameSubscriber, n: int, timeout_s: float = 60.0) -> list[FrameChunk]:
    out: list[FrameChunk] = []
    end = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < end:
        item = sub.recv(timeout_ms=200)
        if isinstance(item, FrameChunk):
            out.append(item)
    assert len(out) == n, f"got {len(out)} of {n} chunks"
    return out


def _speech(samples: int) -> np.ndarray:
    return (0.3 * np.random.default_rng(0).standard_normal(samples)).astype(np.float32)


def _run(world: int, n: int = 4, tiny_vae: str = "patch") -> tuple[list[FrameChunk], int]:
    with short_tmp() as root:
        cfg = _config(root, world, tiny_vae)
        launch = WorkerLaunch.from_config(cfg, subscribers=1)
        sub = FrameSubscriber(launch.frames, hwm_chunks=64)
        sup = Supervisor(cfg.supervisor, launch, sample_rate=16000)
        sup.start()
        try:
            spec = sup.wait_ready(90)
            sup.client.start_session("s", seed=0)
            sup.client.push_audio(_speech(spec.samples_per_chunk * (n + 2)))
            return _chunks(sub, n), sup.world_size
        finally:
            sup.close(5)
            sub.close()


@pytest.mark.timeout(240)  # two worker launches on a shared CPU: about 75 s here
def test_a_group_of_two_equals_one_process(capfd: pytest.CaptureFixture[str]) -> None:
    """With the Wan VAE, so the group splits the VAE too (the ranks' log lines say so; they inherit our stderr)."""
    one, w1 = _run(1, tiny_vae="wan")
    single_log = capfd.readouterr().err
    two, w2 = _run(2, tiny_vae="wan")
    group_log = capfd.readouterr().err
    assert (w1, w2) == (1, 2)
    assert "parallel VAE" not in single_log
    for rank in range(2):
        assert f"parallel VAE: rank {rank} of 2 holds one band of rows" in group_log
    worst = 0
    for a, b in zip(one, two):
        assert a.first_frame == b.first_frame
        worst = max(worst, int(np.abs(a.frames.astype(int) - b.frames.astype(int)).max()))
        assert np.array_equal(a.audio, b.audio)
    # the split DiT and VAE sum in another order (fp32, ~1e-6 relative): that may flip a uint8 step
    with capfd.disabled():
        print(f"2-rank group (parallel DiT and VAE) vs one process: max |diff| {worst}/255 over {len(one)} chunks")
    assert worst <= 1, f"frames of the 2-rank group differ from one process's by up to {worst}/255"


def test_launch_uses_torchrun_only_for_a_flashtalk_group(tmp_path: Path) -> None:
    assert WorkerLaunch.from_config(_config(tmp_path, 1)).ranks == 1
    group = WorkerLaunch.from_config(_config(tmp_path, 2))
    assert group.ranks == 2 and "torch.distributed.run" in group.argv and "--nproc_per_node=2" in group.argv
    lite = live_config(tmp_path, **{"engine.flashtalk.world_size": 2})
    assert WorkerLaunch.from_config(lite).ranks == 1  # the lite engine has no ranks


def test_killing_a_follower_rank_restarts_the_whole_group() -> None:
    with short_tmp() as root:
        cfg = _config(root, 2)
        launch = WorkerLaunch.from_config(cfg, subscribers=1)
        sub = FrameSubscriber(launch.frames, hwm_chunks=64)
        sup = Supervisor(cfg.supervisor, launch, sample_rate=16000)
        sup.start()
        try:
            spec = sup.wait_ready(90)
            sup.client.start_session("s", seed=0)
            sup.client.push_audio(_speech(spec.samples_per_chunk * 3))
            _chunks(sub, 2)
            launcher = psutil.Process(sup.pid)
            ranks = {int(p.environ().get("RANK", -1)): p for p in launcher.children(recursive=True)
                     if "RANK" in p.environ()}
            assert sorted(ranks) == [0, 1]
            os.kill(ranks[1].pid, signal.SIGKILL)
            end = time.monotonic() + 60
            while sup.stats.restarts < 1 and time.monotonic() < end:
                time.sleep(0.1)
            assert sup.stats.restarts == 1
            sup.wait_ready(60)
            end = time.monotonic() + 60
            while (sup.state != "running" or sup.pid == launcher.pid) and time.monotonic() < end:
                time.sleep(0.1)
            sup.client.push_audio(_speech(spec.samples_per_chunk * 3))
            after = _chunks(sub, 2)
            assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in ranks.values())
            # the restarted group resumes the same session: contiguous frames of the spec's size, not a new timeline
            assert [c.session_id for c in after] == ["s", "s"]
            assert after[1].first_frame == after[0].first_frame + after[0].num_frames
            assert all(c.frames.shape == (spec.frames_per_chunk, spec.height, spec.width, 3) for c in after)
        finally:
            sup.close(5)
            sub.close()
