"""A daemon with the Studio on (lite engine, pushed audio, any free ports) and an HTTP client for its page."""
from __future__ import annotations

import http.cookiejar
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from live_support import DaemonThread, ProbeSink, live_config, short_tmp, wait_for  # noqa: E402

from soulx_live.daemon import Daemon

__all__ = ["SHARED_DATA", "Page", "ProbeSink", "Reply", "probe_frames", "running_studio", "studio_config", "wait_for"]

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class Page:
    """A cookie-keeping HTTP client: what a browser does, without the browser."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, path: str, body: Any = None, *, raw: bytes | None = None, method: str | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with self.opener.open(req, timeout=20) as resp:
                return Reply(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read(), dict(exc.headers))


def studio_config(root: Path, **overrides: object) -> Any:
    base: dict[str, object] = {
        "audio.source": "push", "push.enabled": False, "studio.enabled": True, "studio.port": 0,
        "metrics.enabled": True, "metrics.port": 0, "engine.lite.width": 128, "engine.lite.height": 128,
        "supervisor.isolation": "thread",
    }
    base.update(overrides)
    return live_config(root, **base)


@contextmanager
def running_studio(sink_factory: Any = None, **overrides: object) -> Iterator[tuple[Daemon, str]]:
    """A daemon with the Studio; yields it and the one-time login URL (read from the daemon, as `run` prints it)."""
    with short_tmp() as root:
        said: list[str] = []
        extra = {} if sink_factory is None else {"sink_factory": sink_factory}
        daemon = Daemon(studio_config(root, **overrides), announce=said.append, **extra)
        thread = DaemonThread(daemon).start()
        try:
            wait_for(lambda: daemon.push_handler is not None and daemon.studio is not None and daemon.studio.url is not None,
                     30, "the session and the Studio")
            assert said and daemon.studio.url in said[0], said
            url = said[0].split()[1]
            yield daemon, url
        finally:
            thread.stop(20)


def probe_frames(path: Path) -> int:
    """Video frames in an mp4 (decoded with PyAV: the file is finished and playable)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
