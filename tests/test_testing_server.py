"""Tests of the fake provider's server: connections, concurrency, stats, lifecycle."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fake_support import (
    ANTHROPIC_BODY,
    OPENAI_BODY,
)

from routeledger.testing import Behaviour, FakeProvider


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(seed=1) as provider:
        yield provider


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url + "/v1", timeout=10) as c:
        yield c


async def _concurrent(url: str, clients: int, rounds: int = 1) -> list[int]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url + "/v1", limits=limits, timeout=20) as c:
        statuses = []
        for _ in range(rounds):
            answers = await asyncio.gather(
                *(c.post("/chat/completions", json=OPENAI_BODY) for _ in range(clients))
            )
            statuses += [a.status_code for a in answers]
        return statuses


def test_max_concurrent_counts_simultaneous_requests(fake: FakeProvider) -> None:
    """50 clients against latency_ms=50 are handled simultaneously and counted as such."""
    fake.set_behaviour(Behaviour(latency_ms=50))
    statuses = asyncio.run(_concurrent(fake.url, 50))
    assert statuses == [200] * 50
    assert fake.stats.max_concurrent == 50
    assert fake.stats.in_flight == 0
    assert fake.stats.requests == 50


async def _keep_alive_rounds(port: int, connections: int, rounds: int) -> list[bytes]:
    """Open raw connections, then send one request per connection per round, all at once."""
    payload = json.dumps(OPENAI_BODY).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
    )

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        return head.split(b"\r\n")[0]

    conns = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(connections))
    )
    try:
        lines = []
        for _ in range(rounds):
            lines += await asyncio.gather(*(exchange(r, w) for r, w in conns))
        return lines
    finally:
        for _, writer in conns:
            writer.close()
            await writer.wait_closed()


def test_200_keep_alive_connections(fake: FakeProvider) -> None:
    """200 concurrent keep-alive connections are served at once and reused across requests."""
    # Raw connections, because httpx's async pool reopens connections under this load and
    # would measure itself rather than the server.
    fake.set_behaviour(Behaviour(latency_ms=100))
    start = time.perf_counter()
    lines = asyncio.run(_keep_alive_rounds(fake.port, 200, rounds=3))
    elapsed = time.perf_counter() - start
    assert lines == [b"HTTP/1.1 200 OK"] * 600
    assert fake.stats.max_concurrent == 200
    assert fake.stats.connections == 200
    assert elapsed < 1.5  # three rounds of overlapping 100 ms latencies, not 600 queued ones


def test_stats_and_set_behaviour(fake: FakeProvider, client: httpx.Client) -> None:
    """Stats count requests by path and status; set_behaviour applies to the next request."""
    client.post("/chat/completions", json=OPENAI_BODY, headers={"authorization": "Bearer k"})
    assert fake.stats.last_request_headers["authorization"] == "Bearer k"
    fake.set_behaviour(Behaviour(status=503))
    client.post("/messages", json=ANTHROPIC_BODY)
    client.get("/models")
    snap = fake.stats.snapshot()
    assert snap["requests"] == 3
    assert snap["by_path"] == {"/v1/chat/completions": 1, "/v1/messages": 1, "/v1/models": 1}
    assert snap["statuses"] == {200: 1, 503: 2}
    assert fake.stats.last_request_json is None
    fake.reset_stats()
    assert fake.stats.requests == 0
    assert fake.stats.statuses == {}


def test_connection_close_and_chunked_request(fake: FakeProvider) -> None:
    """A chunked request body is read, and "connection: close" is honoured."""
    payload = json.dumps(OPENAI_BODY).encode()
    half = len(payload) // 2
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (half, payload[:half], len(payload) - half, payload[half:])
    )
    received = b""
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(request)
        while piece := sock.recv(65536):
            received += piece
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in received
    assert fake.stats.last_request_json == OPENAI_BODY


def _fake_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "routeledger-fake-provider"]


def test_stop_leaves_nothing_behind() -> None:
    """stop() closes idle and busy connections, joins the thread and frees the port."""
    before = len(_fake_threads())
    fp = FakeProvider(Behaviour(stall_after_chunks=1, stall_ms=10_000)).start()
    port = fp.port
    idle = socket.create_connection(("127.0.0.1", port))
    body = {**OPENAI_BODY, "stream": True}
    with (
        httpx.Client(base_url=fp.url + "/v1") as c,
        c.stream("POST", "/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        fp.stop()
        with pytest.raises(httpx.TransportError):
            r.read()
    assert idle.recv(1) == b""
    idle.close()
    fp.stop()  # idempotent
    assert len(_fake_threads()) == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    gc.collect()  # an unclosed transport or socket would warn (an error here) now


def test_restart_serves_on_the_same_port(fake: FakeProvider) -> None:
    """After stop(), start() serves again on the same URL (a provider coming back)."""
    url = fake.url
    fake.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/v1/models", timeout=2)
    fake.start()
    assert fake.url == url
    assert httpx.get(url + "/v1/models", timeout=2).status_code == 200
