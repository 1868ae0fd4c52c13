"""RecorderSink: H.264 + AAC mp4 whose video and audio durations agree, with monotonic timestamps."""
from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon_fakes import FakeEngine, decoded_lengths  # noqa: E402

from engine.interface import ChunkSpec, FrameChunk, SessionRequest  # noqa: E402
from plugins.base import FrameSink, SinkError  # noqa: E402
from plugins.recorder import RecorderSink, probe_media  # noqa: E402


def _session(frames_per_chunk: int = 7, width: int = 64, height: int = 48):
    engine = FakeEngine(frames_per_chunk=frames_per_chunk, width=width, height=height)
    session = engine.start_session(SessionRequest("s1"))
    return engine.spec, session


def _assert_synced(path: Path, spec: ChunkSpec, frames: int) -> None:
    info = probe_media(path)
    frame_s = 1 / float(spec.fps)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.frames == frames
    assert info.video_s == pytest.approx(frames * frame_s, abs=1e-6)
    assert abs(info.video_s - info.audio_s) <= frame_s
    n_decoded, fps, pts, samples, rate = decoded_lengths(path)
    assert n_decoded == frames and fps == pytest.approx(float(spec.fps))
    assert all(b > a for a, b in zip(pts, pts[1:])), "video pts must increase"
    assert abs(samples / rate - frames * frame_s) <= frame_s  # what a player actually decodes


@pytest.mark.parametrize("chunks", [1, 4, 11])
def test_durations_match_and_pts_monotonic(tmp_path: Path, chunks: int) -> None:
    spec, session = _session()
    sink = RecorderSink(tmp_path / "rec.mp4")
    assert isinstance(sink, FrameSink)
    sink.open(spec)
    for _ in range(chunks):
        session.push_audio(np.random.default_rng(0).uniform(-0.3, 0.3, spec.samples_per_chunk).astype(np.float32))
        sink.write(session.next_chunk())
    stats = sink.close()
    assert stats is not None and stats.frames == chunks * spec.frames_per_chunk
    assert stats.audio_samples == stats.frames * spec.samples_per_frame
    _assert_synced(tmp_path / "rec.mp4", spec, chunks * spec.frames_per_chunk)
    assert not (tmp_path / "rec.part.mp4").exists()


def test_frames_content_and_timeline(tmp_path: Path) -> None:
    import av

    spec, session = _session(frames_per_chunk=5)
    sink = RecorderSink(tmp_path / "rec.mp4", crf=0, preset="ultrafast")
    sink.open(spec)
    for _ in range(3):
        sink.write(session.next_chunk())
    sink.close()
    with av.open(str(tmp_path / "rec.mp4")) as c:
        levels = [int(np.median(f.to_ndarray(format="rgb24"))) for f in c.decode(video=0)]
    # FakeSession paints frame k with grey level k: the recorded order is the timeline order.
    assert levels == pytest.approx(list(range(15)), abs=2)


def test_short_or_long_audio_is_fitted_to_the_frames(tmp_path: Path) -> None:
    spec, session = _session(frames_per_chunk=5)
    sink = RecorderSink(tmp_path / "rec.mp4")
    sink.open(spec)
    a = session.next_chunk()
    sink.write(a)
    b = session.next_chunk()
    sink.write(FrameChunk(b.session_id, b.seq, b.first_frame, b.frames, b.audio[:100], b.audio_t0))  # short
    c = session.next_chunk()
    sink.write(FrameChunk(c.session_id, c.seq, c.first_frame, c.frames, np.zeros(spec.samples_per_chunk * 2, np.float32), c.audio_t0))
    stats = sink.close()
    assert stats is not None and stats.audio_samples == 15 * spec.samples_per_frame
    _assert_synced(tmp_path / "rec.mp4", spec, 15)


def test_dropped_chunks_are_filled_so_later_audio_stays_in_sync(tmp_path: Path) -> None:
    spec, session = _session(frames_per_chunk=5)
    sink = RecorderSink(tmp_path / "rec.mp4")
    sink.open(spec)
    for k in range(5):
        chunk = session.next_chunk()
        if k != 2:  # chunk 2 "dropped on the bus"
            sink.write(chunk)
    stats = sink.close()
    assert stats is not None and stats.frames == 25 and stats.filled_frames == 5
    _assert_synced(tmp_path / "rec.mp4", spec, 25)


def test_odd_frame_size_is_cropped_to_even(tmp_path: Path) -> None:
    spec, session = _session(width=65, height=49)
    sink = RecorderSink(tmp_path / "odd.mp4")
    sink.open(spec)
    sink.write(session.next_chunk())
    sink.close()
    info = probe_media(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (64, 48)


def test_errors_are_sink_errors(tmp_path: Path) -> None:
    spec = ChunkSpec(Fraction(25), 16000, 5, 48, 64)
    sink = RecorderSink(tmp_path / "x.mp4")
    with pytest.raises(SinkError, match="before open"):
        sink.write(FrameChunk("s", 0, 0, np.zeros((5, 48, 64, 3), np.uint8), np.zeros(3200, np.float32), 0))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SinkError, match="cannot create"):
        RecorderSink(blocker / "x.mp4").open(spec)
    assert sink.close() is None  # closing an unopened sink is harmless


def test_abort_leaves_no_file(tmp_path: Path) -> None:
    spec, session = _session()
    sink = RecorderSink(tmp_path / "rec.mp4")
    sink.open(spec)
    sink.write(session.next_chunk())
    sink.abort()
    assert list(tmp_path.iterdir()) == []
