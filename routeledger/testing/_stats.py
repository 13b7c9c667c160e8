"""Counters of what the fake provider has served, readable from any thread."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

__all__ = ["FakeStats"]


class FakeStats:
    """Thread-safe counters of what the fake provider has served.

    Attributes are updated on the server thread under a lock; read them from any thread
    (`snapshot` gives a consistent copy).

    Attributes:
        requests: Requests received (every parsed request, any path).
        by_path: Requests per path (query string removed).
        in_flight: Requests being handled right now.
        max_concurrent: Peak of ``in_flight`` since start or the last reset.
        statuses: Count of each response status sent (resets send none).
        connections: TCP connections accepted.
        open_connections: TCP connections open right now.
        last_request_headers: Headers of the last request, names lower-cased.
        last_request_json: Decoded JSON body of the last request (None if absent/invalid).
    """

    def __init__(self) -> None:
        """Start with every counter at zero."""
        self._lock = threading.Lock()
        self.requests = 0
        self.by_path: dict[str, int] = {}
        self.in_flight = 0
        self.max_concurrent = 0
        self.statuses: Counter[int] = Counter()
        self.connections = 0
        self.open_connections = 0
        self.last_request_headers: dict[str, str] = {}
        self.last_request_json: Any = None

    def reset(self) -> None:
        """Zero the counters; live gauges (in flight, open connections) are kept."""
        with self._lock:
            self.requests = 0
            self.by_path = {}
            self.max_concurrent = self.in_flight
            self.statuses = Counter()
            self.connections = 0
            self.last_request_headers = {}
            self.last_request_json = None

    reset_stats = reset

    def snapshot(self) -> dict[str, Any]:
        """Return a consistent copy of every counter."""
        with self._lock:
            return {
                "requests": self.requests,
                "by_path": dict(self.by_path),
                "in_flight": self.in_flight,
                "max_concurrent": self.max_concurrent,
                "statuses": Counter(self.statuses),
                "connections": self.connections,
                "open_connections": self.open_connections,
                "last_request_headers": dict(self.last_request_headers),
                "last_request_json": self.last_request_json,
            }

    # The underscore methods are the server's hooks (routeledger.testing._server only).

    def _begin(self, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests += 1
            self.by_path[path] = self.by_path.get(path, 0) + 1
            self.in_flight += 1
            if self.in_flight > self.max_concurrent:
                self.max_concurrent = self.in_flight
            self.last_request_headers = headers
            self.last_request_json = body

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _status(self, status: int) -> None:
        with self._lock:
            self.statuses[status] += 1

    def _connection(self, delta: int) -> None:
        with self._lock:
            if delta > 0:
                self.connections += 1
            self.open_connections += delta

    def __repr__(self) -> str:
        return f"FakeStats({self.snapshot()!r})"
