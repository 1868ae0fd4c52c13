"""The engine worker: one process hosting any engine behind the ctrl / events / frames sockets.

Started by :class:`soulx_live.supervisor.Supervisor` as ``python -m soulx_live.worker`` with one JSON
document on stdin: ``{"config": <SoulxConfig as JSON>, "options": <WorkerOptions>}`` (stdin, not argv,
so the configuration never shows in ``ps``). A fresh interpreter, not a fork: the daemon has threads
and ZeroMQ contexts that must not be forked, and the engine's heavy imports (torch, CUDA) happen here
only, so the daemon process never imports CUDA.

Exit codes: 0 after Shutdown/SIGTERM, 1 crash, 3 the engine cannot be built as configured (restarting
will not help), 4 the parent process died. ``SIGUSR1`` dumps every thread's stack to stderr (the
supervisor does it before killing a hung worker).

The loop itself is :class:`soulx_live.engine_worker.EngineWorker`.
"""
from __future__ import annotations

import ctypes
import dataclasses
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq

from engine.interface import (
    AvatarEngine,
)
from soulx_live import protocol as p
from soulx_live.bus import FramePublisher
from soulx_live.config import SoulxConfig
from soulx_live.engine_worker import EXIT_CONFIG, EXIT_CRASH, EXIT_PARENT_GONE, EngineWorker, WorkerOptions

__all__ = ["main", "run_engine_process"]

log = logging.getLogger(__name__)

PARENT_POLL_S = 0.5


# --- process entry --------------------------------------------------------------------------------


def run_engine_process(config: SoulxConfig | Mapping[str, Any] | str, options: WorkerOptions) -> int:
    """The worker process body: title, logging, parent watch, engine, loop. Returns the exit code.

    ``config`` is a SoulxConfig, its JSON/dict form, or YAML text. Any exception that escapes is sent
    as a fatal EngineError (``kind`` "config" when the engine cannot be built as configured, else
    "crash") before returning.
    """
    cfg = _load_config(config)
    name = f"engine-g{options.generation}"
    _set_process_title(f"soulx-{name}")
    from soulx_live.log import setup_logging

    setup_logging(cfg.logging.level, cfg.logging.format, process_name=name)
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if options.parent_pid:
        threading.Thread(target=_watch_parent, args=(options.parent_pid,), name="parent-watch", daemon=True).start()
    ctx = zmq.Context()
    events = ctx.socket(zmq.PUSH)
    events.setsockopt(zmq.LINGER, 2000)  # the last EngineError/ShutdownAck must get out
    events.connect(options.events)
    try:
        return _serve(cfg, options, ctx, events)
    except _ConfigProblem as exc:
        log.error("the engine cannot start: %s", exc)
        events.send(p.encode(p.EngineError(kind="config", message=str(exc), fatal=True)))
        return EXIT_CONFIG
    except Exception as exc:  # the worker reports its own death, whatever it was
        log.exception("engine worker crashed")
        events.send(p.encode(p.EngineError(kind="crash", message=f"{type(exc).__name__}: {exc}", fatal=True)))
        return EXIT_CRASH
    finally:
        events.close()
        ctx.term()


class _ConfigProblem(RuntimeError):
    pass


def _serve(cfg: SoulxConfig, options: WorkerOptions, ctx: zmq.Context, events: zmq.Socket) -> int:
    from soulx_live.errors import DaemonError
    from soulx_live.factory.engine import build_engine
    from soulx_live.worker_group import MirroredEngine, follow, group_rank

    try:
        engine = build_engine(cfg)
    except (DaemonError, ValueError) as exc:
        raise _ConfigProblem(str(exc)) from exc
    rank, world = group_rank()
    if rank > 0:
        # a torchrun group: only rank 0 talks ZeroMQ, and the person matte (made once, published with rank 0's
        # frames) is not the followers' to make: they only keep the collectives in step
        from engine.matting.stage import AlphaEngine

        return follow(engine.inner if isinstance(engine, AlphaEngine) else engine)
    if world > 1:
        engine = MirroredEngine(engine)
        try:
            return _serve_engine(cfg, options, ctx, events, engine, world)
        finally:
            engine.stop_followers()
    return _serve_engine(cfg, options, ctx, events, engine, world)


def _serve_engine(cfg: SoulxConfig, options: WorkerOptions, ctx: zmq.Context, events: zmq.Socket,
                  engine: AvatarEngine, world: int) -> int:
    ctrl = ctx.socket(zmq.PULL)
    ctrl.setsockopt(zmq.LINGER, 0)
    ctrl.connect(options.ctrl)
    publisher = FramePublisher(options.frames, hwm_chunks=options.hwm_chunks, context=ctx)
    try:
        if options.subscribers and not publisher.wait_for_subscribers(options.subscribers, options.subscribers_wait_s):
            log.warning("only %d of %d bus subscribers connected within %.1f s", publisher.subscribers,
                        options.subscribers, options.subscribers_wait_s)
        worker = EngineWorker(engine, options, ctrl, events, publisher, model=cfg.engine.kind)
        worker.world_size = world
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: worker.terminate.set())
        try:
            return worker.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        publisher.close()
        ctrl.close()


def _load_config(config: SoulxConfig | Mapping[str, Any] | str) -> SoulxConfig:
    if isinstance(config, SoulxConfig):
        return config
    if isinstance(config, str):
        import yaml

        config = yaml.safe_load(config) or {}
    return SoulxConfig.model_validate(config)


WORKER_DOC_ENV = "SOULX_WORKER_DOC"


def _watch_parent(parent_pid: int) -> None:
    """Exit at once when the parent dies (we were re-parented): nobody would ever stop this process."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    log.error("parent process %d is gone; exiting", parent_pid)
    os._exit(EXIT_PARENT_GONE)


def _set_process_title(title: str) -> None:
    """``setproctitle`` when installed, else the Linux thread name (what ``ps -o comm``/top show)."""
    try:
        import setproctitle  # type: ignore[import-not-found]

        setproctitle.setproctitle(title)
        return
    except ImportError:
        pass
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None)
            libc.prctl(15, title.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        except (OSError, AttributeError):
            log.debug("could not set the process title")


def main() -> int:
    """``python -m soulx_live.worker``: read {"config": ..., "options": ...} JSON from stdin, or from the file named
    by ``SOULX_WORKER_DOC`` (a torchrun group: its ranks cannot share one stdin)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when the engine stops
    path = os.environ.get(WORKER_DOC_ENV)
    doc = json.loads(Path(path).read_text() if path else sys.stdin.read())
    options = WorkerOptions.from_json(doc["options"])
    if "LOCAL_RANK" in os.environ:  # under torchrun our parent is its agent: watch that one, not the daemon
        options = dataclasses.replace(options, parent_pid=os.getppid())
    return run_engine_process(doc["config"], options)


if __name__ == "__main__":
    sys.exit(main())

