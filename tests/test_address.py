"""Tests of is_loopback: which hosts stay on this machine."""

from __future__ import annotations

import pytest

from routeledger.events import is_loopback


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_hosts_are_loopback(host: str) -> None:
    """localhost and addresses in 127.0.0.0/8 or ::1 are loopback."""
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "10.0.0.1",
        "192.168.1.1",
        "8.8.8.8",
        "api.example.com",
        "",
        "127.0.0.1.nip.io",
    ],
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    """Any other address, and any name but localhost (names are never resolved), is not."""
    assert not is_loopback(host)


def test_url_without_password_masks_only_the_password() -> None:
    """The user, host, port and path stay; the password becomes ***; no userinfo, no change."""
    from routeledger.events import url_password, url_without_password

    assert url_without_password("https://me:s3cret@h.example:8443/v1") == (
        "https://me:***@h.example:8443/v1"
    )
    assert url_without_password("https://h.example/v1") == "https://h.example/v1"
    assert url_password("https://me:s3cret@h.example/v1") == "s3cret"
    assert url_password("https://h.example/v1") is None
