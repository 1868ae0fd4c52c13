"""Run the engine worker as a supervised child process: handshake, progress watchdog, restarts.

Why a plain subprocess (``python -m soulx_live.worker``, JSON on stdin) and not multiprocessing:
the worker is a fresh interpreter that inherits no daemon threads, sockets or (later) CUDA state;
nothing is pickled and the daemon's ``__main__`` is not re-imported; the child gets its own process
group (``start_new_session``) so a multi-rank launcher and all its ranks die together, and a terminal
Ctrl-C reaches only the daemon, which then stops the engine in stages. The same command runs by hand.

One thread (``supervisor``) owns the child, the ``ctrl`` PUSH and the ``events`` PULL sockets (both
bound here, so they outlive worker restarts). It

- spawns the worker and waits for ``Ready`` at most ``init_timeout_s``;
- watches the exit code, the heartbeat age (``heartbeat_timeout_s``; heartbeats come from the
  worker's generation loop, so their age measures progress, not mere existence) and ``chunks_done``
  (must advance within ``heartbeat_timeout_s`` while the worker reports queued audio); until the worker's
  first chunk (session start, warm-up) the limit is ``startup_timeout_s`` instead;
- says "stalled" (and "running" again) while a warm worker misses two heartbeats, long before it is replaced;
- calls each ``health_checks`` function with the worker pid about once per second while it is ready
  (e.g. ``MemoryWatch.check``); a returned string is a reason to restart it;
- on a failure dumps the worker's stacks (SIGUSR1), kills its process group and restarts it after
  ``restart_backoff_s[i]`` (the first at once), at most ``max_restarts`` times within ``restart_window_s``; beyond that,
  or for a configuration error (restarting cannot help), the state becomes ``failed``;
- closes in stages: Shutdown -> wait for ShutdownAck (``shutdown_grace_s``) -> SIGTERM -> SIGKILL.

The audio client lives in :mod:`soulx_live.engine_client`, the launch command in :mod:`soulx_live.worker_launch`.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import zmq

from engine.interface import ChunkSpec
from soulx_live import protocol as p
from soulx_live.config import SupervisorConfig
from soulx_live.engine_client import EngineClient
from soulx_live.engine_worker import EXIT_CONFIG
from soulx_live.log_safe import RateLimitedLog
from soulx_live.protocol import EngineState
from soulx_live.worker_launch import WorkerLaunch, heartbeat_interval_s

__all__ = ["HealthCheck", "Supervisor", "SupervisorError", "SupervisorStats"]

log = logging.getLogger(__name__)

POLL_S = 0.01
TERM_WAIT_S = 2.0  # after SIGTERM, before SIGKILL
UNRESPONSIVE_S = 3.0  # no heartbeat for this long at close time (they come at least every second): kill at once
EXIT_WAIT_S = 3.0  # after ShutdownAck, for the worker to close its sockets and exit
CTRL_HWM = 64  # control messages ZeroMQ holds for the worker before sends fail (then EngineClient queues)

HEALTH_INTERVAL_S = 1.0  # health checks run about this often while the worker is ready

StateCallback = Callable[[EngineState, str], None]
HealthCheck = Callable[[int], "str | None"]


class SupervisorError(RuntimeError):
    """The engine worker could not be started or kept running; the message says why and what to change."""


# --- the supervisor -------------------------------------------------------------------------------


@dataclass
class _Child:
    """One worker process and what the watchdog knows about it."""

    proc: subprocess.Popen[bytes]
    generation: int
    spawned: float
    ready: bool = False
    warm: bool = False  # it has made a chunk: its start-up (session start, warm-up) is over
    engine_id: str = ""
    last_heartbeat: float = 0.0
    step_s: float = 0.0  # its latest chunk's compute time
    chunks_done: int = 0
    progress_at: float = 0.0  # when chunks_done last advanced (or work appeared)
    health_at: float = 0.0  # when the health checks last ran
    queue_depth: int = 0
    acked: bool = False
    fatal: p.EngineError | None = None


@dataclass
class SupervisorStats:
    restarts: int = 0
    chunks_done: int = 0  # of the current worker
    errors: deque[p.EngineError] = field(default_factory=lambda: deque(maxlen=50))
    exit_codes: list[int] = field(default_factory=list)


class Supervisor:
    """Keeps one engine worker running. ``start()`` returns at once; ``wait_ready()`` blocks for Ready.

    Use from one controlling thread: ``start``, ``wait_ready``, ``close``. ``client`` may be used from
    any thread. ``state`` and ``stats`` are readable at any time.
    """

    def __init__(self, cfg: SupervisorConfig, launch: WorkerLaunch, *, client: EngineClient | None = None,
                 on_state: StateCallback | None = None, sample_rate: int = 16000,
                 health_checks: Sequence[HealthCheck] = (),
                 on_progress: Callable[[p.Heartbeat], None] | None = None) -> None:
        self.cfg = cfg
        self.launch = launch
        self.client = client or EngineClient(sample_rate)
        self.state: EngineState = "stopped"
        self.detail = ""
        self.spec: ChunkSpec | None = None
        self.stats = SupervisorStats()
        self._on_state = on_state
        self.health_checks = tuple(health_checks)
        self._on_progress = on_progress  # called (supervisor thread) with each heartbeat that reports new chunks
        self._bad_events = RateLimitedLog(log)  # messages on the events socket that were not the worker's
        self._child: _Child | None = None
        self._restart_times: deque[float] = deque()
        self._generation = 0
        self._closing = threading.Event()
        self._grace_s = cfg.shutdown_grace_s
        self._ready_event = threading.Event()  # set on the first Ready or on failure
        self._thread: threading.Thread | None = None
        self._doc_path: str | None = None  # a worker group's configuration file (ranks > 1)
        self.world_size = 0  # ranks of the ready worker (its Ready says)

    # -- public ----------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.proc.pid if child is not None else None

    def start(self) -> None:
        if self._thread is not None:
            raise SupervisorError("Supervisor.start() called twice")
        self._set_state("starting", "spawning the engine worker")
        self._thread = threading.Thread(target=self._main, name="supervisor", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout_s: float | None = None) -> ChunkSpec:
        """Block until the first worker is Ready; its chunk spec. Raises SupervisorError if it failed."""
        if not self._ready_event.wait(timeout_s) or self.spec is None:
            raise SupervisorError(f"the engine worker is not ready ({self.state}: {self.detail})")
        return self.spec

    def kill_now(self) -> None:
        """SIGKILL the worker's whole process group at once (any thread): the last resort when the daemon must exit
        and the staged close has not finished, so no process of the group outlives the daemon (a stopped or hung
        worker would otherwise stay behind, re-parented, forever)."""
        child = self._child
        if child is not None:
            _signal_group(child.proc, signal.SIGKILL)

    def close(self, grace_s: float | None = None) -> None:
        """Staged stop of the worker (Shutdown -> ShutdownAck -> SIGTERM -> SIGKILL); joins the thread."""
        if grace_s is not None:
            self._grace_s = grace_s
        self._closing.set()
        if self._thread is not None:
            self._thread.join(self._grace_s + EXIT_WAIT_S + 2 * TERM_WAIT_S + 5.0)

    # -- the supervisor thread -------------------------------------------------------------------

    def _main(self) -> None:
        ctx = zmq.Context.instance()
        events, ctrl = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        ctrl.setsockopt(zmq.SNDHWM, CTRL_HWM)
        for sock in (events, ctrl):
            sock.setsockopt(zmq.LINGER, 0)
        try:
            events.bind(self.launch.events)
            ctrl.bind(self.launch.ctrl)
            self._loop(events, ctrl)
        except Exception as exc:  # the supervisor must never die silently
            log.exception("supervisor failed")
            self._set_state("failed", f"supervisor error: {exc}")
        finally:
            self._kill_child()
            self._ready_event.set()
            events.close()
            ctrl.close()
            if self._doc_path is not None:
                try:
                    os.unlink(self._doc_path)
                except OSError:
                    pass

    def _loop(self, events: zmq.Socket, ctrl: zmq.Socket) -> None:
        while not self._closing.is_set() and self.state != "failed":
            if self._child is None:
                self._spawn()
            self._pump(events, POLL_S)
            child = self._child
            if child is not None and child.ready:
                self.client.flush(ctrl)
                self._watch_stall(child)
            problem = self._problem()
            if problem is not None:
                self._restart(problem, events)
        if self._closing.is_set() and self.state != "failed":
            self._staged_close(events, ctrl)

    def _spawn(self) -> None:
        options = self.launch.options(self._generation, self.cfg, epoch=self.client.epoch)
        doc = json.dumps({"config": dict(self.launch.config), "options": options.to_json()}).encode()
        env = dict(os.environ if self.launch.env is None else self.launch.env)
        if self.launch.ranks > 1:  # every rank reads the same file (one stdin cannot feed them all)
            env["SOULX_WORKER_DOC"] = self._write_doc(doc)
        proc = subprocess.Popen(list(self.launch.argv), stdin=subprocess.PIPE, env=env, start_new_session=True)
        try:
            assert proc.stdin is not None
            if self.launch.ranks == 1:
                proc.stdin.write(doc)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; the exit check reports it
        now = time.monotonic()
        self._child = _Child(proc, self._generation, now, last_heartbeat=now, progress_at=now)
        log.info("engine worker generation %d started (pid %d)", self._generation, proc.pid)

    def _write_doc(self, doc: bytes) -> str:
        """The worker group's configuration in a private (0600) file beside the sockets; replaced per spawn."""
        import tempfile

        fd, path = tempfile.mkstemp(prefix="worker-", suffix=".json")
        with os.fdopen(fd, "wb") as f:
            f.write(doc)
        os.chmod(path, 0o600)
        if self._doc_path is not None:
            try:
                os.unlink(self._doc_path)
            except OSError:
                pass
        self._doc_path = path
        return path

    def _pump(self, events: zmq.Socket, timeout_s: float) -> None:
        if not events.poll(int(timeout_s * 1000), zmq.POLLIN):
            return
        while True:
            try:
                frames = events.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 1:
                self._bad_events.warning("frames", "events socket: skipped a %d-frame message (the worker sends one)",
                                         len(frames))
                continue
            try:
                msg = p.decode(frames[0])
            except p.ProtocolError as exc:
                self._bad_events.warning(exc.reason, "events socket: skipped a bad message: %s", exc)
                continue
            try:
                self._on_event(msg)
            except Exception:  # whatever arrives, the supervision goes on
                log.exception("events socket: handling %s failed", type(msg).__name__)

    def _pump_stale(self, events: zmq.Socket) -> None:
        """Discard what a dead worker left on the events socket (its last heartbeats must not count
        for the next one)."""
        while events.poll(0, zmq.POLLIN):
            events.recv()

    def _on_event(self, msg: p.Message) -> None:
        child = self._child
        if child is None:
            return
        now = time.monotonic()
        if isinstance(msg, p.Ready):
            child.ready, child.last_heartbeat, child.progress_at, child.engine_id = True, now, now, msg.engine_id
            self.spec = msg.spec.to_spec()
            self.world_size = msg.world_size
            log.info("engine worker ready: %s (%s) in %.1f s", msg.engine_id, msg.model, now - child.spawned)
            self.client.on_ready()
            self._set_state("running", msg.engine_id)
            self._ready_event.set()
        elif isinstance(msg, p.Heartbeat):
            child.last_heartbeat = now
            if msg.chunks_done != child.chunks_done and self._on_progress is not None:
                self._on_progress(msg)  # a chunk was made since the last heartbeat: its step time for metrics
            if msg.chunks_done != child.chunks_done or child.queue_depth == 0:
                child.progress_at = now  # advancing, or idle until now: the stall clock starts afresh
            child.chunks_done, child.queue_depth = msg.chunks_done, msg.queue_depth
            child.warm = child.warm or msg.chunks_done > 0
            child.step_s = msg.last_step_ms / 1000.0
            self.stats.chunks_done = msg.chunks_done
            self.client.on_progress(msg)
        elif isinstance(msg, p.EngineError):
            self.stats.errors.append(msg)
            (log.error if msg.fatal else log.warning)("engine error (%s): %s", msg.kind, msg.message)
            if msg.fatal:
                child.fatal = msg
        elif isinstance(msg, p.ShutdownAck):
            child.acked = True

    def _problem(self) -> str | None:
        """Why the current worker must be replaced, or None while it is healthy."""
        child = self._child
        if child is None:
            return None
        now = time.monotonic()
        code = child.proc.poll()
        if code is not None:
            why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            return f"engine worker {why}"
        if not child.ready:
            if now - child.spawned > self.cfg.init_timeout_s:
                return (f"engine worker sent no Ready within supervisor.init_timeout_s={self.cfg.init_timeout_s:g} s "
                        "(raise it if the engine loads slowly)")
            return None
        timeout, name = self._timeout(child)
        if now - child.last_heartbeat > timeout:
            return f"engine worker sent no heartbeat for {now - child.last_heartbeat:.1f} s (hung; {name}={timeout:g} s)"
        if child.queue_depth > 0 and now - child.progress_at > timeout:
            return (f"engine worker made no chunk for {now - child.progress_at:.1f} s with "
                    f"{child.queue_depth} chunks of audio waiting (stalled; {name}={timeout:g} s)")
        if self.health_checks and now - child.health_at >= HEALTH_INTERVAL_S:
            child.health_at = now
            return self._health(child.proc.pid)
        return None

    def _timeout(self, child: _Child) -> tuple[float, str]:
        """The watchdog's limit for ``child`` and the setting it comes from: until its first chunk the start-up
        (StartSession, warm-up) may keep its loop busy far longer than any later chunk."""
        if child.warm:
            return self.cfg.heartbeat_timeout_s, "supervisor.heartbeat_timeout_s"
        return max(self.cfg.startup_timeout_s, self.cfg.heartbeat_timeout_s), "supervisor.startup_timeout_s"

    def stall_after_s(self, child: _Child) -> float:
        """Silence after which a warm worker is reported "stalled": two missed heartbeats, or two chunk times
        for an engine whose chunks take longer than a heartbeat interval (it heartbeats once per chunk)."""
        return max(2 * heartbeat_interval_s(self.cfg), 2 * child.step_s)

    def _watch_stall(self, child: _Child) -> None:
        """Say "stalled" while a warm worker is silent (or makes no chunk with audio waiting) for longer than
        ``stall_after_s``, well before the watchdog replaces it; "running" again when it recovers."""
        if not child.warm or self.state not in ("running", "stalled"):
            return
        now, limit = time.monotonic(), self.stall_after_s(child)
        silent, stuck = now - child.last_heartbeat, now - child.progress_at
        if silent > limit:
            why = f"no heartbeat for {silent:.1f} s"
        elif child.queue_depth > 0 and stuck > limit:
            why = f"no chunk for {stuck:.1f} s with {child.queue_depth} chunks of audio waiting"
        else:
            if self.state == "stalled":
                self._set_state("running", child.engine_id)
            return
        if self.state == "running":
            timeout, name = self._timeout(child)
            self._set_state("stalled", f"{why}; replaced after {name}={timeout:g} s")

    def _health(self, pid: int) -> str | None:
        """The first reason a health check gives to replace worker ``pid`` (a failing check is logged, not fatal)."""
        for check in self.health_checks:
            try:
                reason = check(pid)
            except Exception:  # a broken check must not stop the supervision
                log.exception("health check %r failed", check)
                continue
            if reason:
                return str(reason)
        return None

    def _restart(self, reason: str, events: zmq.Socket) -> None:
        child = self._child
        assert child is not None
        self._pump(events, 0)  # its last words (a fatal EngineError) name the cause
        if child.fatal is not None and child.fatal.message not in reason:
            reason += f" ({child.fatal.kind}: {child.fatal.message})"
        log.error("%s", reason)
        self._kill_child(dump_stacks=child.proc.poll() is None)
        self._pump_stale(events)
        self.client.on_worker_gone()  # what it had not rendered goes to its successor first
        if (child.fatal is not None and child.fatal.kind == "config") or child.proc.returncode == EXIT_CONFIG:
            self._set_state("failed", reason)
            return
        now = time.monotonic()
        while self._restart_times and now - self._restart_times[0] > self.cfg.restart_window_s:
            self._restart_times.popleft()
        if len(self._restart_times) >= self.cfg.max_restarts:
            self._set_state("failed", f"{reason}; restart budget exhausted ({self.cfg.max_restarts} restarts within "
                                      f"supervisor.restart_window_s={self.cfg.restart_window_s:g} s)")
            return
        backoff = self.cfg.restart_backoff_s
        delay = backoff[min(len(self._restart_times), len(backoff) - 1)] if backoff else 0.0
        self._restart_times.append(now)
        self._generation += 1
        self.stats.restarts += 1
        self._set_state("restarting", f"{reason}; restart {self.stats.restarts} in {delay:g} s")
        self._closing.wait(delay)

    def _staged_close(self, events: zmq.Socket, ctrl: zmq.Socket) -> None:
        child = self._child
        silent_s = time.monotonic() - child.last_heartbeat if child is not None else 0.0
        if child is not None and child.proc.poll() is None and silent_s > UNRESPONSIVE_S:
            # a hung or stopped worker will neither acknowledge Shutdown nor handle SIGTERM: do not wait for it
            log.warning("engine worker silent for %.1f s; killing it instead of waiting for a clean shutdown", silent_s)
            self._kill_child(dump_stacks=True)
        elif child is not None and child.proc.poll() is None and child.ready:
            self.client.flush(ctrl)
            try:
                ctrl.send(p.encode(p.Shutdown(reason="daemon stopping")), flags=zmq.NOBLOCK)
                deadline = time.monotonic() + self._grace_s
                while not child.acked and child.proc.poll() is None and time.monotonic() < deadline:
                    self._pump(events, POLL_S)
                if not child.acked:
                    log.warning("engine worker did not acknowledge Shutdown within %.1f s (supervisor.shutdown_grace_s)",
                                self._grace_s)
                else:
                    _wait(child.proc, EXIT_WAIT_S)
            except zmq.Again:
                log.warning("engine worker is not reading its control socket; terminating it")
        self._kill_child()
        self._set_state("stopped", "closed")

    def _kill_child(self, *, dump_stacks: bool = False) -> None:
        """Stop the worker's process group: SIGTERM, then SIGKILL after ``TERM_WAIT_S``; with
        ``dump_stacks`` (a hung worker) SIGUSR1 first so its stacks reach the log, then SIGKILL."""
        child = self._child
        if child is None:
            return
        proc = child.proc
        if proc.poll() is None:
            if dump_stacks:
                _signal_group(proc, signal.SIGUSR1)
                time.sleep(0.2)  # faulthandler writes the stacks
            else:
                _signal_group(proc, signal.SIGTERM)
                if not _wait(proc, TERM_WAIT_S):
                    log.warning("engine worker ignored SIGTERM for %.1f s; killing it", TERM_WAIT_S)
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
                _wait(proc, TERM_WAIT_S)
        _signal_group(proc, signal.SIGKILL)  # whatever the worker left in its group (launcher ranks)
        self.stats.exit_codes.append(proc.returncode if proc.returncode is not None else -9)
        self._child = None

    def _set_state(self, state: EngineState, detail: str) -> None:
        self.state, self.detail = state, detail
        log.info("engine %s: %s", state, detail)
        if state == "failed":
            self._ready_event.set()
        if self._on_state is not None:
            try:
                self._on_state(state, detail)
            except Exception:  # a broken callback must not stop the supervision
                log.exception("on_state callback failed")


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    try:
        proc.wait(timeout_s)
        return True
    except subprocess.TimeoutExpired:
        return False
