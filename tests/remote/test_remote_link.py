"""The remote link against a real `soulx-live serve` process, with the laptop's daemon in this process (so its
sinks can be probed frame by frame): decoded vs sent frames, malformed input, barge-in, a 5 s link cut and a
server restart, through the real sockets and codec."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import zmq
from remote_support import (
    FrameProbe,
    laptop_config,
    psnr,
    serve,
    still_face,
    wait_for,
    write_wav,
)

from soulx_live.daemon import Daemon
from soulx_live.remote import wire as w
from soulx_live.remote.emulator import LinkEmulator

SR = 16000


def _daemon(tmp: Path, port: int, seconds: float, **remote: object) -> tuple[Daemon, FrameProbe, threading.Thread]:
    audio = write_wav(tmp / "silence.wav", np.zeros(int(seconds * SR), np.float32))
    probe = FrameProbe()
    daemon = Daemon(laptop_config(tmp, port, audio, **remote), sink_factory=lambda cfg: [probe])  # type: ignore[arg-type]
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return daemon, probe, thread


def _stop(daemon: Daemon, thread: threading.Thread) -> None:
    daemon.request_stop("test over")
    thread.join(20)
    assert not thread.is_alive()


def test_decoded_frames_match_what_the_server_sent(tmp_path: Path) -> None:
    server, port = serve(tmp_path)
    try:
        daemon, probe, thread = _daemon(tmp_path, port, 6.0)
        wait_for(lambda: len(probe.writes) >= 30, 30, "30 chunks at the sink")
        _stop(daemon, thread)
    finally:
        server.stop()
    reference = still_face()
    scores = [psnr(frame, reference) for _, _, _, _, frame, _ in probe.writes[5:30]]
    assert min(scores) >= 35.0, f"decoded vs sent: {min(scores):.1f} dB"
    assert daemon.isolation == "remote" and daemon.status().state in ("stopped", "running")


def _raw(port: int) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def _reply(sock: zmq.Socket, kind: type, timeout_s: float = 10.0) -> w.WireMessage:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(100):
            msg, _ = w.parse(sock.recv_multipart(), "down")
            if isinstance(msg, kind):
                return msg
    raise AssertionError(f"no {kind.__name__} from the server")


def test_malformed_input_is_dropped_counted_and_named(tmp_path: Path) -> None:
    import msgspec

    server, port = serve(tmp_path)
    try:
        sock = _raw(port)
        bad = [
            [b"\xc1not msgpack"],
            [msgspec.msgpack.encode({"type": "Launch", "v": 1})],
            [msgspec.msgpack.encode({"type": "Hello", "v": 7})],
            [b"\x00" * (w.MAX_HEADER_BYTES + 10)],
            [w.encode(w.AudioUp(seq=0, n_samples=100)), b"\x00" * 10],
            [w.encode(w.EndDown(session_id="x", last_frame=3))],
        ]
        stale = [w.encode(w.AudioUp(seq=0, n_samples=100)), b"\x00" * 200]  # valid, but no session yet
        for parts in [*bad, stale]:
            sock.send_multipart(parts)
        big = _raw(port)
        big.send(b"\x00" * (w.MAX_VIDEO_BYTES + (2 << 20)))  # over MAXMSGSIZE: libzmq drops the connection
        sock.send_multipart([w.encode(w.StatsRequest())])
        stats = _reply(sock, w.StatsReply)
        counters = stats.counters  # type: ignore[attr-defined]
        for name in ("malformed", "unknown_type", "version", "oversized", "bad_payload", "unexpected"):
            assert counters.get(f"wire_{name}", 0) >= 1, (name, counters)
        assert sum(v for k, v in counters.items() if k.startswith("wire_")) == len(bad)
        assert counters["stale_client_messages"] == 1
        # and it still serves: a proper session gets chunks
        sock.send_multipart([w.encode(w.Hello(client="after-garbage"))])
        assert isinstance(_reply(sock, w.Welcome), w.Welcome)
        silence = np.zeros(SR // 5, "<i2").tobytes()
        for seq in range(10):
            sock.send_multipart([w.encode(w.AudioUp(seq=seq, n_samples=SR // 5)), silence])
        assert isinstance(_reply(sock, w.ChunkDown), w.ChunkDown)
        sock.close()
        big.close()
    finally:
        assert server.stop() == 0
    assert "dropped a bad message from a client (malformed)" in server.text()


def test_barge_in_reaches_the_server_and_restarts_on_a_keyframe(tmp_path: Path) -> None:
    server, port = serve(tmp_path)
    try:
        daemon, probe, thread = _daemon(tmp_path, port, 10.0)
        wait_for(lambda: len(probe.writes) >= 10, 30, "chunks at the sink")
        epoch = daemon.interrupt()
        wait_for(lambda: any(e == epoch for _, _, _, e, _, _ in probe.writes), 10, "a chunk of the new epoch")
        rx = daemon.driver.receiver  # type: ignore[attr-defined]
        _stop(daemon, thread)
    finally:
        server.stop()
    assert rx.stats.decode_errors == 0 and rx.stats.skipped_frames == 0
    log = server.text()
    assert "'interrupts': 1" in log and "'keyframes_sent': 2" in log  # session start + barge-in


def test_link_cut_of_five_seconds_holds_the_picture_and_reconnects(tmp_path: Path) -> None:
    server, port = serve(tmp_path)
    emu = LinkEmulator(("127.0.0.1", port))
    try:
        daemon, probe, thread = _daemon(tmp_path, emu.port, 30.0)
        driver = daemon.driver
        wait_for(lambda: len(probe.writes) >= 10, 30, "chunks at the sink")
        chunks_before = driver.receiver.stats.chunks  # type: ignore[attr-defined]
        cut_start = time.monotonic()
        cutter = threading.Thread(target=emu.cut, args=(5.0,))
        cutter.start()
        time.sleep(4.0)  # the link timeout (1 s) has passed: status says so
        during_status = daemon.status()
        cutter.join()
        cut_end = time.monotonic()
        during = [wr for wr in probe.writes if cut_start + 1.0 < wr[0] < cut_end]
        wait_for(lambda: driver.receiver.stats.chunks > chunks_before + 5, 20, "chunks after the cut")  # type: ignore[attr-defined]
        back = time.monotonic() - cut_end
        _stop(daemon, thread)
    finally:
        emu.close()
        server.stop()
    assert driver.reconnects >= 1  # type: ignore[attr-defined]
    assert driver.reconnect_s  # type: ignore[attr-defined]
    # the camera never went black: the sink kept getting (held) frames of the face during the cut
    assert len(during) >= 10
    assert min(float(frame.mean()) for _, _, _, _, frame, _ in during) > 20
    assert back < 10.0
    assert any("remote link down" in h for h in probe.holds)
    assert during_status.state == "restarting" and "remote 127.0.0.1" in during_status.detail
    assert "down" in during_status.detail and during_status.restarts >= 1


def test_server_restart_is_survived(tmp_path: Path) -> None:
    server, port = serve(tmp_path)
    try:
        daemon, probe, thread = _daemon(tmp_path, port, 40.0)
        driver = daemon.driver
        wait_for(lambda: len(probe.writes) >= 10, 30, "chunks at the sink")
        server.proc.kill()
        server.proc.wait(10)
        server.stop()
        server, _ = serve(tmp_path, port=port, name="serve2")
        before = driver.receiver.stats.chunks  # type: ignore[attr-defined]
        wait_for(lambda: driver.reconnects >= 1 and driver.link_up, 30, "the reconnect")  # type: ignore[attr-defined]
        wait_for(lambda: driver.receiver.stats.chunks > before + 5, 20, "chunks from the new server")  # type: ignore[attr-defined]
        _stop(daemon, thread)
    finally:
        server.stop()
    assert driver.reconnects >= 1 and driver.reconnect_s  # type: ignore[attr-defined]
    assert any("remote link down" in h for h in probe.holds)


def test_tiny_random_flashtalk_over_the_link(tmp_path: Path) -> None:
    """The FlashTalk engine (tiny random weights, CPU) behind `serve`: its chunks decode on the laptop."""
    server, port = serve(tmp_path, "engine.kind=flashtalk", "engine.flashtalk.preset=tiny-random",
                         "engine.drift.enabled=false", "supervisor.heartbeat_timeout_s=5", "supervisor.init_timeout_s=60")
    try:
        daemon, probe, thread = _daemon(tmp_path, port, 20.0, link_timeout_s=5.0)
        wait_for(lambda: daemon.driver.receiver is not None  # type: ignore[attr-defined]
                 and daemon.driver.receiver.stats.chunks >= 3, 90, "tiny-random chunks")  # type: ignore[attr-defined]
        rx = daemon.driver.receiver  # type: ignore[attr-defined]
        spec = daemon.spec
        _stop(daemon, thread)
    finally:
        server.stop()
    assert "flashtalk" in server.text() and rx.stats.decode_errors == 0
    assert spec is not None and probe.writes[-1][4].shape == (spec.height, spec.width, 3)


def test_the_laptop_survives_a_hostile_server(tmp_path: Path) -> None:
    """A server that answers Hello and then sends garbage (a stand-in ROUTER socket: a real `serve` never sends
    these): every bad message is dropped and counted by name, bad H.264 is a counted decode error followed by a
    keyframe request, and the laptop's daemon keeps running."""
    import msgspec

    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    daemon, probe, thread = _daemon(tmp_path, port, 20.0, link_timeout_s=5.0)
    try:
        assert router.poll(20_000)
        identity, hello = router.recv_multipart()[:2]
        assert isinstance(w.parse([hello], "up")[0], w.Hello)
        welcome = w.Welcome(session_id="evil", server_id="evil", fps_num=25, fps_den=1, sample_rate=SR,
                            frames_per_chunk=5, height=64, width=64)
        router.send_multipart([identity, w.encode(welcome)])
        wait_for(lambda: getattr(daemon.driver, "receiver", None) is not None, 10, "the session")
        chunk = dict(session_id="evil", seq=0, first_frame=0, n=5, epoch=0, keyframe=True, packet_sizes=[4],
                     audio_t0=0, audio_samples=5 * 640, media_ns=0)
        router.send_multipart([identity, b"\xc1garbage"])
        router.send_multipart([identity, msgspec.msgpack.encode({"type": "Welcome", "v": 9})])
        router.send_multipart([identity, w.encode(w.ChunkDown(**{**chunk, "packet_sizes": [9]})), b"abcd",
                               b"\x00" * 6400])
        router.send_multipart([identity, w.encode(w.Hello())])  # an up-only message sent down
        router.send_multipart([identity, w.encode(w.ChunkDown(**chunk)), b"\x00\x00\x00\x01", b"\x00" * 6400])
        link, rx = daemon.driver.link, daemon.driver.receiver  # type: ignore[attr-defined]
        wait_for(lambda: sum(link.errors.values()) >= 4 and rx.stats.decode_errors >= 1, 10, "the counts")
        wanted = set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not wanted:
            if router.poll(100):
                msg, _ = w.parse(router.recv_multipart()[1:], "up")
                if isinstance(msg, w.KeyframeRequest):
                    wanted.add(msg.reason)
        assert wanted == {"loss"}
        assert link.errors == {"malformed": 1, "version": 1, "bad_payload": 1, "unexpected": 1}
        assert thread.is_alive() and daemon.status().state == "running"
        _stop(daemon, thread)
    finally:
        router.close()


def test_no_answer_with_a_sink_open_fails_the_run_instead_of_hanging(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No engine at the address while a sink waits for the first spec (the Studio's preview sink is always there
    under `soulx-live run`): the run ends with the named error, it does not wait for the sink forever."""
    import socket

    import pytest

    from soulx_live.errors import DaemonError
    from soulx_live.live import remote as remote_driver

    monkeypatch.setattr(remote_driver, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as probe_port:  # a port nothing listens on
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    audio = write_wav(tmp_path / "silence.wav", np.zeros(SR, np.float32))
    probe = FrameProbe()
    daemon = Daemon(laptop_config(tmp_path, port, audio), sink_factory=lambda cfg: [probe])  # type: ignore[arg-type]
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(daemon, errors), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the run hung waiting for a sink that never got a spec"
    assert time.monotonic() - started < 20
    with pytest.raises(DaemonError, match="no answer from the remote engine"):
        raise errors[0]


def _capture(daemon: Daemon, errors: list[BaseException]) -> None:
    try:
        daemon.run()
    except BaseException as exc:  # noqa: BLE001 - the test looks at it
        errors.append(exc)
