"""One request and what is needed to answer it: the fake provider's per-request object."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from routeledger.testing._http import head, reset_soon

if TYPE_CHECKING:
    from routeledger.testing._behaviour import Behaviour
    from routeledger.testing._format import WireFormat
    from routeledger.testing._http import Request
    from routeledger.testing._limits import OwnLimits
    from routeledger.testing._stats import FakeStats

__all__ = ["Exchange"]


@dataclass(slots=True, kw_only=True)
class Exchange:
    """A request being answered, with the connection and the draws made for it.

    Attributes:
        request: The parsed request.
        parsed: Its JSON body decoded (None if absent or invalid).
        behaviour: The behaviour in force when the request arrived.
        writer: The connection to answer on.
        stats: The counters to update.
        n: Request number since start (ids are derived from it).
        fail_roll: The seeded failure roll in ``[0, 1)``.
        jitter_ms: The seeded extra latency.
        fmt: The wire format of the path (OpenAI for paths of neither API).
        extra: Extra response header lines (``name: value\\r\\n``), request id first.
    """

    request: Request
    parsed: Any
    behaviour: Behaviour
    writer: asyncio.StreamWriter
    stats: FakeStats
    n: int
    fail_roll: float
    jitter_ms: float
    fmt: WireFormat
    extra: bytes = b""
    limits: OwnLimits | None = None
    """The behaviour's own rpm/tpm buckets, if it sets any."""

    @property
    def rid(self) -> str:
        """The request id sent in the response head and in Anthropic error bodies."""
        return f"req_{self.n:024x}"

    async def send(
        self, status: int, content_type: bytes, payload: bytes, *, mid_body: bool = False
    ) -> bool:
        """Send a whole response (or half of it then an RST); return whether to keep alive."""
        self.stats._status(status)
        keep_alive = self.request.keep_alive
        response = head(
            status, content_type, length=len(payload), close=not keep_alive, extra=self.extra
        )
        writer = self.writer
        if mid_body:
            writer.write(response + payload[: max(1, len(payload) // 2)])
            await writer.drain()
            await reset_soon(writer)
            return False
        writer.write(response + payload)
        await writer.drain()
        return keep_alive

    async def send_error(
        self, status: int, code: str | None, message: str | None, *, mid_body: bool = False
    ) -> bool:
        """Send an error body in the path's format; return whether to keep alive."""
        payload = self.fmt.error_body(status, code, message, self.rid)
        return await self.send(status, b"application/json", payload, mid_body=mid_body)
