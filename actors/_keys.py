"""Several API keys per provider: rotation across the usable keys, and each key's own state.

A provider configured with more than one key (``api_keys`` / ``api_key_envs``, after
``api_key`` / ``api_key_env``) gets a :class:`KeyRing`. Each attempt to it takes the next
usable key in turn (round-robin). A key answered with 429 rests until its ``Retry-After``
(or :data:`RATE_LIMITED_REST_S`), and a key refused (401 or 403) or out of quota rests for
:data:`REFUSED_REST_S`: only that key, not the provider. While another key is usable, such
an answer makes the failover policy retry the same provider with the next key before it
tries another provider; when no key is usable the provider is skipped (``route.decided``
says why) or waited for, like a provider at its rate limit.

Events and errors name a key only by its :func:`fingerprint` (the first 8 hex digits of its
SHA-256), never by its value. The ring is routing state: only the router touches it, under
the desk's lock.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from routeledger.events import AuthenticationError, QuotaExceeded, RateLimited

if TYPE_CHECKING:
    from routeledger.events import ProviderError, Secret

__all__ = ["RATE_LIMITED_REST_S", "REFUSED_REST_S", "KeyRing", "fingerprint"]

RATE_LIMITED_REST_S = 1.0
"""How long a key answered 429 without a ``Retry-After`` rests."""
REFUSED_REST_S = 300.0
"""How long a key refused (401/403) rests before it is tried again (it may be rotated back)."""


def fingerprint(key: Secret) -> str:
    """Return the name events give a key: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key.reveal().encode()).hexdigest()[:8]


class KeyRing:
    """One provider's keys, by index: which one is next, and which rest until when.

    Args:
        fingerprints: The keys' fingerprints, in configuration order.
    """

    __slots__ = ("_rest", "_why", "fingerprints", "turn")

    def __init__(self, fingerprints: list[str]) -> None:
        self.fingerprints = fingerprints
        self.turn = 0
        self._rest = [0.0] * len(fingerprints)
        self._why = [""] * len(fingerprints)

    def usable(self, now: float) -> int:
        """Return how many keys may be used now."""
        return sum(1 for until in self._rest if until <= now)

    def wait_s(self, now: float) -> float:
        """Return the seconds until some key may be used (0 if one may now)."""
        return max(0.0, min(self._rest) - now)

    def why_resting(self, now: float) -> str:
        """Return why no key may be used now (for ``route.decided``)."""
        first = min(range(len(self._rest)), key=lambda i: self._rest[i])
        return (
            f"every API key is resting ({len(self._rest)} keys; key {self.fingerprints[first]} "
            f"{self._why[first]}, usable in {self._rest[first] - now:.3g} s)"
        )

    def pick(self, now: float) -> int:
        """Return the next usable key's index in turn (call only when one is usable)."""
        n = len(self._rest)
        for step in range(n):
            i = (self.turn + step) % n
            if self._rest[i] <= now:
                self.turn = (i + 1) % n
                return i
        raise LookupError("no usable key")  # the router checked usable() first

    def failed(self, key: int, error: ProviderError | None, now: float) -> bool:
        """Note how an attempt with ``key`` failed; return whether the key now rests."""
        if not 0 <= key < len(self._rest):
            return False
        if isinstance(error, RateLimited):
            rest = error.retry_after_s if error.retry_after_s is not None else None
            self._rest[key] = now + (RATE_LIMITED_REST_S if rest is None else rest)
            self._why[key] = "rate-limited (429)"
            return True
        if isinstance(error, AuthenticationError | QuotaExceeded):
            self._rest[key] = now + REFUSED_REST_S
            what = "quota exhausted" if isinstance(error, QuotaExceeded) else "refused"
            self._why[key] = f"{what} ({error.status or 401})"
            return True
        return False
