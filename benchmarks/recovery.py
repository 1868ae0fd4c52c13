"""Worker recovery with the default supervisor settings: ``kill -9`` and SIGSTOP of the engine worker mid-speech.

Each trial is a fresh, real :class:`~soulx_live.daemon.Daemon` built from ``load_config`` defaults (lite engine
512x512 in its supervised worker process, realtime file input, default ``supervisor.*``); only the bus runtime
folder, the audio file and the metrics port (0: any free port, so a running daemon elsewhere cannot collide)
are set. Its one sink is a recorder behind a probe (``tests/daemon/live_support.py``'s ``ProbeSink``) that
notes every chunk reaching it; the daemon wraps it in its gap filler as usual.

The input is a linear chirp (200 Hz -> 6 kHz over the file) at a speaking level, so every 40 ms frame of audio
that reaches the recording can be placed back on the input timeline: a coarse position from its frequency,
then the exact one by correlation with the input. That gives the audio lost (input samples that never reached
the recording) and the audio repeated (the restart replays what the client kept for it), not only the
difference of the two durations.

Per trial, times from the signal (``time.monotonic``, this process):

* **detected**: the supervisor logs "engine restarting" (SIGSTOP: after ``heartbeat_timeout_s`` without a
  heartbeat; kill -9: the exit is seen at once);
* **new worker**: ``daemon.worker_pid`` names the replacement;
* **speech back**: the first chunk with speech after the hold frames;
* **longest starvation**: the longest time the recorder's scheduled content had run out (frames play back to
  back from their arrival); **held frames**: silent (gap-filler) frames between the signal and speech back;
* **contiguous**: the recorder saw every output frame index once, in order; **recording ok**: the MP4 holds every
  frame written to it.

Run: ``OMP_NUM_THREADS=1 python benchmarks/recovery.py`` (about 4-5 minutes: 5 kill trials of a 10 s file, 3
SIGSTOP trials of a 48 s file, since detection takes the default 30 s heartbeat timeout); writes
``benchmarks/results/recovery.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "daemon"))

from live_support import (
    DaemonThread,
    ProbeSink,
    Write,
    assert_contiguous,
    content_lead,
    max_starvation,
    short_tmp,
    wait_for,
)

from plugins.recorder import RecorderSink, probe_media
from soulx_live.audio.file import decode_audio_file
from soulx_live.config import SoulxConfig, load_config
from soulx_live.daemon import Daemon

log = logging.getLogger("recovery")

RESULTS = ROOT / "benchmarks" / "results" / "recovery.json"
SR = 16000
FRAME = 640  # samples per frame at 25 fps
CHIRP_HZ = (200.0, 6000.0)
LEVEL = 0.4
SPEECH_RMS = 0.05  # a frame above this is speech; hold frames and idle chunks are exact silence
SEARCH = 1600  # samples either side of the frequency estimate searched by correlation


# --- the input and where its frames went -----------------------------------------------------------


def write_chirp(path: Path, seconds: float) -> Path:
    """A mono 16-bit WAV: a linear chirp over ``CHIRP_HZ`` (its frequency tells where a frame came from)."""
    import av

    t = np.arange(round(seconds * SR)) / SR
    k = (CHIRP_HZ[1] - CHIRP_HZ[0]) / seconds
    pcm = (LEVEL * np.sin(2 * np.pi * (CHIRP_HZ[0] * t + 0.5 * k * t * t))).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=SR)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm[None], format="fltp", layout="mono")
        frame.sample_rate = SR
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def locate(frame: np.ndarray, pcm: np.ndarray, seconds: float) -> tuple[int, float]:
    """Where ``frame`` starts in ``pcm`` and the RMS residual there (0 for a bit-exact copy)."""
    spectrum = np.abs(np.fft.rfft(frame * np.hanning(frame.size), 1 << 15))
    freq = float(np.argmax(spectrum)) * SR / (1 << 15)
    k = (CHIRP_HZ[1] - CHIRP_HZ[0]) / seconds
    guess = round((freq - CHIRP_HZ[0]) / k * SR) - frame.size // 2
    lo = max(0, guess - SEARCH)
    hi = min(pcm.size, guess + SEARCH + frame.size)
    seg = pcm[lo:hi]
    if seg.size < frame.size:
        return guess, float("inf")
    # squared error at every offset: sum(seg^2) over the window - 2 <seg, frame> + sum(frame^2)
    energy = np.convolve(seg.astype(np.float64) ** 2, np.ones(frame.size), "valid")
    err = energy - 2 * np.correlate(seg.astype(np.float64), frame.astype(np.float64), "valid") + float(frame @ frame)
    best = int(np.argmin(err))
    return lo + best, float(np.sqrt(max(0.0, err[best]) / frame.size))


@dataclass
class AudioAccount:
    input_speech_s: float
    recorded_speech_s: float
    lost_s: float  # input samples never recorded
    lost_after_first_frame_s: float  # the same, from the first recorded sample on (the start-up is not the kill's)
    longest_lost_run_s: float
    repeated_s: float  # recorded more than once (the restart's replay)
    max_residual: float  # of the placement; 0 = every frame a bit-exact slice of the input


def account(writes: list[Write], pcm: np.ndarray, seconds: float) -> AudioAccount:
    covered = np.zeros(pcm.size, np.int32)
    recorded = 0
    residual = 0.0
    for w in writes:
        for i in range(w.n):
            frame = w.audio[i * FRAME:(i + 1) * FRAME]
            if frame.size < FRAME or float(np.sqrt(np.mean(frame ** 2))) <= SPEECH_RMS:
                continue
            start, res = locate(frame, pcm, seconds)
            residual = max(residual, res)
            covered[max(0, start):start + FRAME] += 1
            recorded += FRAME
    hit = covered > 0
    first = int(np.argmax(hit)) if hit.any() else pcm.size
    missing = ~hit
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], missing[first:].astype(np.int8), [0]]))))[::2]
    return AudioAccount(
        input_speech_s=pcm.size / SR,
        recorded_speech_s=recorded / SR,
        lost_s=float(missing.sum()) / SR,
        lost_after_first_frame_s=float(missing[first:].sum()) / SR,
        longest_lost_run_s=float(runs.max()) / SR if runs.size else 0.0,
        repeated_s=float(np.clip(covered - 1, 0, None).sum()) / SR,
        max_residual=residual,
    )


# --- one trial ---------------------------------------------------------------------------------------


class EventLog(logging.Handler):
    """Keeps (monotonic time, message) of the supervisor's and the gap filler's records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.getMessage()))

    def first(self, text: str, after: float) -> tuple[float, str] | None:
        return next(((t, m) for t, m in self.records if t >= after and text in m), None)


@dataclass
class Trial:
    signal: str
    seconds: float
    speech_before_signal_s: float
    pid: int = 0
    detected_s: float | None = None
    restart_reason: str = ""
    new_worker_s: float | None = None
    worker_running_s: float | None = None
    speech_back_s: float | None = None
    longest_starvation_s: float = 0.0
    held_frames: int = 0
    recorder_lead_before_signal_s: float = 0.0
    contiguous: bool = False
    recording_ok: bool = False
    restarts: int = 0
    exit_code: int | None = None
    session_wall_s: float = 0.0
    load_avg_1min: float = 0.0
    audio: dict[str, float] = field(default_factory=dict)


def defaults_config(root: Path, audio: Path) -> SoulxConfig:
    """``load_config`` defaults (the environment ignored) with only the runtime folder, file and metrics port set."""
    return load_config(env={}, overrides={"bus.runtime_dir": str(root / "rt"), "audio.file": str(audio),
                                          "metrics.port": 0})


def _speech_frames(probe: ProbeSink) -> int:
    return sum(w.n for w in probe.speech_writes(SPEECH_RMS))


def run_trial(sig: signal.Signals, seconds: float, speech_before_s: float) -> Trial:
    trial = Trial(sig.name, seconds, speech_before_s, load_avg_1min=round(os.getloadavg()[0], 2))
    events = EventLog()
    watched = [logging.getLogger("soulx_live.supervisor"), logging.getLogger("plugins.hold")]
    with short_tmp() as root:
        speech = write_chirp(root / "speech.wav", seconds)
        pcm = decode_audio_file(speech, SR)
        config = defaults_config(root, speech)
        probe = ProbeSink(RecorderSink(root / "rec.mp4"))
        daemon = Daemon(config, sink_factory=lambda _: [probe])
        if daemon.isolation != "process":
            raise RuntimeError(f"expected the supervised worker, got isolation={daemon.isolation}")
        for logger in watched:
            logger.addHandler(events)
            logger.setLevel(logging.INFO)
        t_start = time.monotonic()
        runner = DaemonThread(daemon).start()
        pid = None
        try:
            sup = config.supervisor
            wait_for(lambda: _speech_frames(probe) >= speech_before_s * 25, sup.init_timeout_s, "speech frames")
            pid = daemon.worker_pid
            if pid is None:
                raise RuntimeError("no worker pid")
            trial.pid = pid
            t_sig = time.monotonic()
            os.kill(pid, sig)
            # the replacement: detection + backoff + a fresh worker's start
            patience = sup.heartbeat_timeout_s + max(sup.restart_backoff_s) + sup.init_timeout_s
            wait_for(lambda: daemon.worker_pid not in (None, pid), patience, "the new worker")
            trial.new_worker_s = time.monotonic() - t_sig
            trial.restarts = daemon.status().restarts
            runner.thread.join(seconds + 60.0)  # the session ends with the file
            if runner.thread.is_alive():
                log.warning("the session did not end with its file; stopping it")
            trial.exit_code = runner.stop(30.0)
            trial.session_wall_s = time.monotonic() - t_start
        finally:
            for logger in watched:
                logger.removeHandler(events)
            if pid is not None and sig == signal.SIGSTOP:
                _reap(pid)
            if runner.thread.is_alive():
                daemon.request_stop("benchmark failed")
                runner.thread.join(30.0)
        writes = probe.snapshot()
        detected = events.first("engine restarting", t_sig)
        if detected is not None:
            trial.detected_s = detected[0] - t_sig
            trial.restart_reason = detected[1]
        running = events.first("engine running", t_sig)
        if running is not None:
            trial.worker_running_s = running[0] - t_sig
        leads = content_lead(writes)
        before = [i for i, w in enumerate(writes) if w.mono <= t_sig]
        if before:
            trial.recorder_lead_before_signal_s = round(leads[before[-1]] - (t_sig - writes[before[-1]].mono), 4)
        held_from = next((i for i, w in enumerate(writes) if w.mono > t_sig and w.rms == 0.0), None)
        if held_from is not None:
            back = next((i for i in range(held_from, len(writes)) if writes[i].rms > SPEECH_RMS), None)
            if back is not None:
                trial.speech_back_s = writes[back].mono - t_sig
                trial.held_frames = sum(w.n for w in writes[held_from:back] if w.rms == 0.0)
        trial.longest_starvation_s = max_starvation(writes)
        log.debug("after the signal: %s", [(round(w.mono - t_sig, 3), w.first_frame, w.n, round(w.rms, 3))
                                           for w in writes if w.mono > t_sig - 0.3][:80])
        try:
            assert_contiguous(writes)
            trial.contiguous = True
        except AssertionError as exc:
            log.warning("not contiguous: %s", exc)
        trial.recording_ok = probe_media(root / "rec.mp4").frames == sum(w.n for w in writes)
        acc = account(writes, pcm, seconds)
        trial.audio = {k: round(v, 4) for k, v in vars(acc).items()}
    return trial


def _reap(pid: int) -> None:
    """A stopped worker the supervisor did not replace must not outlive the benchmark."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- the benchmark --------------------------------------------------------------------------------


def _stats(values: list[float | None]) -> dict[str, float | int | None]:
    got = [v for v in values if v is not None]
    if not got:
        return {"p50": None, "max": None, "min": None, "n": 0}
    return {"p50": round(float(np.median(got)), 4), "max": round(max(got), 4), "min": round(min(got), 4),
            "n": len(got)}


def summarise(trials: list[Trial]) -> dict[str, object]:
    return {
        "detected_s": _stats([t.detected_s for t in trials]),
        "new_worker_s": _stats([t.new_worker_s for t in trials]),
        "worker_running_s": _stats([t.worker_running_s for t in trials]),
        "recorder_lead_before_signal_s": _stats([t.recorder_lead_before_signal_s for t in trials]),
        "speech_back_s": _stats([t.speech_back_s for t in trials]),
        "longest_starvation_ms": _stats([t.longest_starvation_s * 1000 for t in trials]),
        "held_frames": _stats([float(t.held_frames) for t in trials]),
        "audio_lost_s": _stats([t.audio["lost_after_first_frame_s"] for t in trials]),
        "audio_lost_in_one_run_s": _stats([t.audio["longest_lost_run_s"] for t in trials]),
        "audio_repeated_s": _stats([t.audio["repeated_s"] for t in trials]),
        "input_minus_recorded_speech_s": _stats([t.audio["input_speech_s"] - t.audio["recorded_speech_s"]
                                                 for t in trials]),
        "all_contiguous": all(t.contiguous for t in trials),
        "all_recordings_ok": all(t.recording_ok for t in trials),
        "all_one_restart": all(t.restarts == 1 for t in trials),
        "all_exit_0": all(t.exit_code == 0 for t in trials),
    }


def _cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name:")),
                platform.processor() or "unknown")


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def _row(name: str, s: dict[str, object]) -> str:
    def fmt(key: str, scale: float = 1.0, unit: str = "s") -> str:
        v = s[key]
        return f"{v['p50'] * scale:.2f} / {v['max'] * scale:.2f} {unit}" if v["n"] else "-"  # type: ignore[index]

    return (f"| {name} | {fmt('detected_s')} | {fmt('speech_back_s')} | {fmt('longest_starvation_ms', unit='ms')} | "
            f"{fmt('held_frames', unit='')} | {fmt('audio_lost_s')} | {fmt('audio_repeated_s')} | "
            f"{s['all_contiguous']} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5, help="kill -9 trials")
    parser.add_argument("--stops", type=int, default=3, help="SIGSTOP trials")
    parser.add_argument("--kill-file-s", type=float, default=10.0)
    parser.add_argument("--stop-file-s", type=float, default=48.0, help="must outlast heartbeat_timeout_s")
    parser.add_argument("--speech-before-s", type=float, default=3.0, help="speech recorded before the signal")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if os.environ.get("RECOVERY_DEBUG") else logging.INFO)
    sup = load_config(env={}).supervisor
    if args.stops and args.stop_file_s < sup.heartbeat_timeout_s + args.speech_before_s + 10.0:
        parser.error(f"--stop-file-s must outlast the {sup.heartbeat_timeout_s} s heartbeat timeout")
    load_before = os.getloadavg()
    t0 = time.monotonic()
    trials: list[Trial] = []
    plan = [(signal.SIGKILL, args.kill_file_s)] * args.kills + [(signal.SIGSTOP, args.stop_file_s)] * args.stops
    for i, (sig, seconds) in enumerate(plan):
        trial = run_trial(sig, seconds, args.speech_before_s)
        log.warning("trial %d/%d %s: speech back %.2f s, starvation %.0f ms, lost %.2f s", i + 1, len(plan),
                    sig.name, trial.speech_back_s or -1, trial.longest_starvation_s * 1000,
                    trial.audio["lost_after_first_frame_s"])
        trials.append(trial)
    kills = [t for t in trials if t.signal == "SIGKILL"]
    stops = [t for t in trials if t.signal == "SIGSTOP"]
    result = {
        "benchmark": "recovery",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
        "load_avg_1_5_15_before": [round(x, 2) for x in load_before],
        "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.monotonic() - t0, 1),
        "python": platform.python_version(),
        "config": {
            "source": "load_config(env={}) defaults; set: bus.runtime_dir, audio.file, metrics.port=0",
            "supervisor": sup.model_dump(mode="json"),
            "engine": "lite 512x512, 5 frames per chunk, 25 fps, worker process (isolation=process)",
            "sink": "ProbeSink(RecorderSink) behind the daemon's HoldingSink",
            "input": f"linear chirp {CHIRP_HZ[0]:.0f}-{CHIRP_HZ[1]:.0f} Hz at {LEVEL}, realtime file",
            "speech_before_signal_s": args.speech_before_s,
            "kill_file_s": args.kill_file_s, "stop_file_s": args.stop_file_s,
            "omp_threads": os.environ.get("OMP_NUM_THREADS", ""),
        },
        "definitions": {
            "detected_s": "signal -> supervisor logs 'engine restarting'",
            "new_worker_s": "signal -> daemon.worker_pid names the replacement",
            "worker_running_s": "signal -> the supervisor logs the replacement 'engine running'",
            "recorder_lead_before_signal_s": "content the recorder had scheduled beyond the signal (its buffer)",
            "speech_back_s": "signal -> first speech chunk at the recorder after the hold frames",
            "longest_starvation_ms": "longest time the recorder's scheduled content had run out (whole session)",
            "held_frames": "silent gap-filler frames between the signal and speech back",
            "audio_lost_s": "input samples after the first recorded one that never reached the recording",
            "audio_lost_in_one_run_s": "the longest contiguous stretch of them",
            "audio_repeated_s": "input samples recorded more than once (replayed by the restart)",
            "input_minus_recorded_speech_s": "input speech seconds - recorded speech seconds (includes start-up)",
        },
        "kill_9": {"summary": summarise(kills), "trials": [vars(t) for t in kills]},
        "sigstop": {"summary": summarise(stops), "trials": [vars(t) for t in stops]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("p50 / max | detected | speech back | longest starvation | held frames | audio lost | audio repeated | "
          "contiguous |")
    print("|---|---|---|---|---|---|---|---|")
    if kills:
        print(_row(f"kill -9 (n={len(kills)})", result["kill_9"]["summary"]))  # type: ignore[index]
    if stops:
        print(_row(f"SIGSTOP (n={len(stops)})", result["sigstop"]["summary"]))  # type: ignore[index]
    print(f"wrote {args.out} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
