"""The optional response cache: whole canonical request as key, TTL and LRU bound.

The key is the request's canonical encoding (everything but ``request_id`` and
``deadline``) together with every routing constraint of the call (preferred provider,
requirements, pool, A/B test), so that an answer is only ever served to a call that would
have accepted it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from routeledger.actors._clock import Clock
    from routeledger.events import Request, Requirements, Response

__all__ = ["ResponseCache", "cache_key"]

_encoder = msgspec.json.Encoder(order="sorted")


def cache_key(
    request: Request,
    *,
    preferred_provider: str | None,
    requirements: Requirements | None,
    pool: str | None,
    ab_test: str | None,
) -> bytes:
    """Return the canonical key of a call."""
    canonical = msgspec.structs.replace(request, request_id="", deadline=None)
    return _encoder.encode((canonical, preferred_provider, requirements, pool, ab_test))


class ResponseCache:
    """A thread-safe LRU of responses that expire ``ttl_s`` after they were stored."""

    def __init__(self, *, ttl_s: float, max_entries: int, clock: Clock) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Response]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> Response | None:
        """Return the live entry for ``key``, if any."""
        now = self.clock.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= now:
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: bytes, response: Response) -> None:
        """Store ``response`` under ``key``, evicting the least recently used past the bound."""
        with self._lock:
            self._entries[key] = (self.clock.monotonic() + self.ttl_s, response)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
