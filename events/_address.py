"""Addresses: whether a host stays on this machine (loopback), and URLs shown without secrets."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

__all__ = ["is_loopback", "url_password", "url_without_password"]


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


def url_password(url: object) -> str | None:
    """Return the password in ``url``'s userinfo (``https://user:pw@host``), if any."""
    if not isinstance(url, str):
        return None
    try:
        return urlsplit(url).password or None
    except ValueError:
        return None


def url_without_password(url: str) -> str:
    """Return ``url`` with the password of its userinfo replaced by ``***``.

    A ``base_url`` may carry credentials for a proxy; they are a secret like the API key, so
    the configuration summary in ``config.applied`` and every error show this form.
    """
    try:
        parts = urlsplit(url)
        if not parts.password:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        # Not parseable: the safest form shows nothing after the scheme.
        return url.split(":", 1)[0] + ":(not shown)"
