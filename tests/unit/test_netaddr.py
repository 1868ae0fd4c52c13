"""is_loopback_host: which listener addresses stay on this machine."""
from __future__ import annotations

import pytest

from soulx_live.netaddr import is_loopback_host


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1.2.3", "::1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.com", "localhost.evil", "[::1]"])
def test_other_hosts_are_exposed(host: str) -> None:
    # "" and the unspecified addresses bind every interface; names other than localhost are not resolved
    assert not is_loopback_host(host)
