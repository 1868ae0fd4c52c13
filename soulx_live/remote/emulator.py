"""A userspace wide-area-link emulator for the remote engine's tests and benchmark: a bounded TCP relay on
loopback that adds delay, jitter, a rate limit, loss stalls and link cuts to every byte it forwards.

Used where the kernel has no ``netem`` qdisc (``tc qdisc add ... netem`` fails with "Specified qdisc kind is
unknown"). It works on a byte stream, so it models what TCP shows the application, not packets:

- delay / jitter: each read is delivered ``delay + U(-jitter, +jitter)`` later, never before the previous one
  (TCP keeps order, so jitter appears as varying delay);
- rate: delivery is paced at ``rate_bps`` (a read of N bytes occupies the link for ``8N/rate`` seconds);
- loss: with probability ``loss`` a read waits ``loss_stall_s`` more: the head-of-line stall a lost segment
  causes in TCP. Linux recovers a lost segment of a thin stream by its tail-loss probe (about 2 RTT) and the
  retransmission (1 RTT), so callers pass about 3 x RTT (the plain retransmission timeout, 200 ms at least, is
  the worst case);
- cut: while cut nothing moves in either direction and new connections wait; connections that were open when
  the cut began are closed when it ends (the flows of a dropped link do not survive), new ones then proceed.
"""
from __future__ import annotations

import heapq
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass

__all__ = ["LinkEmulator", "LinkShape"]

log = logging.getLogger(__name__)

READ_BYTES = 16 << 10
MAX_QUEUED_BYTES = 8 << 20  # per direction: a bounded relay (the reader waits beyond it)


@dataclass(frozen=True)
class LinkShape:
    """One-way figures (an RTT of 40 ms is ``delay_s=0.02`` each way)."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    rate_bps: float | None = None
    loss: float = 0.0
    loss_stall_s: float = 0.2


class _Pipe:
    """One direction of one connection: a reader thread schedules, a writer thread delivers on time."""

    def __init__(self, src: socket.socket, dst: socket.socket, emu: LinkEmulator, name: str) -> None:
        self.src, self.dst, self.emu = src, dst, emu
        self._heap: list[tuple[float, int, bytes]] = []
        self._cond = threading.Condition()
        self._queued = 0
        self._order = 0
        self._last_due = 0.0
        self._closed = False
        self.bytes = 0
        for target, suffix in ((self._read, "r"), (self._write, "w")):
            threading.Thread(target=target, name=f"emu-{name}-{suffix}", daemon=True).start()

    def _read(self) -> None:
        shape, rng = self.emu.shape, self.emu.rng
        try:
            while True:
                self.emu.wait_open()
                data = self.src.recv(READ_BYTES)
                if not data:
                    break
                now = time.monotonic()
                due = now + shape.delay_s + (rng.uniform(-shape.jitter_s, shape.jitter_s) if shape.jitter_s else 0.0)
                if shape.loss and rng.random() < shape.loss:
                    due += shape.loss_stall_s
                if shape.rate_bps:
                    due = max(due, self._last_due + 8 * len(data) / shape.rate_bps)
                due = max(due, self._last_due)
                self._last_due = due
                with self._cond:
                    while self._queued > MAX_QUEUED_BYTES and not self._closed:
                        self._cond.wait(0.05)
                    heapq.heappush(self._heap, (due, self._order, data))
                    self._order += 1
                    self._queued += len(data)
                    self._cond.notify_all()
        except OSError:
            pass
        finally:
            self.close()

    def _write(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._heap and not self._closed:
                        self._cond.wait(0.05)
                    if not self._heap:
                        return
                    due = self._heap[0][0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        self._cond.wait(min(wait, 0.05))
                        continue
                    _, _, data = heapq.heappop(self._heap)
                    self._queued -= len(data)
                    self._cond.notify_all()
                self.emu.wait_open()
                self.dst.sendall(data)
                self.bytes += len(data)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
        for sock in (self.src, self.dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class LinkEmulator:
    """Listens on 127.0.0.1 (``port`` once started) and relays to ``target`` through the shaped link."""

    def __init__(self, target: tuple[str, int], shape: LinkShape = LinkShape(), *, seed: int = 0,
                 listen_host: str = "127.0.0.1") -> None:
        self.target = target
        self.shape = shape
        self.rng = random.Random(seed)
        self._listener = socket.create_server((listen_host, 0))
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._pipes: list[_Pipe] = []
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, name="emu-accept", daemon=True).start()

    @property
    def bytes_down(self) -> int:
        """Bytes delivered from the target back to the clients (the server -> laptop direction)."""
        with self._lock:
            return sum(p.bytes for p in self._pipes[1::2])

    @property
    def bytes_up(self) -> int:
        with self._lock:
            return sum(p.bytes for p in self._pipes[0::2])

    def wait_open(self) -> None:
        while not self._open.wait(0.05):
            if self._stop:
                raise OSError("emulator closed")

    def cut(self, seconds: float) -> None:
        """Cut the link for ``seconds`` (blocks): nothing moves; the flows open now die when it comes back."""
        with self._lock:
            victims = list(self._pipes)
        self._open.clear()
        time.sleep(seconds)
        for pipe in victims:
            pipe.close()
        self._open.set()

    def close(self) -> None:
        self._stop = True
        self._open.set()
        self._listener.close()
        with self._lock:
            for pipe in self._pipes:
                pipe.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                self.wait_open()
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pipes.append(_Pipe(client, upstream, self, "up"))
                self._pipes.append(_Pipe(upstream, client, self, "down"))


def main(argv: list[str] | None = None) -> int:
    """``python -m soulx_live.remote.emulator --target HOST:PORT [shape]``: prints ``listening on PORT``, relays
    until killed (for tests that run the laptop as a separate process)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="round-trip delay added (half each way)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="round-trip jitter (half each way, uniform)")
    parser.add_argument("--loss-pct", type=float, default=0.0, help="reads stalled by one RTO, percent per direction")
    parser.add_argument("--rate-mbit", type=float, default=None, help="rate limit per direction")
    parser.add_argument("--loss-stall-ms", type=float, default=None, help="stall per loss (default: 3 x RTT, 20 ms at least)")
    args = parser.parse_args(argv)
    stall_ms = args.loss_stall_ms if args.loss_stall_ms is not None else max(20.0, 3 * args.rtt_ms)
    host, _, port = args.target.rpartition(":")
    shape = LinkShape(delay_s=args.rtt_ms / 2000, jitter_s=args.jitter_ms / 2000, loss=args.loss_pct / 100,
                      rate_bps=args.rate_mbit * 1e6 if args.rate_mbit else None, loss_stall_s=stall_ms / 1000)
    emu = LinkEmulator((host, int(port)), shape)
    print(f"listening on {emu.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
