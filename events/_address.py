"""Whether a host name or address stays on this machine (loopback)."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """Return whether ``host`` is ``localhost`` or a loopback IP address (``127.0.0.0/8``, ``::1``).

    Other names are not resolved: a name that a resolver might map to loopback today and
    elsewhere tomorrow does not count.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
