"""Network address helpers shared by the daemon's listeners (metrics, push HTTP, bus sockets)."""
from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """True when a listener bound to ``host`` is reachable from this machine only.

    ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``) are; anything else is not, in
    particular ``""`` and ``0.0.0.0`` (every interface) and other host names: resolving them could block
    and may change later, so callers that warn about exposure err on the side of warning.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
