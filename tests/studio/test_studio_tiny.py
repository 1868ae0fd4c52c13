"""The Studio with the tiny-random FlashTalk engine (the diffusion path, on the CPU) in its worker process: the
preview streams its frames with their audio, the health figures come from its chunks, typed speech is rendered,
and a new avatar starts a new session in the worker."""
from __future__ import annotations

import asyncio
import json
import struct

import cv2
import numpy as np
import pytest
from studio_support import Page, running_studio, wait_for

pytest.importorskip("torch")

TINY = {"engine.kind": "flashtalk", "engine.flashtalk.preset": "tiny-random", "engine.drift.enabled": False,
        "supervisor.isolation": "process", "supervisor.heartbeat_timeout_s": 5.0, "supervisor.init_timeout_s": 60.0,
        "supervisor.shutdown_grace_s": 10.0}


def _face_png() -> bytes:
    from engine.lite.engine import LiteConfig, LiteEngine

    reference = LiteEngine(LiteConfig(width=256, height=256))._default_renderer().reference
    return cv2.imencode(".png", cv2.cvtColor(np.asarray(reference), cv2.COLOR_RGB2BGR))[1].tobytes()


def test_studio_with_the_tiny_diffusion_engine() -> None:
    import aiohttp

    with running_studio(**TINY) as (daemon, url):
        base, path = url.split("/login", 1)
        page = Page(base)
        assert page.request("/login" + path).status == 200
        wait_for(lambda: daemon.status().chunks_done > 2, 90, "chunks from the tiny engine")
        spec = daemon.spec
        assert spec is not None and daemon.isolation == "process"
        cookie = {c.name: c.value for c in page.jar}

        async def chunks(n: int) -> list[tuple[dict, bytes]]:
            out = []
            async with aiohttp.ClientSession(cookies=cookie) as session, session.ws_connect(base + "/api/live") as ws:
                while len(out) < n:
                    msg = await asyncio.wait_for(ws.receive(), 30)
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        size = struct.unpack("<I", msg.data[:4])[0]
                        out.append((json.loads(msg.data[4:4 + size]), msg.data[4 + size:]))
            return out

        for head, body in asyncio.run(chunks(2)):
            first = cv2.imdecode(np.frombuffer(body[:head["sizes"][0]], np.uint8), cv2.IMREAD_COLOR)
            assert first.shape == (spec.height, spec.width, 3)
            assert len(body) - sum(head["sizes"]) == 2 * len(head["sizes"]) * spec.samples_per_frame
        health = page.request("/api/health").json()
        assert health["chunk_compute_s"] > 0 and health["chunk_budget_s"] == pytest.approx(spec.chunk_duration_s)
        assert page.request("/api/say", {"text": "Tiny engine speaking."}).status == 200
        wait_for(lambda: daemon.push_handler.status()["played_s"] > 0.5, 60, "the speech to be rendered")
        session = daemon.status().session_id
        reply = page.request("/api/avatar", raw=_face_png(), headers={"Content-Type": "application/octet-stream"})
        assert reply.status == 200, reply.body
        wait_for(lambda: daemon.status().session_id != session, 10, "the new session")
        done = daemon.status().chunks_done
        wait_for(lambda: daemon.status().chunks_done > done + 2, 60, "chunks of the new session")
        assert daemon.status().state == "running"
