"""The frame bus over real ZeroMQ (ipc:// in a private temporary runtime dir)."""
from __future__ import annotations

import logging
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import msgspec
import numpy as np
import pytest
import zmq

from engine.interface import ChunkSpec, FrameChunk
from soulx_live import protocol as p
from soulx_live.bus import FramePublisher, FrameSubscriber
from soulx_live.config import BusConfig
from soulx_live.runtime_dir import endpoint

RECV_MS = 5000  # generous: only reached when something is broken


@pytest.fixture
def bus_cfg() -> Iterator[BusConfig]:
    # short path on purpose: ipc socket paths are limited to 107 bytes, pytest's tmp_path can be longer
    root = Path(tempfile.mkdtemp(prefix="sxbus-"))
    yield BusConfig(runtime_dir=root / "rt")
    shutil.rmtree(root, ignore_errors=True)


def make_chunk(spec: ChunkSpec, seq: int, rng: np.random.Generator | None = None, session: str = "s") -> FrameChunk:
    n = spec.frames_per_chunk
    if rng is None:  # cheap, content irrelevant
        frames = np.zeros((n, spec.height, spec.width, 3), np.uint8)
        audio = np.zeros(n * spec.samples_per_frame, np.float32)
    else:
        frames = rng.integers(0, 256, (n, spec.height, spec.width, 3), dtype=np.uint8)
        audio = rng.standard_normal(n * spec.samples_per_frame).astype(np.float32)
    return FrameChunk(session, seq, seq * n, frames, audio, seq * n * spec.samples_per_frame)


def test_runtime_dir_is_private(bus_cfg: BusConfig) -> None:
    address = endpoint("frames", bus_cfg)
    assert address == f"ipc://{bus_cfg.runtime_dir}/frames.ipc"
    assert stat.S_IMODE(bus_cfg.runtime_dir.stat().st_mode) == 0o700


def test_frames_and_audio_round_trip_bit_exact(bus_cfg: BusConfig) -> None:
    spec = ChunkSpec(Fraction(24000, 1001), 48000, 3, 36, 52)  # odd sizes, NTSC-film fps
    rng = np.random.default_rng(0)
    with FramePublisher(endpoint("frames", bus_cfg)) as pub, FrameSubscriber(endpoint("frames", bus_cfg)) as sub:
        assert pub.wait_for_subscribers(1, timeout_s=10)
        for seq in range(4):
            sent = make_chunk(spec, seq, rng)
            assert pub.publish(sent, spec)
            got = sub.recv(RECV_MS)
            assert isinstance(got, FrameChunk)
            assert (got.session_id, got.seq, got.first_frame, got.audio_t0) == (sent.session_id, seq, sent.first_frame, sent.audio_t0)
            assert got.audio_t0 == got.first_frame * spec.samples_per_frame  # one timeline, counted in samples
            np.testing.assert_array_equal(got.frames, sent.frames)
            np.testing.assert_array_equal(got.audio, sent.audio)
            assert got.frames.dtype == np.uint8 and got.audio.dtype == np.float32
            assert not got.frames.flags.writeable and not sent.frames.flags.writeable
        assert sub.spec == spec
        assert sub.last_header is not None and sub.last_header.sent_mono_ns <= time.monotonic_ns()
        assert pub.publish_end("s", 11)
        assert sub.recv(RECV_MS) == p.EndOfStream(session_id="s", last_frame=11)
        assert (sub.stats.received, sub.stats.frames, sub.stats.dropped_gaps, sub.stats.malformed) == (4, 12, 0, 0)
        assert pub.stats.published == 4 and pub.stats.frames == 12


def test_status_topic_is_opt_in(bus_cfg: BusConfig) -> None:
    address = endpoint("frames", bus_cfg)
    with FramePublisher(address) as pub, FrameSubscriber(address, topics=(p.TOPIC_FRAMES, p.TOPIC_STATUS)) as both, \
            FrameSubscriber(address) as frames_only:
        assert pub.wait_for_subscribers(2, timeout_s=10)
        pub.publish_status("restarting", detail="heartbeat lost")
        pub.publish_end("s", 0)
        assert both.recv(RECV_MS) == p.EngineStatus(state="restarting", detail="heartbeat lost")
        assert isinstance(both.recv(RECV_MS), p.EndOfStream)
        assert isinstance(frames_only.recv(RECV_MS), p.EndOfStream)


def test_slow_subscriber_drops_whole_chunks_and_never_blocks_the_publisher(bus_cfg: BusConfig) -> None:
    """A subscriber asleep in a thread: every publish completes while it sleeps; afterwards it finds at
    most 2*hwm chunks queued (+2 slack for the I/O threads; ~1 MB chunks, so the ~200 KiB kernel buffer
    holds none), sees the rest as seq gaps, and gets the next fresh chunk at once."""
    hwm, total = 2, 300
    spec = ChunkSpec(Fraction(25), 16000, 5, 256, 256)  # 983 040 pixel bytes per chunk
    chunks = [make_chunk(spec, seq) for seq in range(total + 1)]
    address = endpoint("frames", bus_cfg)
    asleep, woke = threading.Event(), threading.Event()
    received: list[int] = []

    with FramePublisher(address, hwm_chunks=hwm) as pub, FrameSubscriber(address, hwm_chunks=hwm) as sub:
        assert pub.wait_for_subscribers(1, timeout_s=10)

        def slow_reader() -> None:
            first = sub.recv(RECV_MS)
            received.append(first.seq)
            asleep.set()
            time.sleep(3.0)  # far longer than 300 non-blocking sends take (milliseconds)
            woke.set()

        reader = threading.Thread(target=slow_reader)
        reader.start()
        assert pub.publish(chunks[0], spec)
        assert asleep.wait(RECV_MS / 1000)
        completed_while_asleep = 0
        for chunk in chunks[1:total]:
            pub.publish(chunk, spec)
            if not woke.is_set():
                completed_while_asleep += 1
        reader.join()
        assert completed_while_asleep == total - 1

        while (got := sub.recv(200)) is not None:
            received.append(got.seq)
        assert 1 <= len(received) - 1 <= 2 * hwm + 2, received
        assert received == sorted(received)
        assert pub.publish(chunks[total], spec)  # the queue is not clogged: a fresh chunk arrives at once
        fresh = sub.recv(RECV_MS)
        assert fresh is not None and fresh.seq == total
        assert sub.stats.received + sub.stats.dropped_gaps == total + 1  # every chunk is accounted for


def test_one_slow_subscriber_does_not_starve_another(bus_cfg: BusConfig) -> None:
    """Lock-step with a reading subscriber while another never reads: the reader loses nothing."""
    hwm, total = 2, 40
    spec = ChunkSpec(Fraction(25), 16000, 5, 256, 256)
    address = endpoint("frames", bus_cfg)
    with FramePublisher(address, hwm_chunks=hwm) as pub, FrameSubscriber(address, hwm_chunks=hwm) as reader, \
            FrameSubscriber(address, hwm_chunks=hwm) as stalled:
        assert pub.wait_for_subscribers(2, timeout_s=10)
        for seq in range(total):
            assert pub.publish(make_chunk(spec, seq), spec)
            got = reader.recv(RECV_MS)
            assert got is not None and got.seq == seq
        assert reader.stats.dropped_gaps == 0
        backlog = []
        while (got := stalled.recv(200)) is not None:
            backlog.append(got.seq)
        assert 1 <= len(backlog) <= 2 * hwm + 2, backlog


def test_bad_messages_are_counted_and_skipped(bus_cfg: BusConfig, caplog: pytest.LogCaptureFixture) -> None:
    """A raw socket sends every kind of bad message; the subscriber logs, counts and keeps working."""
    spec = ChunkSpec(Fraction(25), 16000, 2, 4, 6)
    good = make_chunk(spec, 0, np.random.default_rng(1))
    header = dict(session_id="s", seq=0, first_frame=0, n=2, h=4, w=6, fps_num=25, fps_den=1,
                  sample_rate=16000, audio_t0=0, audio_samples=1280)
    pixels, audio = good.frames.tobytes(), good.audio.tobytes()
    valid = p.encode(p.FrameHeader(**header))
    bad_messages = [
        ([p.TOPIC_FRAMES, p.encode(p.FrameHeader(**header, v=0)), pixels, audio], "version"),
        ([p.TOPIC_FRAMES, msgspec.msgpack.encode({"type": "FrameHeader", "v": 2, "layout": "new"})], "version"),
        ([p.TOPIC_FRAMES, b"\x00garbage\xff"], "malformed"),
        ([p.TOPIC_FRAMES], "malformed"),  # truncated: no header
        ([p.TOPIC_FRAMES, valid, pixels], "malformed"),  # truncated: no audio
        ([p.TOPIC_FRAMES, valid, pixels[:-1], audio], "malformed"),  # short pixels
        ([p.TOPIC_FRAMES, valid, pixels, audio + b"\0\0\0\0"], "malformed"),  # audio longer than the header says
        ([p.TOPIC_FRAMES, p.encode(p.FrameHeader(**{**header, "n": 0})), b"", audio], "malformed"),
        ([p.TOPIC_FRAMES, p.encode(p.Heartbeat(mono_ns=1, chunks_done=0))], "malformed"),  # wrong message type
        ([p.TOPIC_FRAMES, msgspec.msgpack.encode({"type": "Teleport", "v": 1})], "malformed"),
    ]
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.XPUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.bind(endpoint("frames", bus_cfg))
    try:
        with FrameSubscriber(endpoint("frames", bus_cfg)) as sub:
            assert raw.poll(RECV_MS) and raw.recv() == b"\x01" + p.TOPIC_FRAMES  # subscription arrived
            for parts, _ in bad_messages:
                raw.send_multipart(parts)
            raw.send_multipart([p.TOPIC_FRAMES, valid, pixels, audio])
            with caplog.at_level(logging.ERROR, logger="soulx_live.bus"):
                got = sub.recv(RECV_MS)
            assert isinstance(got, FrameChunk)
            np.testing.assert_array_equal(got.frames, good.frames)
            np.testing.assert_array_equal(got.audio, good.audio)
            versions = sum(1 for _, kind in bad_messages if kind == "version")
            assert sub.stats.unknown_version == versions
            assert sub.stats.malformed == len(bad_messages) - versions
            assert sub.stats.received == 1
            assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == len(bad_messages)
            assert "version 0" in caplog.text and f"version {p.SCHEMA_VERSION}" in caplog.text
    finally:
        raw.close(linger=0)


def test_recv_times_out_with_none(bus_cfg: BusConfig) -> None:
    with FramePublisher(endpoint("frames", bus_cfg)), FrameSubscriber(endpoint("frames", bus_cfg)) as sub:
        assert sub.recv(0) is None
        assert sub.recv(50) is None


def test_publish_rejects_a_chunk_that_breaks_the_contract(bus_cfg: BusConfig) -> None:
    spec = ChunkSpec(Fraction(25), 16000, 2, 4, 4)
    with FramePublisher(endpoint("frames", bus_cfg)) as pub:
        good = make_chunk(spec, 0)
        with pytest.raises(ValueError, match="audio must be 1280"):
            pub.publish(FrameChunk("s", 0, 0, good.frames, good.audio[:-1], 0), spec)
        with pytest.raises(ValueError, match="uint8"):
            pub.publish(FrameChunk("s", 0, 0, good.frames.astype(np.float32), good.audio, 0), spec)
        pub.publish(good, spec)
        with pytest.raises(ValueError):  # zero copy: writing into a published buffer must fail loudly
            good.frames[0, 0, 0, 0] = 1


def test_tcp_transport_round_trip() -> None:
    spec = ChunkSpec(Fraction(25), 16000, 2, 8, 8)
    with FramePublisher("tcp://127.0.0.1:*") as pub, FrameSubscriber(pub.endpoint) as sub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:") and not pub.endpoint.endswith("*")
        assert pub.wait_for_subscribers(1, timeout_s=10)
        sent = make_chunk(spec, 0, np.random.default_rng(2))
        pub.publish(sent, spec)
        got = sub.recv(RECV_MS)
        assert isinstance(got, FrameChunk)
        np.testing.assert_array_equal(got.frames, sent.frames)
