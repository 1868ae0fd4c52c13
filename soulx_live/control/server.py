"""The daemon side of the control socket: a REP socket answering ``StatusRequest``, ``StopRequest`` and
``Interrupt`` (barge-in). It runs on its own thread; ZeroMQ sockets never cross threads."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from soulx_live import protocol
from soulx_live.errors import DaemonError
from soulx_live.log_safe import RateLimitedLog

__all__ = ["ControlHandlers", "ControlServer"]

log = logging.getLogger(__name__)

POLL_S = 0.05


@dataclass(frozen=True)
class ControlHandlers:
    """What each request does in the daemon."""

    status: Callable[[], protocol.StatusReply]
    stop: Callable[[str], None]
    interrupt: Callable[[], int]  # returns the new epoch
    studio_link: Callable[[], str | None] = lambda: None  # a fresh one-time Studio link (None: no Studio)


class ControlServer:
    """Answers requests on ``address`` until ``stopped()`` turns true (checked every 50 ms)."""

    def __init__(self, address: str, handlers: ControlHandlers) -> None:
        self.address = address
        self._handlers = handlers
        self._bad = RateLimitedLog(log)  # bad requests by kind (counts in .counts)

    def serve(self, stopped: Callable[[], bool]) -> None:
        """The control thread's body. Raises :class:`DaemonError` when the address is taken."""
        import zmq

        sock = zmq.Context.instance().socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(self.address)
        except zmq.ZMQError as exc:
            sock.close()
            raise DaemonError(f"cannot listen on {self.address}: {exc} "
                              "(is another daemon running? `soulx-live status`)") from exc
        try:
            while not stopped():
                if sock.poll(int(POLL_S * 1000)):
                    # every request gets exactly one reply, whatever it was: REP's state stays consistent
                    sock.send(protocol.encode(self._reply(sock.recv_multipart())))
        finally:
            sock.close()

    def _reply(self, frames: list[bytes]) -> protocol.Message:
        if len(frames) != 1:
            self._bad.warning("frames", "control socket: refused a %d-frame request (one frame per request)",
                              len(frames))
            return protocol.Ack(ok=False, message=f"{len(frames)}-frame request; send one frame per request")
        try:
            return self.answer(frames[0])
        except Exception as exc:  # a handler bug answers the client; it never ends the control thread
            log.exception("control socket: answering a request failed")
            return protocol.Ack(ok=False, message=f"the daemon could not answer: {type(exc).__name__}")

    def answer(self, data: bytes) -> protocol.Message:
        """The reply to one encoded request; a malformed one gets a refusal that says why."""
        try:
            msg = protocol.decode(data)
        except protocol.ProtocolError as exc:
            self._bad.warning(exc.reason, "control socket: refused a %s request (%d bytes)", exc.reason, len(data))
            return protocol.Ack(ok=False, message=str(exc))
        if isinstance(msg, protocol.StatusRequest):
            return self._handlers.status()
        if isinstance(msg, protocol.StopRequest):
            self._handlers.stop("stop requested by `soulx-live`")
            return protocol.Ack(ok=True, message="draining")
        if isinstance(msg, protocol.Interrupt):  # barge-in from a client; its epoch field is not used
            return protocol.Ack(ok=True, message=f"epoch {self._handlers.interrupt()}")
        if isinstance(msg, protocol.StudioLinkRequest):
            if not self.address.startswith("ipc://"):  # tcp control sockets are not authenticated: no login links
                return protocol.Ack(ok=False, message="login links are only given over the private ipc socket "
                                                      "(bus.transport=ipc)")
            link = self._handlers.studio_link()
            return protocol.Ack(ok=link is not None, message=link or "the Studio is off in this daemon "
                                                                    "(studio.enabled=false or --no-studio)")
        return protocol.Ack(ok=False, message=f"the daemon does not handle {type(msg).__name__}")
