"""``audio.source=script``: a timed script spoken by the configured TTS, as a live audio source.

Every line is synthesised up front (espeak-ng: ~10 ms a line), laid on one timeline with silence between lines,
and played like :class:`~soulx_live.audio.file_source.FileSource` (paced in real time by default). Just before a
line's first block is yielded, ``on_phonemes`` gets its phoneme spans in samples of this source's timeline (the
daemon forwards them to the engine session, where the lite renderer shapes the lips with them).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soulx_live.tts.base import Synthesizer, TtsError, Utterance
from soulx_live.tts.script import ScriptLine, read_script

__all__ = ["ScheduledLine", "ScriptSource", "schedule"]

log = logging.getLogger(__name__)

PhonemeCallback = Callable[[list[tuple[int, int, str]]], None]


@dataclass(frozen=True)
class ScheduledLine:
    line: ScriptLine
    start_sample: int
    utterance: Utterance


def schedule(lines: list[ScriptLine], tts: Synthesizer, sample_rate: int) -> list[ScheduledLine]:
    """Synthesise each line and place it: absolute times where given, never overlapping the previous line."""
    out: list[ScheduledLine] = []
    end = 0
    for line in lines:
        try:
            utt = tts.synthesize(line.text, line.voice)
        except TtsError as exc:
            raise TtsError(f"script line {line.line_no}: {exc}") from exc
        if utt.sample_rate != sample_rate:
            raise TtsError(f"the synthesizer returned {utt.sample_rate} Hz, the session runs at {sample_rate} Hz")
        wanted = round(line.at_s * sample_rate) if line.at_s is not None else end + round(line.after_s * sample_rate)
        start = max(wanted, end)
        if line.at_s is not None and wanted < end:
            log.warning("script line %d at %.1f s starts at %.1f s, when the previous line ends", line.line_no,
                        line.at_s, end / sample_rate)
        out.append(ScheduledLine(line, start, utt))
        end = start + utt.pcm.shape[0]
    return out


class ScriptSource:
    """Blocks of ``block_samples`` float32 samples of the scheduled script; ``loop`` starts it again at the end."""

    def __init__(self, path: str | Path, tts: Synthesizer, *, sample_rate: int = 16000, block_samples: int = 640,
                 realtime: bool = True, loop: bool = False) -> None:
        self.name = f"script {path}"
        self.sample_rate = sample_rate
        self.block_samples = block_samples
        self.realtime = realtime
        self.loop = loop
        self.lines = schedule(read_script(Path(path)), tts, sample_rate)
        self.total_samples = self.lines[-1].start_sample + self.lines[-1].utterance.pcm.shape[0]
        self.on_phonemes: PhonemeCallback | None = None
        self._stop = threading.Event()

    @property
    def duration_s(self) -> float:
        return math.inf if self.loop else self.total_samples / self.sample_rate

    def stop(self) -> None:
        self._stop.set()

    def render(self) -> np.ndarray:
        """The whole script as one array (one pass, without pacing)."""
        pcm = np.zeros(self.total_samples, np.float32)
        for item in self.lines:
            pcm[item.start_sample:item.start_sample + item.utterance.pcm.shape[0]] = item.utterance.pcm
        return pcm

    def blocks(self) -> Iterator[np.ndarray]:
        pcm = self.render()
        t0, offset = time.monotonic(), 0  # offset: samples of earlier passes (loop)
        while True:
            pending = list(self.lines)
            for start in range(0, self.total_samples, self.block_samples):
                block = pcm[start:start + self.block_samples]
                while pending and pending[0].start_sample < start + block.shape[0]:
                    item = pending.pop(0)
                    if self.on_phonemes is not None and item.utterance.phonemes:
                        self.on_phonemes(item.utterance.spans_in_samples(offset + item.start_sample))
                if self.realtime:
                    due = t0 + (offset + start + block.shape[0]) / self.sample_rate
                    if self._stop.wait(max(0.0, due - time.monotonic())):
                        return
                elif self._stop.is_set():
                    return
                yield block
            if not self.loop:
                return
            offset += self.total_samples

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.blocks()
