"""Frame-timeline helpers shared by the in-process driver and the engine worker."""
from __future__ import annotations

import dataclasses

from engine.interface import FrameChunk

__all__ = ["shift_frames"]


def shift_frames(chunk: FrameChunk, offset: int, samples_per_frame: int) -> FrameChunk:
    """``chunk`` moved ``offset`` frames later on the frame timeline (its audio timestamp with it).

    A session that replaces another (a new avatar) starts counting its frames at 0; the sinks and the fed audio
    timeline continue where the previous session stopped, so its chunks are published ``offset`` frames on.
    """
    if offset == 0:
        return chunk
    return dataclasses.replace(chunk, first_frame=chunk.first_frame + offset,
                               audio_t0=chunk.audio_t0 + offset * samples_per_frame)
