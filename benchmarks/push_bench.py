"""Push API benchmark: request round-trip latency over ZeroMQ (ipc) and HTTP/WebSocket (127.0.0.1),
and event delivery latency, against a handler that does nothing (so the figures are the API's own cost:
framing, token check, PCM conversion/resampling, the worker hand-off, the reply).

Round trip = client call to reply decoded, one request at a time, after ``WARMUP`` unmeasured requests.
Event latency = ``publish_event`` to the subscriber's decoded event (same host, same clock).
Run: ``python benchmarks/push_bench.py [--n 300]``; prints a table and writes
``benchmarks/results/push_bench.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from soulx_live.config import load_config
from soulx_live.push.client import PushClient
from soulx_live.push.handler import PushReceipt
from soulx_live.push.server import PushServer
from soulx_live.push.utterances import SpeechEvent

WARMUP = 20
RESULTS = Path(__file__).parent / "results" / "push_bench.json"


class NullHandler:
    sample_rate = 16000

    def push_pcm(self, pcm: np.ndarray, *, utterance_id: str) -> PushReceipt:
        return PushReceipt(utterance_id, 0, int(pcm.shape[0]))

    def say(self, text: str, *, voice: str | None, utterance_id: str) -> PushReceipt:
        return PushReceipt(utterance_id, 0, 16000)

    def interrupt(self) -> int:
        return 1

    def status(self) -> dict[str, object]:
        return {"state": "running"}


def _stats(samples_s: list[float]) -> dict[str, float]:
    ms = np.array(samples_s) * 1000
    return {"n": int(ms.size), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "mean_ms": round(float(ms.mean()), 3),
            "max_ms": round(float(ms.max()), 3)}


def _time(fn: Callable[[], object], n: int) -> dict[str, float]:
    for _ in range(WARMUP):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return _stats(out)


def _pcm(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)


def bench_zmq(server: PushServer, config: object, n: int) -> dict[str, dict[str, float]]:
    res: dict[str, dict[str, float]] = {}
    with PushClient(config) as c:  # type: ignore[arg-type]
        res["zmq status"] = _time(c.status, n)
        res["zmq interrupt"] = _time(c.interrupt, n)
        res["zmq say (null TTS)"] = _time(lambda: c.say("hello"), n)
        p20 = _pcm(16000, 0.02)
        res["zmq push_pcm 20 ms s16 16 kHz"] = _time(lambda: c.push_pcm(p20, 16000), n)
        q20 = _pcm(24000, 0.02)
        res["zmq push_pcm 20 ms s16 24 kHz (resampled)"] = _time(lambda: c.push_pcm(q20, 24000), n)
        q1 = _pcm(48000, 1.0)
        res["zmq push_pcm 1 s s16 48 kHz (resampled)"] = _time(lambda: c.push_pcm(q1, 48000), max(n // 4, 20))
        # events: publish -> received by a SUB
        c.subscribe()
        lat: list[float] = []
        for i in range(n):
            t0 = time.perf_counter()
            server.publish_event(SpeechEvent("started", f"b{i}", 0.0, 0.0))
            next(iter(c.events(timeout_s=2.0)))
            lat.append(time.perf_counter() - t0)
        res["zmq event publish->subscriber"] = _stats(lat)
    return res


def bench_http(server: PushServer, n: int) -> dict[str, dict[str, float]]:
    import aiohttp

    async def go() -> dict[str, dict[str, float]]:
        res: dict[str, dict[str, float]] = {}
        auth = {"Authorization": f"Bearer {server.token}"}
        body = _pcm(24000, 0.02).tobytes()
        async with aiohttp.ClientSession(headers=auth) as s:
            async def timed(call: Callable[[], object]) -> dict[str, float]:
                out = []
                for i in range(WARMUP + n):
                    t0 = time.perf_counter()
                    await call()  # type: ignore[misc]
                    if i >= WARMUP:
                        out.append(time.perf_counter() - t0)
                return _stats(out)

            async def status() -> None:
                async with s.get(server.http_url + "/v1/status") as r:
                    await r.json()

            async def audio() -> None:
                async with s.post(server.http_url + "/v1/audio?rate=24000", data=body) as r:
                    assert r.status == 200
                    await r.json()

            async def say() -> None:
                async with s.post(server.http_url + "/v1/say", json={"text": "hello"}) as r:
                    await r.json()

            res["http GET /v1/status"] = await timed(status)
            res["http POST /v1/say (null TTS)"] = await timed(say)
            res["http POST /v1/audio 20 ms 24 kHz"] = await timed(audio)
            async with s.ws_connect(server.http_url + "/v1/events") as ws:
                await ws.send_str('{"type": "format", "format": "s16le", "rate": 24000, "channels": 1}')

                async def ws_pcm() -> None:
                    await ws.send_bytes(body)
                    await ws.receive()

                res["websocket binary PCM 20 ms 24 kHz"] = await timed(ws_pcm)
                lat = []
                for i in range(n):
                    t0 = time.perf_counter()
                    server.publish_event(SpeechEvent("started", f"w{i}", 0.0, 0.0))
                    await ws.receive()
                    lat.append(time.perf_counter() - t0)
                res["websocket event publish->client"] = _stats(lat)
        return res

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="measured requests per row")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rt = Path(tempfile.mkdtemp(prefix="pushb")) / "rt"
    config = load_config(env={}, overrides={"bus.runtime_dir": str(rt), "push.http_enabled": True})
    config = config.model_copy(update={"push": config.push.model_copy(update={"http_port": 0})})
    with PushServer(config, NullHandler()) as server:
        rows = {**bench_zmq(server, config, args.n), **bench_http(server, args.n)}
    width = max(map(len, rows))
    print(f"{'request':<{width}}  {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'max ms':>8}")
    for name, r in rows.items():
        print(f"{name:<{width}}  {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['mean_ms']:>8.3f} {r['max_ms']:>8.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "push_bench", "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "note": "null handler: the push API's own cost; one request at a time; ipc + 127.0.0.1",
        "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
