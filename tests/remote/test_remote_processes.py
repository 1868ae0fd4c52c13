"""Acceptance: `soulx-live serve` and `soulx-live run --remote` as separate processes over a real CURVE link with
the real codec. What the laptop recorded is checked against what the server's engine renders (PSNR) and against
the speech that went up (cross-correlation); refusals and the plaintext policy against the real CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from remote_support import (
    best_correlation,
    cli,
    make_keys,
    psnr,
    read_mp4,
    run_remote,
    secrets_in,
    serve,
    speech_after_silence,
    still_face,
    write_wav,
)

SILENCE_S = 2.0
SPEECH_S = 4.0


def test_curve_session_end_to_end(tmp_path: Path, shared_data: Path) -> None:
    server_keys, laptop_keys, server_key, _ = make_keys(tmp_path)
    pcm = speech_after_silence(shared_data, SILENCE_S, SPEECH_S)
    audio = write_wav(tmp_path / "in.wav", pcm)
    server, port = serve(tmp_path, f"remote.keys_dir={server_keys}")
    try:
        laptop = run_remote(tmp_path, port, f"--server-key={server_key}", "--audio", str(audio),
                            "--record", str(tmp_path / "out.mp4"), "--set", f"remote.keys_dir={laptop_keys}")
        code = laptop.proc.wait(90)
        assert code == 0, laptop.text()[-3000:]
    finally:
        server.stop()
    assert "CURVE" in server.text() and "CURVE" in laptop.text()
    frames, got, rate = read_mp4(tmp_path / "out.mp4")
    assert abs(len(frames) / 25 - len(pcm) / 16000) < 0.5  # the whole input came back as video
    # the silent part: the server's still face, through H.264 down the link and the recorder's own H.264
    reference = still_face()
    quiet = frames[5: int(SILENCE_S * 25) - 5]
    scores = [psnr(f, reference) for f in quiet]
    assert min(scores) > 30.0, f"PSNR of the silent frames {min(scores):.1f} dB"
    # the speech came back down in sync: the recorded audio holds it, near where it was sent
    assert rate == 16000 or rate > 0
    sent = pcm[int(SILENCE_S * 16000):]
    if rate != 16000:
        from scipy.signal import resample_poly

        got = resample_poly(got, 16000, rate).astype(np.float32)
    peak, lag = best_correlation(sent, got, 16000)
    assert peak > 0.8, f"cross-correlation {peak:.2f}"
    assert abs(lag - SILENCE_S) < 0.25, f"speech at {lag:.2f} s, sent at {SILENCE_S} s"
    for secret in secrets_in(server_keys) + secrets_in(laptop_keys):
        assert secret not in server.text() and secret not in laptop.text()


def test_unknown_and_missing_client_keys_are_refused_and_logged(tmp_path: Path) -> None:
    server_keys, _, server_key, _ = make_keys(tmp_path)
    stranger = tmp_path / "stranger-keys"
    assert cli("keys", "--set", f"remote.keys_dir={stranger}").returncode == 0
    server, port = serve(tmp_path, f"remote.keys_dir={server_keys}")
    laptops = []
    try:
        unknown = run_remote(tmp_path, port, f"--server-key={server_key}", "--set", "audio.source=file",
                             "--audio", "/dev/null", "--set", f"remote.keys_dir={stranger}",
                             "--set", "remote.link_timeout_s=1", name="stranger")
        laptops.append(unknown)
        no_key = run_remote(tmp_path, port, "--audio", "/dev/null", name="nokey")
        laptops.append(no_key)
        assert unknown.proc.wait(60) != 0
        assert no_key.proc.wait(60) != 0
    finally:
        for laptop in laptops:
            laptop.stop(5)  # none may outlive a failed test
        server.stop()
    assert "no answer from the remote engine" in unknown.text()
    log = server.text()
    stranger_key = (stranger / "client.key").read_text().split('public-key = "')[1][:40]
    assert f"public key {stranger_key[:8]}... is not in the allow-list" in log
    assert "handshake_failed" in log  # the plaintext client never got past the CURVE handshake
    for secret in secrets_in(server_keys) + secrets_in(stranger):
        assert secret not in log and secret not in unknown.text()


def test_plaintext_to_a_network_address_is_refused_unless_configured(tmp_path: Path) -> None:
    keys = f"remote.keys_dir={tmp_path / 'none'}"
    refused = cli("serve", "--host", "0.0.0.0", "--port", "0", "--set", keys, "--set", "metrics.enabled=false")
    assert refused.returncode == 1 and "refusing to listen on 0.0.0.0 without encryption" in refused.stderr
    refused = cli("run", "--remote", "192.0.2.1:47900", "--audio", "/dev/null", "--set", keys,
                  "--set", "metrics.enabled=false", "--set", f"bus.runtime_dir={tmp_path / 'rt'}")
    assert refused.returncode == 1 and "refusing plaintext to 192.0.2.1" in refused.stderr
    server, _ = serve(tmp_path, keys, "remote.insecure_plaintext=true", "remote.host=0.0.0.0")
    try:
        assert "INSECURE" in server.text()
    finally:
        server.stop()
