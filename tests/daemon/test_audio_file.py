"""Audio input: any file -> 16 kHz mono float32; the paced file source; the intake ring."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon_fakes import tone, write_audio  # noqa: E402

from soulx_live.audio import AudioFileError, AudioRing, FileSource, decode_audio_file  # noqa: E402

SECONDS = 1.5
FREQ_HZ = 440.0


def _peak_hz(pcm: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.shape[0])))
    return float(np.fft.rfftfreq(pcm.shape[0], 1 / sample_rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("ext", [".wav", ".flac", ".mp3"])
@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_decode_any_rate_and_channels_to_16k_mono(tmp_path: Path, ext: str, rate: int) -> None:
    path = write_audio(tmp_path / f"tone{ext}", tone(SECONDS, rate, FREQ_HZ, channels=2), rate)
    pcm = decode_audio_file(path, 16000)
    assert pcm.dtype == np.float32 and pcm.ndim == 1 and pcm.flags.c_contiguous
    # mp3 adds encoder delay/padding (one 1152-sample frame at most each side); lossless formats are exact
    slack = 640 if ext != ".mp3" else int(16000 * 2 * 1152 / rate) + 640
    assert abs(pcm.shape[0] - SECONDS * 16000) <= slack
    assert _peak_hz(pcm, 16000) == pytest.approx(FREQ_HZ, abs=2.0)
    # stereo with the same signal in both channels averages to the same amplitude (0.4)
    assert 0.3 < float(np.max(np.abs(pcm))) < 0.5


def test_decode_keeps_the_rate_asked_for(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "t.wav", tone(1.0, 16000, 1000.0), 16000)
    pcm = decode_audio_file(path, 24000)
    assert abs(pcm.shape[0] - 24000) <= 1
    assert _peak_hz(pcm, 24000) == pytest.approx(1000.0, abs=2.0)


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="not found"):
        decode_audio_file(tmp_path / "nope.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 10)
    with pytest.raises(AudioFileError, match="junk.wav"):
        decode_audio_file(junk)


def test_file_source_blocks_and_realtime_pacing() -> None:
    pcm = np.arange(16000 * 0.5, dtype=np.float32)
    fast = FileSource(pcm, block_samples=640, realtime=False)
    blocks = list(fast.blocks())
    assert len(blocks) == 13 and blocks[-1].shape[0] == 8000 - 12 * 640
    assert np.array_equal(np.concatenate(blocks), pcm)
    paced = FileSource(pcm, block_samples=1600, realtime=True)
    t0 = time.monotonic()
    assert sum(b.shape[0] for b in paced.blocks()) == 8000
    assert 0.45 <= time.monotonic() - t0 < 3.0  # 0.5 s of audio takes about 0.5 s (loose: shared CI cores)


def test_file_source_stop_ends_iteration() -> None:
    source = FileSource(np.zeros(16000 * 10, np.float32), block_samples=1600, realtime=True)
    got = 0
    t0 = time.monotonic()
    for _ in source.blocks():
        got += 1
        if got == 2:
            source.stop()
    assert got == 2 and time.monotonic() - t0 < 1.0


def test_ring_fifo_and_wrap() -> None:
    ring = AudioRing(10)
    ring.write(np.arange(6, dtype=np.float32))
    assert np.array_equal(ring.read(4), [0, 1, 2, 3])
    ring.write(np.arange(6, 14, dtype=np.float32))  # wraps around the end of the buffer
    assert ring.available() == 10 and ring.dropped == 0
    assert np.array_equal(ring.read(100), np.arange(4, 14))
    assert ring.available() == 0 and ring.read(5).shape == (0,)


def test_ring_overwrites_oldest_and_counts() -> None:
    ring = AudioRing(8)
    assert ring.write(np.arange(5, dtype=np.float32)) == 0
    assert ring.write(np.arange(5, 10, dtype=np.float32)) == 2  # 0 and 1 are overwritten
    assert ring.dropped == 2
    assert np.array_equal(ring.read(8), np.arange(2, 10))
    assert ring.write(np.arange(20, dtype=np.float32)) == 12  # larger than the ring: only the newest 8 stay
    assert ring.dropped == 14 and ring.written == 30
    assert np.array_equal(ring.read(8), np.arange(12, 20))


def test_ring_is_thread_safe() -> None:
    import threading

    ring = AudioRing(1 << 16)
    total = 200 * 1000
    out: list[np.ndarray] = []

    def reader() -> None:
        got = 0
        while got < total:
            block = ring.read(777)
            got += block.shape[0]
            out.append(block)

    t = threading.Thread(target=reader)
    t.start()
    for k in range(200):
        while ring.capacity - ring.available() < 1000:  # the writer waits, so nothing may be lost
            time.sleep(0.0005)
        ring.write(np.arange(k * 1000, (k + 1) * 1000, dtype=np.float32))
    t.join(10)
    assert ring.dropped == 0
    assert np.array_equal(np.concatenate(out), np.arange(total, dtype=np.float32))
