"""Drift correction in a 2-rank group (gloo, CPU, the tiny-random preset with its DiT split by Ulysses).

Regenerating a drifted chunk runs the DiT again, and the DiT is full of collectives: if one rank regenerates and
the other does not, their collectives stop lining up. The test injects a colour drift (as tests/engine/test_drift.py
does) on both ranks and gives them different deadlines through the session's ``deadline`` attribute -- rank 0's
clock says there is time to regenerate, rank 1's says there is none -- which is what two ranks' wall clocks can
say of the same chunk. Rank 0 decides for the group (``engine.parallel.decide``): both ranks regenerate and
emit the same frames, in bounded time. The control runs the old rule (each rank on its own clock): the group
does not finish and the ranks' frames part.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))

from test_drift import inject_colour_shift, speech

import engine.flashtalk
from engine.build import build_tiny_engine
from engine.drift import DriftSettings, RegenDeadline
from engine.interface import SessionRequest
from engine.parallel.decide import rank0_decides
from engine.parallel.mesh import destroy_parallel, init_parallel
from engine.parallel.usp import apply_sequence_parallel
from engine.tiny import TINY_DIT

WORLD = 2
CLEAN, AFTER = 2, 2  # chunks before the injected drift, and from the drifted chunk on


def _each_rank_decides(flags: Any, group: Any = None) -> tuple[bool, ...]:
    """The behaviour before the fix: every rank acts on its own verdict and its own clock."""
    return tuple(bool(flag) for flag in flags)


def _worker(rank: int, init_file: str, out_dir: str, decide_once: bool, timeout_s: float) -> None:
    torch.set_num_threads(1)
    if not decide_once:
        engine.flashtalk.rank0_decides = _each_rank_decides  # type: ignore[attr-defined]
    out = Path(out_dir) / f"rank{rank}.pt"
    ctx = init_parallel(WORLD, rank, "gloo", f"file://{init_file}", timeout_s=timeout_s, num_heads=TINY_DIT.num_heads)
    try:
        eng = build_tiny_engine(drift=DriftSettings(regenerate_deadline="always"))
        eng.cfg = dataclasses.replace(eng.cfg, color_correction_strength=0.0)  # as test_drift's colour case
        apply_sequence_parallel(eng.models.dit.transformer, ctx)
        session = eng.start_session(SessionRequest("group", seed=3))
        session.push_audio(speech((CLEAN + AFTER) * eng.spec.samples_per_chunk / 16000 + 0.01, seed=3))
        frames = [session.next_chunk().frames for _ in range(CLEAN)]
        inject_colour_shift(eng, session)
        # the thin hook: the two ranks' clocks disagree about the drifted chunk
        session.deadline = RegenDeadline(realtime=False) if rank == 0 else RegenDeadline(realtime=True, budget=1e-9)
        frames += [session.next_chunk().frames for _ in range(AFTER)]
        stats = session.stats
        torch.save({"frames": np.stack(frames), "corrections": stats.corrections, "regenerated": stats.regenerated,
                    "skipped": stats.regenerate_skipped}, out)
    finally:
        destroy_parallel(ctx)


def _run_group(folder: Path, *, decide_once: bool, timeout_s: float, wait_s: float) -> tuple[list[dict | None], float, str]:
    """Spawn the ranks, wait at most ``wait_s``, kill what is left: each rank's result (None: none), the time
    taken and the last line of a rank's failure ("" when none failed)."""
    start = time.monotonic()
    failure = ""
    procs = mp.start_processes(_worker, args=(str(folder / "rendezvous"), str(folder), decide_once, timeout_s),
                               nprocs=WORLD, join=False, start_method="spawn")
    try:
        while not procs.join(timeout=max(0.1, wait_s - (time.monotonic() - start))):
            if time.monotonic() - start >= wait_s:
                break
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:  # e.g. a gloo timeout
        failure = str(exc).strip().splitlines()[-1]
    finally:
        for proc in procs.processes:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    elapsed = time.monotonic() - start
    files = [folder / f"rank{rank}.pt" for rank in range(WORLD)]
    return [torch.load(f, weights_only=False) if f.exists() else None for f in files], elapsed, failure


def test_rank0_decides_is_a_no_op_in_one_process() -> None:
    assert rank0_decides((True, False)) == (True, False)


@pytest.mark.timeout(180)
def test_ranks_with_different_deadlines_still_agree(tmp_path: Path) -> None:
    results, elapsed, failure = _run_group(tmp_path, decide_once=True, timeout_s=60.0, wait_s=150.0)
    assert all(r is not None for r in results), f"a rank did not finish within {elapsed:.0f} s: {failure}"
    r0, r1 = results
    assert r0 is not None and r1 is not None
    # both ranks corrected and regenerated the drifted chunk (rank 0's call), though rank 1's deadline said no
    assert (r0["corrections"], r0["regenerated"], r0["skipped"]) == (1, 1, 0)
    assert (r1["corrections"], r1["regenerated"], r1["skipped"]) == (1, 1, 0)
    assert r0["frames"].shape == (CLEAN + AFTER, 4, 64, 48, 3)
    assert np.array_equal(r0["frames"], r1["frames"])
    print(f"2-rank group with disagreeing deadlines: finished in {elapsed:.1f} s, frames identical")


@pytest.mark.timeout(180)
def test_control_each_rank_on_its_own_clock_breaks_the_group(tmp_path: Path) -> None:
    """The old rule, bounded: a short gloo timeout and a kill after the wait. The group must not come through
    whole (a rank stuck or failed in a collective its peer never joined, or ranks emitting different frames)."""
    results, elapsed, failure = _run_group(tmp_path, decide_once=False, timeout_s=10.0, wait_s=60.0)
    finished = [r is not None for r in results]
    parted = all(finished) and not np.array_equal(results[0]["frames"], results[1]["frames"])  # type: ignore[index]
    print(f"old rule: ranks finished {finished}, frames parted {parted}, {elapsed:.1f} s; {failure}")
    # rank 1 skipped the regeneration and finished; rank 0's extra pass paired with rank 1's next chunk, so rank 0
    # was left alone in the last chunk's collectives until the gloo timeout
    assert finished == [False, True] or parted, failure
