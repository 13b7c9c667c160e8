"""Tests of the loopback fake provider and its ``fake-provider`` command."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from routeledger.cli import main
from routeledger.testing import Behaviour, FakeProvider

OPENAI_BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello there"}]}
ANTHROPIC_BODY = {**OPENAI_BODY, "model": "claude-test", "max_tokens": 64}
ROUTELEDGER = Path(sys.executable).with_name("routeledger")


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(seed=1) as provider:
        yield provider


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url + "/v1", timeout=10) as c:
        yield c


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
    r = client.post("/chat/completions", json={**OPENAI_BODY, "stream": True, **extra})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    return [data for _, data in sse_events(r.text)]


def anthropic_stream(client: httpx.Client) -> list[tuple[str | None, str]]:
    r = client.post("/messages", json={**ANTHROPIC_BODY, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    return sse_events(r.text)


# ----------------------------------------------------------------------------- formats


def test_openai_json_response(client: httpx.Client) -> None:
    """A chat completion is answered in the OpenAI shape with the request's model and usage."""
    r = client.post("/chat/completions", json=OPENAI_BODY)
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-test"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 8
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    assert r.headers["x-request-id"].startswith("req_")


def test_anthropic_json_response(client: httpx.Client) -> None:
    """A message is answered in the Anthropic shape with the request's model and usage."""
    r = client.post("/messages", json=ANTHROPIC_BODY)
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("msg_")
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "claude-test"
    assert body["content"][0]["type"] == "text"
    assert len(body["content"][0]["text"].split()) == 8
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["input_tokens"] == 3
    assert body["usage"]["output_tokens"] == 8
    assert r.headers["request-id"].startswith("req_")


def test_openai_stream_with_usage(client: httpx.Client, fake: FakeProvider) -> None:
    """An OpenAI stream sends a role chunk, text chunks, a finish chunk, a usage chunk, [DONE]."""
    data = openai_stream(client, stream_options={"include_usage": True})
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    texts = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert len(texts) == 8
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    assert all(c["usage"] is None for c in chunks[:-1])
    whole = client.post("/chat/completions", json=OPENAI_BODY).json()
    assert "".join(texts) == whole["choices"][0]["message"]["content"]
    assert fake.stats.last_request_json == OPENAI_BODY


def test_openai_stream_without_usage(client: httpx.Client) -> None:
    """Without stream_options.include_usage the OpenAI stream has no usage chunk at all."""
    data = openai_stream(client)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert len(chunks) == 1 + 8 + 1
    assert all("usage" not in c and c["choices"] for c in chunks)


def test_anthropic_stream_event_sequence(client: httpx.Client) -> None:
    """An Anthropic stream sends the full message_start ... message_stop event sequence."""
    events = anthropic_stream(client)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 8,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(data) for _, data in events]
    assert all(p["type"] == name for p, name in zip(payloads, names, strict=True))
    assert payloads[0]["message"]["model"] == "claude-test"
    assert payloads[0]["message"]["usage"]["input_tokens"] == 3
    text = "".join(p["delta"]["text"] for p in payloads[3:11])
    assert len(text.split()) == 8
    assert payloads[-2]["delta"]["stop_reason"] == "end_turn"
    assert payloads[-2]["usage"]["output_tokens"] == 8


def test_models_listing(fake: FakeProvider, client: httpx.Client) -> None:
    """GET /v1/models lists the configured models in a shape both clients accept."""
    fake.set_behaviour(Behaviour(models=["a-model", "b-model"]))
    body = client.get("/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["a-model", "b-model"]
    assert all(m["object"] == "model" and m["type"] == "model" for m in body["data"])
    assert body["has_more"] is False
    assert client.get("/models/b-model").json()["id"] == "b-model"
    missing = client.get("/models/nope", headers={"anthropic-version": "2023-06-01"})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"


def test_content_and_input_token_estimate(fake: FakeProvider, client: httpx.Client) -> None:
    """Given content is split into output_tokens chunks; input tokens are about chars / 4."""
    fake.set_behaviour(Behaviour(content="Hello, routeledger!", output_tokens=3))
    body = {**OPENAI_BODY, "messages": [{"role": "user", "content": "x" * 400}]}
    whole = client.post("/chat/completions", json=body).json()
    assert whole["choices"][0]["message"]["content"] == "Hello, routeledger!"
    assert whole["usage"]["prompt_tokens"] == 100
    assert whole["usage"]["completion_tokens"] == 3
    data = openai_stream(client)
    texts = [json.loads(d)["choices"][0]["delta"]["content"] for d in data[1:-2]]
    assert len(texts) == 3
    assert "".join(texts) == "Hello, routeledger!"


@pytest.mark.parametrize(
    ("path", "content", "fragment"),
    [
        ("/chat/completions", None, '"invalid_request_error"'),
        ("/chat/completions", b"{not json", '"invalid_request_error"'),
        ("/messages", b"[1, 2]", '"type":"error"'),
        ("/messages", json.dumps(OPENAI_BODY).encode(), "max_tokens"),
    ],
)
def test_invalid_body_is_400_in_format(
    client: httpx.Client, path: str, content: bytes | None, fragment: str
) -> None:
    """A missing or invalid JSON body gets a 400 error body in the path's format."""
    r = client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert fragment in r.text
    body = r.json()
    if path == "/messages":
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
    else:
        assert body["error"]["type"] == "invalid_request_error"


def test_unknown_path_and_method(client: httpx.Client) -> None:
    """Unknown paths get 404 and wrong methods 405, with error bodies."""
    assert client.post("/completions", json={}).status_code == 404
    assert client.get("/chat/completions").status_code == 405
    assert client.post("/models").json()["error"]["message"]


# ----------------------------------------------------------------------------- errors


def test_forced_status_with_retry_after(fake: FakeProvider, client: httpx.Client) -> None:
    """A forced 429 carries retry-after headers and a rate-limit body in each format."""
    fake.set_behaviour(Behaviour(status=429, retry_after="2", retry_after_ms=1500))
    r = client.post("/chat/completions", json=OPENAI_BODY)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"
    assert r.headers["retry-after-ms"] == "1500"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    r = client.post("/messages", json={**ANTHROPIC_BODY, "stream": True})
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["type"] == "rate_limit_error"
    fake.set_behaviour(Behaviour(status=500, retry_after="2"))
    r = client.post("/messages", json=ANTHROPIC_BODY)
    assert r.status_code == 500
    assert "retry-after" not in r.headers
    assert r.json()["error"]["type"] == "api_error"
    assert fake.stats.statuses == {429: 2, 500: 1}


def test_overloaded_529_anthropic(fake: FakeProvider, client: httpx.Client) -> None:
    """A 529 is an overloaded_error for Anthropic and a server_error for OpenAI."""
    fake.set_behaviour(Behaviour(status=529))
    r = client.post("/messages", json=ANTHROPIC_BODY)
    assert (r.status_code, r.json()["error"]["type"]) == (529, "overloaded_error")
    r = client.post("/chat/completions", json=OPENAI_BODY)
    assert (r.status_code, r.json()["error"]["type"]) == (529, "server_error")


@pytest.mark.parametrize(
    ("code", "openai", "anthropic"),
    [
        ("insufficient_quota", (429, "insufficient_quota"), (402, "billing_error")),
        ("rate_limit_exceeded", (429, "requests"), (429, "rate_limit_error")),
        ("context_length_exceeded", (400, "invalid_request_error"), (400, "invalid_request_error")),
        ("invalid_api_key", (401, "invalid_request_error"), (401, "authentication_error")),
    ],
)
def test_error_codes_shape_bodies(
    fake: FakeProvider,
    client: httpx.Client,
    code: str,
    openai: tuple[int, str],
    anthropic: tuple[int, str],
) -> None:
    """error_code gives each format its real status, type and code."""
    fake.set_behaviour(Behaviour(error_code=code))
    r = client.post("/chat/completions", json=OPENAI_BODY)
    err = r.json()["error"]
    assert (r.status_code, err["type"]) == openai
    assert err["code"] == code
    assert err["message"]
    r = client.post("/messages", json=ANTHROPIC_BODY)
    body = r.json()
    assert body["type"] == "error"
    assert (r.status_code, body["error"]["type"]) == anthropic
    assert body["error"]["message"]


def test_error_code_with_forced_status(fake: FakeProvider, client: httpx.Client) -> None:
    """An explicit status wins over the error code's usual status; the body keeps the code."""
    fake.set_behaviour(Behaviour(status=503, error_code="rate_limit_exceeded"))
    r = client.post("/chat/completions", json=OPENAI_BODY)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def _statuses(seed: int, n: int = 40) -> list[int]:
    with (
        FakeProvider(Behaviour(fail_rate=0.5, fail_status=503, jitter_ms=1), seed=seed) as fp,
        httpx.Client(base_url=fp.url + "/v1") as c,
    ):
        return [c.post("/chat/completions", json=OPENAI_BODY).status_code for _ in range(n)]


def test_failures_are_deterministic_given_seed() -> None:
    """The same seed gives the same failure sequence; another seed gives another one."""
    first = _statuses(7)
    assert set(first) == {200, 503}
    assert _statuses(7) == first
    assert _statuses(8) != first


def test_fail_rate_applies_to_model_listing(fake: FakeProvider, client: httpx.Client) -> None:
    """A failing provider fails its model listing too, so health probes can see it."""
    fake.set_behaviour(Behaviour(fail_rate=1.0, fail_status=502))
    assert client.get("/models").status_code == 502


# ----------------------------------------------------------------------------- timing


def test_latency_delays_response(fake: FakeProvider, client: httpx.Client) -> None:
    """latency_ms delays the JSON answer."""
    fake.set_behaviour(Behaviour(latency_ms=100))
    start = time.perf_counter()
    assert client.post("/chat/completions", json=OPENAI_BODY).status_code == 200
    assert time.perf_counter() - start >= 0.095


def test_jitter_is_bounded(fake: FakeProvider, client: httpx.Client) -> None:
    """jitter_ms adds at most jitter_ms of extra latency."""
    fake.set_behaviour(Behaviour(latency_ms=20, jitter_ms=30))
    for _ in range(3):
        start = time.perf_counter()
        client.post("/chat/completions", json=OPENAI_BODY)
        assert 0.019 <= time.perf_counter() - start < 0.5


def _arrivals(client: httpx.Client, path: str, body: dict[str, Any]) -> list[tuple[float, str]]:
    """Return (seconds since the request, line) for every non-empty SSE line as it arrives."""
    start = time.perf_counter()
    out = []
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        for line in r.iter_lines():
            if line:
                out.append((time.perf_counter() - start, line))
    return out


def test_ttft_and_inter_token(fake: FakeProvider, client: httpx.Client) -> None:
    """A stream waits ttft_ms for the first chunk and inter_token_ms between chunks."""
    fake.set_behaviour(Behaviour(latency_ms=1000, ttft_ms=80, inter_token_ms=30, output_tokens=4))
    lines = _arrivals(client, "/chat/completions", OPENAI_BODY)
    content = [t for t, line in lines if '"content":"' in line and '"role"' not in line]
    assert len(content) == 4
    assert 0.075 <= content[0] < 0.5
    assert content[-1] - content[0] >= 3 * 0.028
    assert lines[-1][1] == "data: [DONE]"


def test_stall_mid_stream(fake: FakeProvider, client: httpx.Client) -> None:
    """stall_after_chunks pauses the stream for stall_ms after that many chunks."""
    fake.set_behaviour(Behaviour(stall_after_chunks=2, stall_ms=150, output_tokens=4))
    lines = _arrivals(client, "/messages", ANTHROPIC_BODY)
    deltas = [t for t, line in lines if line.startswith("data:") and "text_delta" in line]
    assert len(deltas) == 4
    assert deltas[1] < 0.1
    assert deltas[2] - deltas[1] >= 0.14
    assert lines[-1][1] == 'data: {"type":"message_stop"}'


# ----------------------------------------------------------------------------- broken streams


def test_truncated_streams_have_no_terminator(fake: FakeProvider, client: httpx.Client) -> None:
    """truncate_after_chunks ends each stream cleanly after N chunks with no terminator."""
    fake.set_behaviour(Behaviour(truncate_after_chunks=3))
    r = client.post("/chat/completions", json={**OPENAI_BODY, "stream": True})
    assert r.headers["connection"] == "close"  # never offered for reuse, then closed
    data = openai_stream(client)
    assert len(data) == 1 + 3
    assert "[DONE]" not in data
    names = [name for name, _ in anthropic_stream(client)]
    assert names.count("content_block_delta") == 3
    assert "message_stop" not in names
    assert "message_delta" not in names


def test_error_event_mid_stream(fake: FakeProvider, client: httpx.Client) -> None:
    """error_event_after_chunks sends the format's error event after N chunks."""
    fake.set_behaviour(Behaviour(error_event_after_chunks=2))
    data = openai_stream(client)
    assert len(data) == 1 + 2 + 1
    assert json.loads(data[-1])["error"]["type"] == "server_error"
    events = anthropic_stream(client)
    assert [name for name, _ in events][-2:] == ["content_block_delta", "error"]
    error = json.loads(events[-1][1])
    assert error == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_malformed_html(fake: FakeProvider, client: httpx.Client) -> None:
    """malformed="html" answers 200 with an HTML page, even to a stream request."""
    fake.set_behaviour(Behaviour(malformed="html"))
    for body in (OPENAI_BODY, {**OPENAI_BODY, "stream": True}):
        r = client.post("/chat/completions", json=body)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert r.text.startswith("<!DOCTYPE html>")


def test_malformed_wrong_json(fake: FakeProvider, client: httpx.Client) -> None:
    """malformed="wrong_json" answers 200 with JSON of the wrong shape."""
    fake.set_behaviour(Behaviour(malformed="wrong_json"))
    body = client.post("/messages", json=ANTHROPIC_BODY).json()
    assert isinstance(body, dict)
    assert "content" in body
    assert not isinstance(body["content"], list)
    assert "choices" in body
    assert not isinstance(body["choices"], list)
    data = openai_stream(client)
    assert [json.loads(d) for d in data[:-1]] == [[1, 2, 3]] * 3


def test_malformed_not_utf8(fake: FakeProvider, client: httpx.Client) -> None:
    """malformed="not_utf8" puts invalid UTF-8 bytes in JSON and stream bodies."""
    fake.set_behaviour(Behaviour(malformed="not_utf8"))
    r = client.post("/chat/completions", json=OPENAI_BODY)
    assert r.status_code == 200
    with pytest.raises(UnicodeDecodeError):
        r.content.decode("utf-8")
    r = client.post("/messages", json={**ANTHROPIC_BODY, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    with pytest.raises(UnicodeDecodeError):
        r.content.decode("utf-8")
    assert r.content.rstrip().endswith(b'{"type":"message_stop"}')


def test_malformed_huge_is_streamed(fake: FakeProvider, client: httpx.Client) -> None:
    """malformed="huge" streams a body far over 8 MiB that a client can stop reading."""
    fake.set_behaviour(Behaviour(malformed="huge"))
    with client.stream("POST", "/chat/completions", json=OPENAI_BODY) as r:
        assert r.status_code == 200
        assert "content-length" not in r.headers
        received = 0
        for piece in r.iter_raw():
            received += len(piece)
            if received > 9 << 20:
                break
    assert received > 9 << 20
    fake.set_behaviour(Behaviour(malformed="huge", huge_bytes=10 << 20))
    r = client.post("/messages", json={**ANTHROPIC_BODY, "stream": True})
    assert len(r.content) > 10 << 20
    assert r.content.count(b"\n") == 2  # one single oversized SSE line


# ----------------------------------------------------------------------------- resets


def _raw_exchange(fake: FakeProvider, body: dict[str, Any]) -> tuple[bytes, BaseException | None]:
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


def test_reset_before_response(fake: FakeProvider, client: httpx.Client) -> None:
    """reset="before_response" closes the connection with an RST and no answer."""
    fake.set_behaviour(Behaviour(reset="before_response"))
    received, error = _raw_exchange(fake, OPENAI_BODY)
    assert received == b""
    assert isinstance(error, ConnectionResetError)
    with pytest.raises(httpx.TransportError):
        client.post("/chat/completions", json=OPENAI_BODY)


@pytest.mark.parametrize("stream", [False, True])
def test_reset_mid_body(fake: FakeProvider, client: httpx.Client, stream: bool) -> None:
    """reset="mid_body" sends the head and part of the body, then an RST."""
    fake.set_behaviour(Behaviour(reset="mid_body"))
    received, error = _raw_exchange(fake, {**OPENAI_BODY, "stream": stream})
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    head, _, body = received.partition(b"\r\n\r\n")
    assert body
    assert b"[DONE]" not in body
    if not stream:
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert len(body) < length
    assert isinstance(error, ConnectionResetError)
    with pytest.raises(httpx.TransportError):
        client.post("/chat/completions", json={**OPENAI_BODY, "stream": stream})


# ----------------------------------------------------------------------------- concurrency


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


def test_behaviour_rejects_unknown_modes() -> None:
    """Behaviour refuses modes and rates the server could not honour."""
    for bad in ({"malformed": "xml"}, {"reset": "later"}, {"fail_rate": 1.5}, {"status": 42}):
        with pytest.raises(ValueError):
            Behaviour(**bad)


# ----------------------------------------------------------------------------- lifecycle


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


# ----------------------------------------------------------------------------- CLI


def test_cli_serves_until_terminated() -> None:
    """`routeledger fake-provider` prints its URL, answers, and exits on SIGTERM."""
    proc = subprocess.Popen(
        [str(ROUTELEDGER), "fake-provider", "--port", "0", "--output-tokens", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        r = httpx.post(url + "/v1/chat/completions", json=OPENAI_BODY, timeout=5)
        assert r.json()["usage"]["completion_tokens"] == 3
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_cli_refuses_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    """`fake-provider --host 0.0.0.0` is refused with a clear error."""
    assert main(["fake-provider", "--host", "0.0.0.0"]) == 2
    assert "not a loopback address" in capsys.readouterr().err


def test_restart_serves_on_the_same_port(fake: FakeProvider) -> None:
    """After stop(), start() serves again on the same URL (a provider coming back)."""
    url = fake.url
    fake.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/v1/models", timeout=2)
    fake.start()
    assert fake.url == url
    assert httpx.get(url + "/v1/models", timeout=2).status_code == 200
