"""How the engine worker is launched: one process (``python -m soulx_live.worker``) or a torchrun group, its
sockets and options, and the heartbeat interval both sides agree on."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from soulx_live.config import SoulxConfig, SupervisorConfig
from soulx_live.engine_worker import WorkerOptions

__all__ = ["DEFAULT_ARGV", "WorkerLaunch", "heartbeat_interval_s"]

DEFAULT_ARGV = (sys.executable, "-m", "soulx_live.worker")


@dataclass(frozen=True)
class WorkerLaunch:
    """How to start a worker: the command, the configuration it gets on stdin and the socket addresses."""

    config: Mapping[str, Any]  # SoulxConfig.model_dump(mode="json")
    ctrl: str
    events: str
    frames: str
    argv: tuple[str, ...] = DEFAULT_ARGV
    env: Mapping[str, str] | None = None  # None: inherit
    subscribers: int = 0  # the worker waits (briefly) for this many bus subscribers before Ready
    ranks: int = 1  # > 1: argv starts a torchrun group; the configuration goes through a 0600 file, not stdin
    max_backlog_s: float = 2.0
    hwm_chunks: int = 2
    pace_lead_chunks: int = 0  # live input: the worker publishes at most this far ahead of real time (0: off)

    @classmethod
    def from_config(cls, config: SoulxConfig, *, subscribers: int = 0, argv: tuple[str, ...] = DEFAULT_ARGV) -> WorkerLaunch:
        """Addresses from ``config.bus`` (``runtime_dir.endpoint``), the config serialised for the child. A
        FlashTalk engine with ``world_size`` N > 1 runs as ``torchrun --nproc_per_node=N`` (rank 0 talks ZeroMQ)."""
        from soulx_live.runtime_dir import endpoint

        kind = config.engine.kind
        ranks = getattr(config.engine, kind).world_size if kind in ("flashtalk", "flashhead") else 1
        if ranks > 1 and argv == DEFAULT_ARGV:
            argv = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                    f"--nproc_per_node={ranks}", "-m", "soulx_live.worker")
        # live input arrives in real time; only a replayed backlog could outrun sinks that play in real time, so
        # the worker keeps what the bus queues hold (publisher + subscriber) ahead of the clock, no more
        live = config.audio.source not in ("file", "script") or config.audio.realtime
        return cls(config=config.model_dump(mode="json"), ctrl=endpoint("ctrl", config.bus),
                   events=endpoint("events", config.bus), frames=endpoint("frames", config.bus), argv=argv,
                   subscribers=subscribers, hwm_chunks=config.bus.hwm_chunks, ranks=ranks,
                   pace_lead_chunks=config.bus.hwm_chunks + 1 if live else 0)

    def options(self, generation: int, cfg: SupervisorConfig, *, epoch: int = 0) -> WorkerOptions:
        return WorkerOptions(ctrl=self.ctrl, events=self.events, frames=self.frames, parent_pid=os.getpid(),
                             generation=generation, heartbeat_interval_s=heartbeat_interval_s(cfg),
                             max_backlog_s=self.max_backlog_s, hwm_chunks=self.hwm_chunks, subscribers=self.subscribers,
                             drain_timeout_s=cfg.shutdown_grace_s, epoch=epoch, pace_lead_chunks=self.pace_lead_chunks)


def heartbeat_interval_s(cfg: SupervisorConfig) -> float:
    """How often an idle worker heartbeats: five chances per timeout, and at least once a second (status)."""
    return min(1.0, cfg.heartbeat_timeout_s / 5)
