"""A misbehaving engine worker for the supervisor tests: ``python fake_worker.py MODE`` (JSON on stdin).

Speaks the worker side of the events socket like ``soulx_live.worker`` but with a failure knob:

- ``hang``: Ready, a few heartbeats, then alive but silent forever (a stuck generation loop);
- ``stall``: Ready, then heartbeats forever that report queued audio but no chunk made;
- ``crash``: Ready, then exits with code 1;
- ``never_ready``: alive, never sends Ready (a load that never finishes);
- ``config``: a fatal EngineError of kind ``config`` and exit code 3;
- ``deaf``: Ready and heartbeats, but ignores Shutdown and SIGTERM (must be SIGKILLed).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import zmq

from soulx_live import protocol as p

SPEC = p.SpecInfo(fps_num=25, fps_den=1, sample_rate=16000, frames_per_chunk=5, height=64, width=64)


def heartbeat(events: zmq.Socket, depth: int = 0) -> None:
    events.send(p.encode(p.Heartbeat(mono_ns=time.monotonic_ns(), chunks_done=0, queue_depth=depth)))


def main(mode: str) -> int:
    options = json.loads(sys.stdin.read())["options"]
    events = zmq.Context.instance().socket(zmq.PUSH)
    events.setsockopt(zmq.LINGER, 1000)
    events.connect(options["events"])
    if mode == "config":
        events.send(p.encode(p.EngineError(kind="config", message="engine.weights_dir is not set", fatal=True)))
        events.close()
        return 3
    if mode == "deaf":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode != "never_ready":
        events.send(p.encode(p.Ready(engine_id=f"fake-{mode}-g{options['generation']}", world_size=1, model="fake", spec=SPEC)))
    for _ in range(3):
        heartbeat(events)
        time.sleep(0.05)
    if mode == "crash":
        events.close()
        return 1
    while os.getppid() == options["parent_pid"]:  # never outlive the test process
        if mode in ("stall", "deaf"):
            heartbeat(events, depth=3 if mode == "stall" else 0)
        time.sleep(0.05)
    return 4


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
