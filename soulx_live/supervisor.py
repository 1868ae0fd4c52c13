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

:class:`EngineClient` is the thread-safe front the daemon uses to talk to the engine: its calls only
queue messages and the supervisor thread sends them; it keeps the audio a worker has not yet rendered
(``replay_max_s``; beyond it the oldest is dropped and reported), and after every Ready it re-sends the
active StartSession and then that audio first, so the session resumes on a restarted worker where the
dead one stopped. ``EngineClient.interrupt()`` is barge-in: queued audio is
dropped and an Interrupt with the next epoch goes out ahead of any later audio; a restarted worker is
started at the client's current epoch. State changes go to ``on_state(state, detail)``, called from
the supervisor thread.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from engine.interface import ChunkSpec
from soulx_live import protocol as p
from soulx_live.config import SoulxConfig, SupervisorConfig
from soulx_live.log_safe import RateLimitedLog
from soulx_live.protocol import EngineState
from soulx_live.worker import EXIT_CONFIG, WorkerOptions

__all__ = ["EngineClient", "HealthCheck", "Supervisor", "SupervisorError", "SupervisorStats", "WorkerLaunch"]

log = logging.getLogger(__name__)

POLL_S = 0.01
TERM_WAIT_S = 2.0  # after SIGTERM, before SIGKILL
UNRESPONSIVE_S = 3.0  # no heartbeat for this long at close time (they come at least every second): kill at once
EXIT_WAIT_S = 3.0  # after ShutdownAck, for the worker to close its sockets and exit
CTRL_HWM = 64  # control messages ZeroMQ holds for the worker before sends fail (then EngineClient queues)
DEFAULT_ARGV = (sys.executable, "-m", "soulx_live.worker")

HEALTH_INTERVAL_S = 1.0  # health checks run about this often while the worker is ready
MAX_PENDING_PHONEMES = 64  # PhonemesIn messages kept while the worker is away; the oldest go first

StateCallback = Callable[[EngineState, str], None]
HealthCheck = Callable[[int], "str | None"]


class SupervisorError(RuntimeError):
    """The engine worker could not be started or kept running; the message says why and what to change."""


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

        ranks = config.engine.flashtalk.world_size if config.engine.kind == "flashtalk" else 1
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


# --- the client -----------------------------------------------------------------------------------


@dataclass
class _Outgoing:
    parts: list[bytes]
    samples: int = 0  # > 0: an AudioIn (may be dropped when over budget)
    kind: str = "ctrl"  # "audio" and "phonemes" are dropped by an interrupt, and with "start" by a new session
    t0: int = 0  # audio: its first sample on the session timeline
    seq: int = 0  # audio: its AudioIn seq (kept when it is sent again)
    pcm: np.ndarray | None = None  # audio: the samples, kept until the worker has rendered them (for a replay)
    replay: bool = False  # audio: sent as owed (AudioIn.replay), beyond the worker's backlog limit

    @property
    def end(self) -> int:
        return self.t0 + self.samples


AudioLostCallback = Callable[[int, int], None]


class EngineClient:
    """Thread-safe, never-blocking sender of StartSession / AudioIn / PhonemesIn / Interrupt /
    StopSession to the worker.

    Audio sent to a worker stays here until the worker's heartbeats say it is in a published chunk
    (``rendered_t``); when the worker dies, that audio goes to its successor first (``AudioIn.replay``), so a
    crash loses no speech. At most ``max_pending_s`` of audio is kept (sent and not rendered, plus not yet
    sent); beyond it the oldest is dropped. Audio that no worker will ever render (dropped here, or by the
    worker because its engine fell behind) is counted in ``dropped_samples`` and reported to
    ``on_audio_lost(start_sample, n_samples)`` (session timeline; any thread, never under the lock).
    Control messages are never dropped; at most ``MAX_PENDING_PHONEMES`` PhonemesIn wait (oldest dropped).
    ``epoch`` starts at 0 and ``interrupt()`` bumps it.
    """

    def __init__(self, sample_rate: int, *, max_pending_s: float = 1.0,
                 on_audio_lost: AudioLostCallback | None = None) -> None:
        self.sample_rate = sample_rate
        self.max_pending_samples = int(max_pending_s * sample_rate)
        self.on_audio_lost = on_audio_lost
        self.dropped_samples = 0  # lost: never rendered by any worker
        self.replayed_samples = 0  # sent again to a replacement worker
        self._lost_log = RateLimitedLog(log)
        self.sent_messages = 0
        self._lock = threading.Lock()
        self._queue: deque[_Outgoing] = deque()
        self._pending_samples = 0  # audio in _queue
        self._sent: deque[_Outgoing] = deque()  # audio the current worker got and has not rendered yet
        self._sent_samples = 0
        self._forgotten: deque[tuple[int, int]] = deque()  # [start, end) sent, not rendered, no longer kept
        self._rendered_t = 0  # the current worker's progress on the session timeline (its heartbeats)
        self._floor = 0  # audio before this was dropped on purpose (barge-in): never replayed, never "lost"
        self._lost: list[tuple[int, int]] = []  # spans to report once the lock is released
        self._owed = False  # a worker died: the audio waiting at the next Ready is owed to the session
        self._start: _Outgoing | None = None  # the active session's StartSession, re-sent after Ready
        self._session_id: str | None = None
        self._timeline_id: str | None = None  # the session whose audio _sent holds (also while it drains)
        self._seq = 0
        self._t0 = 0
        self._epoch = 0
        self.interrupted_samples = 0  # queued audio dropped by interrupts

    @property
    def session_id(self) -> str | None:
        return self._session_id

    @property
    def epoch(self) -> int:
        """The current barge-in epoch: chunks with a lower ``epoch`` are stale (drop them)."""
        return self._epoch

    @property
    def unrendered_samples(self) -> int:
        """Audio kept for the worker: sent and not yet rendered, plus not yet sent."""
        with self._lock:
            return self._sent_samples + self._pending_samples

    def start_session(self, session_id: str, *, seed: int = 0, prompt: str = "", avatar: bytes | None = None) -> None:
        """Start (or replace) the session; ``avatar`` is an image file's bytes (None: built-in avatar)."""
        import hashlib

        sha = hashlib.sha256(avatar).hexdigest() if avatar is not None else None
        msg = p.StartSession(session_id=session_id, seed=seed, prompt=prompt, avatar_sha256=sha)
        start = _Outgoing([p.encode(msg)] + ([avatar] if avatar is not None else []), kind="start")
        with self._lock:
            # what is still queued for a replaced session would be refused (or, a stale StartSession
            # re-sent after a restart, would replace this one): only control messages stay
            self._queue = deque(item for item in self._queue if item.kind not in ("start", "audio", "phonemes"))
            self._pending_samples = 0
            self._clear_sent()
            self._start, self._session_id, self._timeline_id, self._seq, self._t0 = start, session_id, session_id, 0, 0
            self._rendered_t = self._floor = 0
            self._queue.append(start)

    def push_audio(self, pcm: np.ndarray) -> None:
        """Queue float32 mono samples for the active session (no-op without one); never blocks."""
        data = np.ascontiguousarray(np.asarray(pcm, dtype="<f4").reshape(-1))
        with self._lock:
            if self._session_id is None:
                return
            n = int(data.shape[0])
            msg = p.AudioIn(session_id=self._session_id, seq=self._seq, t0=self._t0, n_samples=n,
                            sample_rate=self.sample_rate)
            self._queue.append(_Outgoing([p.encode(msg), data.tobytes()], samples=n, kind="audio", t0=self._t0,
                                         seq=self._seq, pcm=data))
            self._seq += 1
            self._t0 += n
            self._pending_samples += n
            self._drop_over_budget()
        self._report_lost()

    def push_phonemes(self, spans: Sequence[tuple[int, int, str]]) -> None:
        """Queue phoneme timings (start/end sample on the session timeline, phoneme) for the active
        session (no-op without one); the worker hands them to sessions that take them."""
        clean = [(int(a), int(b), str(ph)) for a, b, ph in spans]
        with self._lock:
            if self._session_id is None or not clean:
                return
            msg = p.PhonemesIn(session_id=self._session_id, spans=clean)
            self._queue.append(_Outgoing([p.encode(msg)], kind="phonemes"))
            waiting = [item for item in self._queue if item.kind == "phonemes"]
            for item in waiting[:max(0, len(waiting) - MAX_PENDING_PHONEMES)]:
                self._queue.remove(item)

    def interrupt(self) -> int:
        """Barge-in: drop queued audio and phonemes, queue an Interrupt with the next epoch ahead of
        any audio pushed later; returns the new epoch. The sinks should drop chunks of older epochs."""
        with self._lock:
            self._epoch += 1
            dropped = sum(item.samples for item in self._queue if item.kind == "audio")
            self._queue = deque(item for item in self._queue if item.kind not in ("audio", "phonemes"))
            self._pending_samples = 0
            self._clear_sent()  # the worker drops it too: nothing before this point is owed any more
            self._floor = self._t0
            self.interrupted_samples += dropped
            msg = p.Interrupt(session_id=self._session_id or "", epoch=self._epoch)
            self._queue.append(_Outgoing([p.encode(msg)]))
            return self._epoch

    def stop_session(self) -> None:
        """End the active session: the worker turns its remaining audio into chunks, then EndOfStream."""
        with self._lock:
            if self._session_id is None:
                return
            self._queue.append(_Outgoing([p.encode(p.StopSession(session_id=self._session_id))]))
            self._start = self._session_id = None

    # -- used by the supervisor thread -----------------------------------------------------------

    def on_progress(self, beat: p.Heartbeat) -> None:
        """A heartbeat of the current worker: forget the audio it has rendered; report what it dropped."""
        with self._lock:
            if not beat.session_id or beat.session_id != self._timeline_id:
                return  # idle, or a session this client no longer follows
            for start, n in beat.lost:
                self._lose(start, start + n)
            if beat.rendered_t >= 0:
                self._rendered_t = max(self._rendered_t, beat.rendered_t)
                self._trim_rendered()
        self._report_lost()

    def on_worker_gone(self) -> None:
        """The worker died (or was killed): what it had not rendered goes first to its successor. The audio it
        took with it that is no longer kept is lost; without a session to resume, all of it is."""
        with self._lock:
            self._trim_rendered()
            for start, end in self._forgotten:
                self._lose(start, end)
            self._forgotten.clear()
            replay = list(self._sent)
            self._clear_sent()
            self._owed = True  # what waits now, and what comes until the next Ready, is the outage's
            if self._session_id is None:
                for item in replay:
                    self._lose(max(item.t0, self._rendered_t), item.end)
                replay = []
            for item in reversed(replay):
                skip = max(0, min(item.samples, self._rendered_t - item.t0))
                self.replayed_samples += item.samples - skip
                self._pending_samples += item.samples - skip
                self._queue.appendleft(self._replay_item(item, skip))
            self._drop_over_budget()
        self._report_lost()

    def on_ready(self) -> None:
        """A (new) worker is ready: put the active session's StartSession in front of everything else. The audio
        waiting (the dead worker's and what arrived while it was away) goes as owed (``AudioIn.replay``): the
        worker keeps all of it, beyond its backlog limit for a live engine that falls behind."""
        with self._lock:
            self._queue = deque(item for item in self._queue if item is not self._start)
            if self._owed and self._session_id is not None:
                self._queue = deque(self._replay_item(item, 0) if item.samples and not item.replay else item
                                    for item in self._queue)
            self._owed = False
            if self._start is not None:
                self._queue.appendleft(self._start)

    def flush(self, sock: zmq.Socket) -> int:
        """Send queued messages in order until ZeroMQ would block; returns how many were sent."""
        sent = 0
        while True:
            with self._lock:
                if not self._queue:
                    return sent
                item = self._queue[0]
                try:
                    sock.send_multipart(item.parts, flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return sent
                self._queue.popleft()
                self._pending_samples -= item.samples
                if item.samples:  # kept until the worker says it is rendered
                    self._sent.append(item)
                    self._sent_samples += item.samples
            sent += 1
            self.sent_messages += 1

    # -- internals (under the lock) --------------------------------------------------------------

    def _replay_item(self, item: _Outgoing, skip: int) -> _Outgoing:
        """``item``'s audio without its first ``skip`` samples, as an AudioIn marked ``replay`` (same session)."""
        assert item.pcm is not None
        pcm = item.pcm[skip:]
        t0, n = item.t0 + skip, int(pcm.shape[0])
        msg = p.AudioIn(session_id=self._session_id or "", seq=item.seq, t0=t0, n_samples=n,
                        sample_rate=self.sample_rate, replay=True)
        return _Outgoing([p.encode(msg), pcm.tobytes()], samples=n, kind="audio", t0=t0, seq=item.seq, pcm=pcm,
                         replay=True)

    def _trim_rendered(self) -> None:
        while self._sent and self._sent[0].end <= self._rendered_t:
            self._sent_samples -= self._sent.popleft().samples
        while self._forgotten and self._forgotten[0][1] <= self._rendered_t:
            self._forgotten.popleft()

    def _clear_sent(self) -> None:
        self._sent.clear()
        self._sent_samples = 0
        self._forgotten.clear()

    def _drop_over_budget(self) -> None:
        """Keep at most ``max_pending_samples``: forget the oldest sent audio first (the worker may still render
        it: lost only if it dies first), then drop the oldest unsent audio (lost now)."""
        while self._sent_samples + self._pending_samples > self.max_pending_samples and self._sent:
            item = self._sent.popleft()
            self._sent_samples -= item.samples
            self._forgotten.append((max(item.t0, self._rendered_t), item.end))
        while self._pending_samples > self.max_pending_samples:
            oldest = next((item for item in self._queue if item.samples), None)
            if oldest is None:
                break
            self._queue.remove(oldest)
            self._pending_samples -= oldest.samples
            self._lose(oldest.t0, oldest.end)

    def _lose(self, start: int, end: int) -> None:
        start = max(start, self._floor)
        if end <= start:
            return
        self.dropped_samples += end - start
        self._lost.append((start, end - start))

    def _report_lost(self) -> None:
        """Tell ``on_audio_lost`` about the spans lost meanwhile (outside the lock: it may call anything)."""
        with self._lock:
            spans, self._lost = _merged(self._lost), []
        for start, n in spans:
            self._lost_log.warning("lost", "audio lost: %.2f s from %.2f s of the session (%.2f s in all; the worker "
                                   "was away or behind longer than supervisor.replay_max_s allows)", n / self.sample_rate,
                                   start / self.sample_rate, self.dropped_samples / self.sample_rate)
            if self.on_audio_lost is not None:
                try:
                    self.on_audio_lost(start, n)
                except Exception:  # a broken listener must not stop the audio
                    log.exception("on_audio_lost callback failed")


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, n) spans with the adjacent ones joined (one report per stretch of lost audio, not per packet)."""
    out: list[tuple[int, int]] = []
    for start, n in spans:
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((start, n))
    return out


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
