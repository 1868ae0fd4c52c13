"""The engine worker as a torchrun group: rank 0 alone talks ZeroMQ, every other rank mirrors its session.

FlashTalk splits each chunk across GPUs (sequence parallelism), so every rank must run the same session calls in
the same order: the DiT's collectives then line up. Rank 0 runs the normal :class:`~soulx_live.engine_worker.EngineWorker`
with its engine wrapped in :class:`MirroredEngine`, which broadcasts each session call (start, audio, next chunk,
reset) to the group before running it locally; ranks > 0 run :func:`follow`, which replays them. Audio windows
thus reach every rank by broadcast, and only rank 0 publishes frames. A rank that dies takes the group down
(torchrun stops the others), and the supervisor restarts the whole group.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from engine.interface import AvatarEngine, AvatarSession, FrameChunk, SessionRequest
from engine.parallel.ranks import torchrun_rank as group_rank  # one definition of the rank, in the engine

__all__ = ["MirroredEngine", "MirroredSession", "follow", "group_rank"]

log = logging.getLogger(__name__)


def _broadcast(op: tuple[Any, ...] | None) -> tuple[Any, ...]:
    import torch.distributed as dist

    box = [op]
    dist.broadcast_object_list(box, src=0)
    assert box[0] is not None
    return box[0]


class MirroredSession:
    """Rank 0's session: every state-changing call is broadcast to the followers first."""

    def __init__(self, session: AvatarSession) -> None:
        self._session = session
        self.session_id = session.session_id

    def push_audio(self, pcm: np.ndarray) -> None:
        pcm = np.ascontiguousarray(pcm, dtype=np.float32)
        _broadcast(("push", pcm))
        self._session.push_audio(pcm)

    def chunks_ready(self) -> int:
        return self._session.chunks_ready()  # same pushes on every rank: the same answer, no traffic

    def next_chunk(self) -> FrameChunk:
        _broadcast(("next",))
        return self._session.next_chunk()

    def reset(self) -> None:
        _broadcast(("reset",))
        self._session.reset()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)  # read-only extras (stats, frame_index)


class MirroredEngine:
    """Rank 0's engine: ``start_session`` is broadcast, and the session it returns is mirrored."""

    def __init__(self, engine: AvatarEngine) -> None:
        self._engine = engine
        self.name = engine.name
        self.spec = engine.spec

    def start_session(self, request: SessionRequest) -> MirroredSession:
        _broadcast(("start", request))
        return MirroredSession(self._engine.start_session(request))

    def stop_followers(self) -> None:
        _broadcast(("stop",))


def follow(engine: AvatarEngine) -> int:
    """Ranks > 0: replay rank 0's session calls until it says stop. Returns the exit code."""
    session: AvatarSession | None = None
    while True:
        op = _broadcast(None)
        kind = op[0]
        if kind == "stop":
            return 0
        if kind == "start":
            session = engine.start_session(op[1])
        elif session is None:
            raise RuntimeError(f"rank {group_rank()[0]}: {kind!r} before any session started")
        elif kind == "push":
            session.push_audio(op[1])
        elif kind == "next":
            session.next_chunk()  # the frames are rank 0's to publish; the collectives need us in step
        elif kind == "reset":
            session.reset()
        else:
            raise RuntimeError(f"unknown group operation {kind!r}")
