"""Per-stage timings for the streaming loop, without stalling it.

``StageTimer`` is off by default (then every call is a no-op). When on:

* on CUDA it records a pair of CUDA events per stage on the current stream — no
  ``torch.cuda.synchronize()`` inside the loop; ``read()`` waits for the recorded events, and is
  meant to be called once per chunk (after the frames have been copied to the host anyway);
* on CPU it uses ``time.perf_counter`` (CPU ops are synchronous).

Stages may repeat within a chunk (their times are summed). ``read()`` returns milliseconds per
stage in first-seen order and resets the timer. Nothing is printed; callers log or report numbers
(ARCHITECTURE anti-pattern 6). Optional NVTX ranges mark the stages for Nsight Systems.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class StageTimer:
    def __init__(self, device: torch.device | str = "cpu", *, enabled: bool = False, nvtx: bool = False) -> None:
        self.device = torch.device(device)
        self.enabled = enabled
        self.cuda = enabled and self.device.type == "cuda"
        self.nvtx = nvtx and self.cuda
        self._marks: list[tuple[str, Any, Any]] = []  # (stage, start, end): events or perf_counter seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed work as ``name``."""
        if not self.enabled:
            yield
            return
        if self.nvtx:
            torch.cuda.nvtx.range_push(name)
        start = self._now()
        try:
            yield
        finally:
            self._marks.append((name, start, self._now()))
            if self.nvtx:
                torch.cuda.nvtx.range_pop()

    def _now(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def read(self) -> dict[str, float]:
        """Milliseconds per stage since the last ``read()`` (summed over repeats); resets the timer."""
        marks, self._marks = self._marks, []
        if not marks:
            return {}
        if self.cuda:
            for _, _, end in marks:  # the one wait per chunk (events on other streams included)
                end.synchronize()
        out: dict[str, float] = {}
        for name, start, end in marks:
            ms = start.elapsed_time(end) if self.cuda else (end - start) * 1e3
            out[name] = out.get(name, 0.0) + ms
        return out
