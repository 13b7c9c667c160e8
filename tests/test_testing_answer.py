"""Tests of how the fake provider answers under a Behaviour (routeledger.testing._answer)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_support import (
    ANTHROPIC_BODY,
    OPENAI_BODY,
    anthropic_stream,
    openai_stream,
    raw_exchange,
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


def test_reset_before_response(fake: FakeProvider, client: httpx.Client) -> None:
    """reset="before_response" closes the connection with an RST and no answer."""
    fake.set_behaviour(Behaviour(reset="before_response"))
    received, error = raw_exchange(fake, OPENAI_BODY)
    assert received == b""
    assert isinstance(error, ConnectionResetError)
    with pytest.raises(httpx.TransportError):
        client.post("/chat/completions", json=OPENAI_BODY)


@pytest.mark.parametrize("stream", [False, True])
def test_reset_mid_body(fake: FakeProvider, client: httpx.Client, stream: bool) -> None:
    """reset="mid_body" sends the head and part of the body, then an RST."""
    fake.set_behaviour(Behaviour(reset="mid_body"))
    received, error = raw_exchange(fake, {**OPENAI_BODY, "stream": stream})
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
