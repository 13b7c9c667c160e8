"""Shared helpers of the wire adapter tests: configs, MockTransport adapters, canned answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec

from routeledger.actors.wire import WireAdapter, make_adapter
from routeledger.events import Message, ModelSpec, ProviderConfig, Request, Secret

__all__ = [
    "CALLS",
    "CANARY",
    "KINDS",
    "MODEL",
    "NOW",
    "PROMPT",
    "Adapters",
    "FailingBody",
    "answer",
    "call",
    "config",
    "request",
]

KINDS = ["openai", "anthropic"]
CALLS = ["complete", "stream", "probe"]
MODEL = ModelSpec(name="m", input_per_mtok=1.0, output_per_mtok=2.0)
CANARY = "sk-canary-5f3a9c0d71e2"
PROMPT = "the confidential prompt text 7731"
NOW = 1_700_000_000.0


def config(kind: str, **overrides: Any) -> ProviderConfig:
    """Return a provider config of ``kind`` on a test origin."""
    fields: dict[str, Any] = {"base_url": "https://provider.test/v1", **overrides}
    return ProviderConfig(name=f"p-{kind}", kind=kind, models=[MODEL], **fields)


class Adapters:
    """A factory of adapters over a MockTransport, keyed with the canary; closes their clients."""

    def __init__(self) -> None:
        self._clients: list[httpx.Client] = []

    def __call__(
        self, kind: str, handler: Callable[[httpx.Request], httpx.Response], **kw: Any
    ) -> Any:
        follow = kw.pop("follow_redirects", False)
        client = httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=follow)
        self._clients.append(client)
        return make_adapter(
            config(kind, **kw), client=client, api_key=Secret(CANARY), clock=lambda: NOW
        )

    def close(self) -> None:
        """Close every client made."""
        for client in self._clients:
            client.close()


def request() -> Request:
    """Return a request whose prompt text must never appear in an error."""
    return Request(model="m", messages=[Message(role="user", content=PROMPT)], request_id="rid-e")


def call(a: WireAdapter, how: str, timeout_s: float | None = None) -> None:
    """Run one adapter call to completion (a stream is read to its end)."""
    if how == "complete":
        a.complete(request(), MODEL, timeout_s=timeout_s)
    elif how == "stream":
        for _ in a.stream(request(), MODEL, timeout_s=timeout_s):
            pass
    else:
        a.probe(timeout_s=timeout_s)


def answer(
    status: int, body: Any = None, **headers: str
) -> Callable[[httpx.Request], httpx.Response]:
    """Return a handler answering ``status`` with a JSON ``body`` and ``headers``."""
    content = b"" if body is None else msgspec.json.encode(body)
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}

    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=hdrs)

    return handler


class FailingBody(httpx.SyncByteStream):
    """A body that yields ``first`` and then raises ``exc``."""

    def __init__(self, first: bytes, exc: BaseException) -> None:
        self.first = first
        self.exc = exc

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        raise self.exc
