"""Remote engine benchmark: the laptop's daemon against `soulx-live serve` over a link, against the local engine.

Topology (root, network namespaces made here): `serve` runs in a "server" namespace, the laptop's daemon in a
"laptop" namespace, joined by a veth pair. Shaping "wan": 10 Mbit/s each way by a ``tbf`` qdisc on each veth end,
plus 40 ms RTT, 5 ms jitter and 1 % loss, by ``netem`` when the kernel has it, else by the userspace
:class:`~soulx_live.remote.emulator.LinkEmulator` (delay + jitter per read; a loss stalls a read by 3 RTT, what
Linux's tail-loss probe and the retransmission take) in the laptop namespace. Shaping "none": the bare veth. The link cut is
``ip link set <laptop veth> down`` for 5 s. Without root the remote runs use loopback and the emulator (noted).

The same laptop daemon (a probe sink behind the usual HoldingSink; lite engine, still face: no blinks, no idle
motion) plays one audio file in real time: 4 s of silence (idle: bitrate, and PSNR of the decoded frames on the laptop's bus vs the\nstill face the server's engine renders), then
``--trials`` bursts of speech-like noise, then silence through a 5 s cut. Figures (time.monotonic, one host):

* speech latency: the daemon's own measure (``observe_speech_latency``): a speech onset handed to the engine on
  the laptop -> the chunk holding it at the laptop's sink; "added" = remote median - local median;
* bandwidth down (bytes the laptop received / time), idle and overall; PSNR of idle frames vs the still face;
* frames dropped (late in the jitter buffer, skipped to the next keyframe, bus gaps), the server's counters;
* A/V offset at the sink (video minus audio time written, as the recorder computes it, sampled every 0.5 s);
* reconnect: link back up -> first new chunk published to the sinks.

Run as root: ``python benchmarks/remote_bench.py`` (about 2 minutes); writes benchmarks/results/remote_bench.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT))

from host import machine

from soulx_live.config import SoulxConfig

log = logging.getLogger("remote_bench")

RESULTS = CHECKOUT / "benchmarks" / "results" / "remote_bench.json"
SR = 16000
IDLE_S = 4.0
BURST_S = 0.6
GAP_S = 1.4
CUT_AT_S = 1.0  # after the bursts
CUT_S = 5.0
TAIL_S = 12.0
WAN = {"rate_mbit": 10.0, "delay_ms": 40.0, "jitter_ms": 5.0, "loss_pct": 1.0}


def audio_file(folder: Path, trials: int) -> Path:
    rng = np.random.default_rng(7)
    parts = [np.zeros(int(IDLE_S * SR), np.float32)]
    for _ in range(trials):
        parts += [rng.uniform(-0.3, 0.3, int(BURST_S * SR)).astype(np.float32), np.zeros(int(GAP_S * SR), np.float32)]
    parts.append(np.zeros(int((CUT_AT_S + CUT_S + TAIL_S) * SR), np.float32))
    import wave

    path = folder / "bench.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SR)
        out.writeframes((np.concatenate(parts) * 32767).astype("<i2").tobytes())
    return path


def engine_settings(width: int, height: int) -> dict:
    return {"kind": "lite", "lite": {"width": width, "height": height, "blinks": False, "idle_motion": False}}


class Probe:
    """The sink: arrival times, and video vs audio written (its A/V offset, as the recorder computes it)."""

    name = "probe"
    queue_chunks = 16

    def __init__(self) -> None:
        self.writes: list[float] = []
        self.holds: list[str] = []
        self._frames = 0
        self._samples = 0
        self._spec = None

    def open(self, spec: object) -> None:
        self._spec = spec

    def write(self, chunk: object) -> None:
        self.writes.append(time.monotonic())
        self._frames += chunk.num_frames  # type: ignore[attr-defined]
        self._samples += int(chunk.audio.shape[0])  # type: ignore[attr-defined]

    def hold(self, reason: str) -> None:
        self.holds.append(reason)

    def av_offset_s(self) -> float | None:
        spec = self._spec
        if spec is None or not self._frames:
            return None
        return self._frames / float(spec.fps) - self._samples / spec.sample_rate  # type: ignore[attr-defined]

    def close(self) -> None:
        pass


def tap_idle(address: str, until: list[float], out: list[tuple[np.ndarray, float]]) -> None:
    """The frames on the laptop's bus (what the decoder published, or the local engine made) while idle."""
    from engine.interface import FrameChunk
    from soulx_live.bus import FrameSubscriber

    with FrameSubscriber(address, hwm_chunks=64) as sub:
        while not until or time.monotonic() < until[0]:
            item = sub.recv(timeout_ms=50)
            if isinstance(item, FrameChunk):
                out.append((np.array(item.frames[-1]), float(np.abs(item.audio).max())))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def still_face(width: int, height: int) -> np.ndarray:
    from engine.interface import SessionRequest
    from engine.lite.engine import LiteConfig, LiteEngine

    engine = LiteEngine(LiteConfig(width=width, height=height, blinks=False, idle_motion=False))
    session = engine.start_session(SessionRequest(session_id="ref"))
    session.push_audio(np.zeros(engine.spec.samples_per_chunk, dtype=np.float32))
    return session.next_chunk().frames[0]


def laptop(args: argparse.Namespace) -> dict:
    """One run of the laptop's daemon (local engine, or remote at ``args.address``); the figures."""
    from soulx_live.daemon import Daemon
    from soulx_live.runtime_dir import endpoint

    folder = Path(tempfile.mkdtemp(prefix="sxrb-"))
    audio = audio_file(folder, args.trials)
    settings: dict = {
        "engine": engine_settings(args.width, args.height),
        "audio": {"source": "file", "file": str(audio), "realtime": True},
        "bus": {"runtime_dir": str(folder / "rt"), "hwm_chunks": 4},
        # the local baseline runs the engine in this process: its audio starts once the engine is built, as the
        # remote's starts once the server's Welcome is in (a worker process would start with a backlog to drain)
        "supervisor": {"shutdown_grace_s": 5.0, "isolation": "thread"},
        "metrics": {"enabled": False}, "logging": {"level": "WARNING"},
    }
    emulator = None
    if args.address:
        address = args.address
        if args.emulate:
            from soulx_live.remote.emulator import LinkEmulator, LinkShape

            host, _, port = address.rpartition(":")
            shape = LinkShape(delay_s=WAN["delay_ms"] / 2000, jitter_s=WAN["jitter_ms"] / 2000,
                              loss=WAN["loss_pct"] / 100, rate_bps=None if args.veth else WAN["rate_mbit"] * 1e6,
                              loss_stall_s=3 * WAN["delay_ms"] / 1000)
            emulator = LinkEmulator((host, int(port)), shape)
            address = f"127.0.0.1:{emulator.port}"
        elif not args.veth:  # loopback without shaping still goes through the emulator: it does the cut
            from soulx_live.remote.emulator import LinkEmulator

            host, _, port = address.rpartition(":")
            emulator = LinkEmulator((host, int(port)))
            address = f"127.0.0.1:{emulator.port}"
        settings["remote"] = {"address": address, "server_public_key": args.server_key, "keys_dir": args.keys_dir}
    config = SoulxConfig.model_validate(settings)
    probe = Probe()
    daemon = Daemon(config, sink_factory=lambda cfg: [probe])
    idle_until: list[float] = []
    idle_frames: list[tuple[np.ndarray, float]] = []
    tap = threading.Thread(target=tap_idle, args=(endpoint("frames", config.bus), idle_until, idle_frames), daemon=True)
    tap.start()
    seen: dict[str, list] = {"observe_speech_latency": [], "set_av_offset": [], "add_dropped_frames": []}
    observe = daemon.hub.observe

    def spy(method: str, *values: object) -> None:
        if method in seen:
            seen[method].append(values)
        observe(method, *values)

    daemon.hub.observe = spy  # type: ignore[method-assign]
    thread = threading.Thread(target=daemon.run, daemon=True)
    t0 = time.monotonic()
    thread.start()
    driver = daemon.driver
    while not probe.writes and time.monotonic() - t0 < 60:
        time.sleep(0.01)
    start = probe.writes[0] if probe.writes else time.monotonic()
    idle_until.append(start + IDLE_S - 0.3)
    link = getattr(driver, "link", None)
    idle_bytes = []
    for at in (1.0, IDLE_S - 0.3):
        time.sleep(max(0.0, start + at - time.monotonic()))
        idle_bytes.append((time.monotonic(), link.bytes_down if link is not None else 0))
    bursts_end = start + IDLE_S + args.trials * (BURST_S + GAP_S)
    targets = []  # the jitter buffer's delay while the speech bursts play
    while time.monotonic() < bursts_end + CUT_AT_S:
        rx_now = getattr(driver, "receiver", None)
        if rx_now is not None and time.monotonic() < bursts_end:
            targets.append(rx_now.jitter.stats.target_s)
        time.sleep(0.25)
    reconnect = None
    if args.address:
        rx = driver.receiver  # type: ignore[attr-defined]
        if args.veth:
            subprocess.run(["ip", "link", "set", args.veth, "down"], check=True)
            time.sleep(CUT_S)
            subprocess.run(["ip", "link", "set", args.veth, "up"], check=True)
        else:
            assert emulator is not None
            emulator.cut(CUT_S)
        back = time.monotonic()
        before = rx.stats.chunks
        while rx.stats.chunks == before and time.monotonic() - back < TAIL_S:
            time.sleep(0.005)
        reconnect = time.monotonic() - back if rx.stats.chunks > before else None
    thread.join(120)
    end = time.monotonic()
    if emulator is not None:
        emulator.close()
    (t_a, b_a), (t_b, b_b) = idle_bytes
    tap.join(5)
    reference = still_face(args.width, args.height)
    # chunks of silence that follow two silent chunks (the mouth has closed): the still face the server sends
    scores = [psnr(idle_frames[i][0], reference) for i in range(2, len(idle_frames))
              if max(idle_frames[i - 2][1], idle_frames[i - 1][1], idle_frames[i][1]) == 0.0]
    latencies = [float(v[0]) for v in seen["observe_speech_latency"]]
    offsets = [float(v[1]) for v in seen["set_av_offset"] if v[0] == "probe"]
    dropped: dict[str, int] = {}
    for name, n in seen["add_dropped_frames"]:
        dropped[name] = dropped.get(name, 0) + int(n)
    out = {
        "speech_latency_s": {"median": float(np.median(latencies)) if latencies else None,
                             "p90": float(np.percentile(latencies, 90)) if latencies else None,
                             "all": latencies},
        "av_offset_s": {"max_abs": max(map(abs, offsets)) if offsets else None, "samples": len(offsets)},
        "frames_dropped": dropped,
        "idle_psnr_db": {"min": min(scores) if scores else None, "mean": float(np.mean(scores)) if scores else None,
                         "frames": len(scores)},
        "sink_chunks": len(probe.writes),
        "holds": len(probe.holds),
        "duration_s": end - start,
    }
    if link is not None:
        out["bandwidth_down_mbit_s"] = {"idle": (b_b - b_a) * 8 / (t_b - t_a) / 1e6,
                                        "overall": link.bytes_down * 8 / (end - start) / 1e6}
        out["rtt_ms_last"] = link.rtt_s * 1000
        rx = driver.receiver  # type: ignore[attr-defined]
        out["jitter"] = {"rfc3550_ms_at_end": rx.jitter.stats.jitter_s * 1000,
                         "buffer_target_ms_during_speech": {"median": float(np.median(targets)) * 1000 if targets else None,
                                                            "max": max(targets) * 1000 if targets else None},
                         "late_dropped_frames": rx.jitter.stats.late_frames}
        out["receiver"] = vars(rx.stats)
        out["reconnect_after_cut_s"] = reconnect
        out["reconnects"] = driver.reconnects  # type: ignore[attr-defined]
    return out


def _child(argv: list[str], prefix: list[str]) -> dict:
    """A laptop run in another process (its namespace): the JSON it prints last."""
    done = subprocess.run([*prefix, sys.executable, __file__, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(CHECKOUT)}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"laptop run failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _server_counters(text: str) -> dict:
    import ast

    for line in reversed(text.splitlines()):
        if "server stopped:" in line:
            return ast.literal_eval(line.split("server stopped:", 1)[1].strip())
    return {}


def remote_runs(args: argparse.Namespace, folder: Path) -> tuple[dict, dict]:
    from soulx_live.remote.keys import add_allowed_key, create_key_pair
    from soulx_live.remote.netns import SERVER_IP, NetnsLab, netns_unavailable

    server_keys, laptop_keys = folder / "server-keys", folder / "laptop-keys"
    server_pair = create_key_pair(server_keys, "server")
    add_allowed_key(server_keys / "allowed", create_key_pair(laptop_keys, "client").public, "bench")
    why = netns_unavailable()
    results, how = {}, {"netns": why is None, "why_not": why}
    base = ["--laptop", "--trials", str(args.trials), "--width", str(args.width), "--height", str(args.height),
            "--server-key", server_pair.public.decode(), "--keys-dir", str(laptop_keys)]
    serve_argv = [sys.executable, "-m", "soulx_live", "serve", "--port", "0",
                  "--set", f"remote.keys_dir={server_keys}", "--set", "metrics.enabled=false",
                  "--set", f"engine.lite.width={args.width}", "--set", f"engine.lite.height={args.height}",
                  "--set", "engine.lite.blinks=false", "--set", "engine.lite.idle_motion=false"]
    for shaping in ("none", "wan"):
        lab = NetnsLab() if why is None else None
        try:
            prefix: list[str] = []
            host = "127.0.0.1"
            extra: list[str] = []
            if lab is not None:
                lab.__enter__()
                lab.shape(**(WAN if shaping == "wan" else {"rate_mbit": None}))
                how[shaping] = lab.shaping + ("" if lab.netem or shaping == "none" else " + userspace delay/jitter/loss")
                host = SERVER_IP
                prefix = lab.exec_argv(lab.laptop_ns, [])
                extra = ["--veth", lab._veth_laptop]
                server_prefix = lab.exec_argv(lab.server_ns, [])
            else:
                how[shaping] = "loopback + userspace emulator" if shaping == "wan" else "loopback"
                server_prefix = []
            rt = folder / f"serve-{shaping}"
            server = subprocess.Popen([*server_prefix, *serve_argv, "--host", host, "--set", f"bus.runtime_dir={rt}"],
                                      stdout=subprocess.PIPE, stderr=open(folder / f"serve-{shaping}.log", "w"),
                                      text=True, env={**os.environ, "PYTHONPATH": str(CHECKOUT)})
            line = server.stdout.readline()  # type: ignore[union-attr]
            port = line.strip().rsplit(":", 1)[1]
            if shaping == "wan" and (lab is None or not lab.netem):
                extra.append("--emulate")
            try:
                results[shaping] = _child([*base, "--address", f"{host}:{port}", *extra], prefix)
            finally:
                server.send_signal(2)
                server.wait(30)
            results[shaping]["server"] = _server_counters((folder / f"serve-{shaping}.log").read_text())
        finally:
            if lab is not None:
                lab.__exit__()
    return results, how


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--laptop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--server-key", help=argparse.SUPPRESS)
    parser.add_argument("--keys-dir", help=argparse.SUPPRESS)
    parser.add_argument("--veth", help=argparse.SUPPRESS)
    parser.add_argument("--emulate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.laptop:
        print(json.dumps(laptop(args)), flush=True)
        return 0
    info = machine()
    folder = Path(tempfile.mkdtemp(prefix="sxrb-"))
    local = _child(["--laptop", "--trials", str(args.trials), "--width", str(args.width), "--height", str(args.height)], [])
    remote, how = remote_runs(args, folder)
    info["loadavg_after"] = os.getloadavg()
    rtt_ms = WAN["delay_ms"]
    summary = {}
    for shaping, res in remote.items():
        added = (res["speech_latency_s"]["median"] - local["speech_latency_s"]["median"]
                 if res["speech_latency_s"]["median"] is not None else None)
        budget = (rtt_ms / 1000 if shaping == "wan" else 0.0) + 0.080
        summary[shaping] = {
            "added_latency_s": added, "goal_added_latency_s": budget,
            "added_latency_ok": added is not None and added <= budget,
            "av_offset_ok": res["av_offset_s"]["max_abs"] is not None and res["av_offset_s"]["max_abs"] <= 1 / 25,
            "idle_mbit_s": res["bandwidth_down_mbit_s"]["idle"], "idle_psnr_db_min": res["idle_psnr_db"]["min"],
            "bitrate_psnr_ok": res["bandwidth_down_mbit_s"]["idle"] <= 4.0 and (res["idle_psnr_db"]["min"] or 0) >= 35.0,
            "reconnect_after_5s_cut_s": res["reconnect_after_cut_s"],
        }
    result = {
        "benchmark": "remote_bench", "device": info,
        "config": {"engine": "lite (still face: no blinks, no idle motion)", "width": args.width, "height": args.height,
                   "fps": 25, "sample_rate": SR, "trials": args.trials, "video_bitrate": 3_000_000,
                   "codec": "H.264 libx264 (PyAV) zerolatency veryfast, audio 16-bit PCM", "wan": WAN,
                   "link": how, "cut": f"{CUT_S:g} s (ip link set down on the laptop's veth; the emulator without netns)",
                   "note": "netem is used automatically when the kernel has it; this kernel's: see link"},
        "local": local, "remote": remote, "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
