"""The client side of the control socket: ask a running daemon for its status, or to barge in."""
from __future__ import annotations

from pathlib import Path

from soulx_live import protocol
from soulx_live.config import BusConfig
from soulx_live.errors import DaemonError, DaemonUnavailable
from soulx_live.protocol import StatusReply

__all__ = ["query_status", "request_interrupt", "request_studio_link"]


def query_status(bus: BusConfig, timeout_s: float = 2.0) -> StatusReply:
    """Ask the running daemon for its :class:`~soulx_live.protocol.StatusReply`.

    Raises :class:`DaemonUnavailable` when nothing answers within ``timeout_s``.
    """
    reply = _request(bus, protocol.StatusRequest(), timeout_s)
    if not isinstance(reply, protocol.StatusReply):
        raise DaemonError(f"the daemon answered a status request with {type(reply).__name__}")
    return reply


def request_interrupt(bus: BusConfig, timeout_s: float = 2.0) -> int:
    """Barge-in on the running daemon; returns the new epoch. Raises :class:`DaemonUnavailable`."""
    reply = _request(bus, protocol.Interrupt(session_id="", epoch=0), timeout_s)
    if not isinstance(reply, protocol.Ack) or not reply.ok:
        raise DaemonError(f"the daemon refused the interrupt: {getattr(reply, 'message', type(reply).__name__)}")
    return int(reply.message.rpartition(" ")[2])


def request_studio_link(bus: BusConfig, timeout_s: float = 2.0) -> str:
    """A fresh one-time login link for the running daemon's Studio page (the previous link stops working)."""
    reply = _request(bus, protocol.StudioLinkRequest(), timeout_s)
    if not isinstance(reply, protocol.Ack) or not reply.ok:
        raise DaemonError(f"no Studio link: {getattr(reply, 'message', type(reply).__name__)}")
    return reply.message


def _request(bus: BusConfig, msg: protocol.Message, timeout_s: float) -> protocol.Message:
    import zmq

    from soulx_live.runtime_dir import endpoint

    address = endpoint("cli", bus)
    if address.startswith("ipc://") and not Path(address[len("ipc://"):]).exists():
        raise DaemonUnavailable(f"no daemon is running (no control socket at {address[len('ipc://'):]}); "
                                "start one with `soulx-live run`")
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        if not sock.poll(int(timeout_s * 1000), zmq.POLLOUT):
            raise DaemonUnavailable(f"no daemon is running (could not reach {address} within {timeout_s:g} s); "
                                    "start one with `soulx-live run`")
        sock.send(protocol.encode(msg), flags=zmq.NOBLOCK)
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise DaemonUnavailable(f"no daemon answered on {address} within {timeout_s:g} s "
                                    "(a stale socket from a crashed daemon? start one with `soulx-live run`)")
        return protocol.decode(sock.recv())
    finally:
        sock.close()
