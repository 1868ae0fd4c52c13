"""The remote engine between two network namespaces joined by a shaped veth link (10 Mbit/s each way by tbf; 40 ms
RTT, 5 ms jitter, 1 % loss by netem, or by the userspace link emulator where the kernel has no netem), the server
on a non-loopback address with CURVE: `serve` and `run --remote` as separate processes, one per namespace."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from remote_support import (
    Process,
    best_correlation,
    make_keys,
    read_mp4,
    serve,
    settings,
    speech_after_silence,
    write_wav,
)


@pytest.mark.system("netns")
def test_session_over_a_shaped_link_between_namespaces(tmp_path: Path, shared_data: Path) -> None:
    from soulx_live.remote.netns import SERVER_IP, NetnsLab

    server_keys, laptop_keys, server_key, _ = make_keys(tmp_path)
    pcm = speech_after_silence(shared_data, 1.0, 4.0)
    audio = write_wav(tmp_path / "in.wav", pcm)
    with NetnsLab() as lab:
        lab.shape(rate_mbit=10, delay_ms=40, jitter_ms=5, loss_pct=1)
        assert lab.shaping in ("tbf", "netem+tbf")
        server, port = serve(tmp_path, f"remote.keys_dir={server_keys}", f"remote.host={SERVER_IP}",
                             prefix=tuple(lab.exec_argv(lab.server_ns, [])))
        emulator = None
        try:
            address = f"{SERVER_IP}:{port}"
            if not lab.netem:  # no netem in this kernel: delay, jitter and loss in userspace, in the laptop's namespace
                emulator = Process([sys.executable, "-m", "soulx_live.remote.emulator", "--target", address,
                                    "--rtt-ms", "40", "--jitter-ms", "5", "--loss-pct", "1"], tmp_path / "emu.log",
                                   tuple(lab.exec_argv(lab.laptop_ns, [])))
                emu_port = emulator.wait_line(r"listening on (\d+)").group(1)
                address = f"127.0.0.1:{emu_port}"
            laptop = Process(["run", "--remote", address, f"--server-key={server_key}", "--audio", str(audio),
                              "--record", str(tmp_path / "out.mp4"),
                              *settings("metrics.enabled=false", f"bus.runtime_dir={tmp_path / 'laptop-rt'}",
                                        f"remote.keys_dir={laptop_keys}")],
                             tmp_path / "laptop.log", tuple(lab.exec_argv(lab.laptop_ns, [])))
            assert laptop.proc.wait(90) == 0, laptop.text()[-3000:]
        finally:
            if emulator is not None:
                emulator.stop()
            server.stop()
    frames, got, rate = read_mp4(tmp_path / "out.mp4")
    assert abs(len(frames) / 25 - len(pcm) / 16000) < 0.5, (len(frames), len(pcm))
    if rate != 16000:
        from scipy.signal import resample_poly

        got = resample_poly(got, 16000, rate).astype(np.float32)
    peak, lag = best_correlation(pcm[16000:], got, 16000)
    assert peak > 0.8 and abs(lag - 1.0) < 0.25, (peak, lag)
    assert "CURVE" in server.text()
