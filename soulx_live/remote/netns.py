"""A two-machine lab on one host for the remote engine's tests and benchmark: two network namespaces (``server``
and ``laptop``) joined by a veth pair, each end shaped with ``tc``.

Needs root (``ip netns add``). The link rate is a ``tbf`` qdisc on each veth end (one per direction, as on a real
link). Delay, jitter and loss use ``netem`` when the kernel has it; where it does not ("Specified qdisc kind is
unknown"), :attr:`NetnsLab.netem` is False and the caller adds them in userspace
(:class:`~soulx_live.remote.emulator.LinkEmulator` in the laptop namespace). :meth:`NetnsLab.cut` takes the link
down and up again (``ip link set ... down``): a real cut, TCP flows stall as on a dropped Wi-Fi.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import uuid

__all__ = ["NetnsLab", "netns_unavailable"]

log = logging.getLogger(__name__)

SERVER_IP = "10.77.0.1"
LAPTOP_IP = "10.77.0.2"


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=check)


def netns_unavailable() -> str | None:
    """None when namespaces can be made here, else why not."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "ip/tc not installed (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    name = f"sxprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)
    return None


class NetnsLab:
    """Context manager: the namespaces exist inside ``with``; deleted (with everything in them) after."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.server_ns, self.laptop_ns = f"sxs{tag}", f"sxl{tag}"
        self._veth_server, self._veth_laptop = f"vs{tag}", f"vl{tag}"
        self.netem = False
        self.shaping = "none"

    def __enter__(self) -> NetnsLab:
        try:
            for ns in (self.server_ns, self.laptop_ns):
                _ip("ip", "netns", "add", ns)
                _ip("ip", "link", "set", "lo", "up", ns=ns)
            _ip("ip", "link", "add", self._veth_server, "type", "veth", "peer", "name", self._veth_laptop)
            for dev, ns, addr in ((self._veth_server, self.server_ns, SERVER_IP),
                                  (self._veth_laptop, self.laptop_ns, LAPTOP_IP)):
                _ip("ip", "link", "set", dev, "netns", ns)
                _ip("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
                _ip("ip", "link", "set", dev, "up", ns=ns)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.server_ns, self.laptop_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)

    def _ends(self) -> tuple[tuple[str, str], tuple[str, str]]:
        return (self._veth_server, self.server_ns), (self._veth_laptop, self.laptop_ns)

    def shape(self, *, rate_mbit: float | None, delay_ms: float = 0.0, jitter_ms: float = 0.0,
              loss_pct: float = 0.0) -> None:
        """Shape both directions (each end's egress): netem for delay/jitter/loss when the kernel has it (then
        :attr:`netem` is True), and a tbf rate limit; ``rate_mbit=None`` and zeros: no shaping."""
        self.netem = False
        for dev, ns in self._ends():
            _ip("tc", "qdisc", "del", "dev", dev, "root", ns=ns, check=False)
        if rate_mbit is None and not (delay_ms or jitter_ms or loss_pct):
            self.shaping = "none"
            return
        for dev, ns in self._ends():
            handle = ["root"]
            if delay_ms or jitter_ms or loss_pct:
                # half the RTT each way; jitter and loss likewise split over the two directions
                netem = _ip("tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem", "delay",
                            f"{delay_ms / 2}ms", f"{jitter_ms / 2}ms", "loss", f"{loss_pct / 2}%", ns=ns, check=False)
                self.netem = netem.returncode == 0
                if self.netem:
                    handle = ["parent", "1:1", "handle", "10:"]
            if rate_mbit is not None:
                _ip("tc", "qdisc", "add", "dev", dev, *handle, "tbf", "rate", f"{rate_mbit}mbit", "burst", "128kbit",
                    "latency", "50ms", ns=ns)  # burst above rate/HZ, or tbf cannot reach its rate
        self.shaping = "netem+tbf" if self.netem else ("tbf" if rate_mbit is not None else "none")

    def set_link(self, up: bool) -> None:
        """Take the laptop's end of the link down (a cut) or up again."""
        _ip("ip", "link", "set", self._veth_laptop, "up" if up else "down", ns=self.laptop_ns)

    def exec_argv(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]
