"""Shared by tests/push: a recording fake PushHandler and a config with a private short runtime dir."""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np

from soulx_live.config import SoulxConfig, load_config
from soulx_live.push.handler import PushReceipt


class FakeHandler:
    """Places utterances back to back on a 16 kHz timeline and records every call."""

    sample_rate = 16000

    def __init__(self) -> None:
        self.pcm: list[tuple[str, np.ndarray]] = []
        self.said: list[tuple[str, str | None, str]] = []
        self.interrupts = 0
        self.position = 0
        self.lock = threading.Lock()

    def _place(self, uid: str, n: int) -> PushReceipt:
        with self.lock:
            start, self.position = self.position, self.position + n
        return PushReceipt(utterance_id=uid, start_sample=start, n_samples=n)

    def push_pcm(self, pcm: np.ndarray, *, utterance_id: str) -> PushReceipt:
        assert pcm.dtype == np.float32 and pcm.ndim == 1
        self.pcm.append((utterance_id, pcm))
        return self._place(utterance_id, int(pcm.shape[0]))

    def say(self, text: str, *, voice: str | None, utterance_id: str) -> PushReceipt:
        if text == "boom":
            raise ValueError("the TTS cannot say boom")
        self.said.append((text, voice, utterance_id))
        return self._place(utterance_id, 16000 * len(text.split()) // 4)

    def interrupt(self) -> int:
        self.interrupts += 1
        return self.interrupts

    def status(self) -> dict[str, object]:
        return {"state": "running", "queued_s": np.float32(1.5), "pushed": len(self.pcm)}

    @property
    def calls(self) -> int:
        return len(self.pcm) + len(self.said) + self.interrupts


def make_config(tmp: Path | None = None, *, http: bool = False, token: str | None = None,
                max_packet_s: float = 30.0, transport: str = "ipc") -> SoulxConfig:
    """A config whose runtime dir is a fresh short folder (ipc paths stay under 107 bytes)."""
    rt = Path(tempfile.mkdtemp(prefix="sxp")) / "rt"
    overrides: dict[str, object] = {"bus.runtime_dir": str(rt), "push.http_enabled": http,
                                    "push.max_packet_s": max_packet_s, "bus.transport": transport}
    if token is not None:
        overrides["push.token"] = token
    config = load_config(env={}, overrides=overrides)
    # port 0 (any free port) for tests; the config field itself starts at 1
    return config.model_copy(update={"push": config.push.model_copy(update={"http_port": 0})})


def tone(rate: int, seconds: float, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)
