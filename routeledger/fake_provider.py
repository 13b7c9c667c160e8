"""The loopback fake provider, kept importable under its first name.

It lives in `routeledger.testing` now (one module per concept: behaviour, server, the two
wire formats); import it from there.
"""

from __future__ import annotations

from routeledger.testing import ERROR_CODES, Behaviour, FakeProvider, FakeStats

__all__ = ["ERROR_CODES", "Behaviour", "FakeProvider", "FakeStats"]
