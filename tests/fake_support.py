"""Helpers of the fake provider's tests: request bodies, SSE parsing, raw socket exchanges."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx

from routeledger.testing import FakeProvider

OPENAI_BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello there"}]}
ANTHROPIC_BODY = {**OPENAI_BODY, "model": "claude-test", "max_tokens": 64}


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """Parse an SSE body by hand into (event name, data) pairs."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


def openai_stream(client: httpx.Client, **extra: Any) -> list[str]:
    """POST an OpenAI stream request and return the data of every SSE event."""
    r = client.post("/chat/completions", json={**OPENAI_BODY, "stream": True, **extra})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    return [data for _, data in sse_events(r.text)]


def anthropic_stream(client: httpx.Client) -> list[tuple[str | None, str]]:
    """POST an Anthropic stream request and return its (event name, data) pairs."""
    r = client.post("/messages", json={**ANTHROPIC_BODY, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    return sse_events(r.text)


def raw_exchange(fake: FakeProvider, body: dict[str, Any]) -> tuple[bytes, BaseException | None]:
    """Send one request on a raw socket; return the bytes received and the error that ended it."""
    payload = json.dumps(body).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    received = b""
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(request)
        try:
            while piece := sock.recv(65536):
                received += piece
        except OSError as exc:
            return received, exc
    return received, None
