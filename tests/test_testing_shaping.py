"""The fake provider's shaped answers: extra headers, trickled bytes, its own rate limit."""

from __future__ import annotations

import datetime
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from routeledger.testing import Behaviour, FakeProvider

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(Behaviour()) as f:
        yield f


def post(fake: FakeProvider, path: str = "/v1/chat/completions") -> httpx.Response:
    headers = {"anthropic-version": "2023-06-01"} if path == "/v1/messages" else {}
    return httpx.post(fake.url + path, json=CHAT, headers=headers, timeout=5.0)


def test_extra_headers_go_into_every_answers_head(fake: FakeProvider) -> None:
    """``headers`` appear in the answer's head; the body is the usual completion."""
    fake.set_behaviour(Behaviour(headers={"x-ratelimit-remaining-requests": "59"}))
    response = post(fake)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining-requests"] == "59"
    assert response.json()["object"] == "chat.completion"


def test_a_trickled_head_arrives_one_byte_at_a_time(fake: FakeProvider) -> None:
    """With ``trickle_head_ms`` the head takes at least a gap per byte; the body then follows."""
    fake.set_behaviour(Behaviour(trickle_head_ms=2))
    received = b""
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5.0) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        elapsed = time.monotonic() - started
    head = received[: received.index(b"\r\n\r\n") + 4]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    # The server sleeps 2 ms after each byte of the head: it cannot be quicker than that.
    assert elapsed >= (len(head) - 1) * 0.002


def test_the_fakes_own_limit_refuses_past_its_window_with_openai_headers(
    fake: FakeProvider,
) -> None:
    """Two admitted a window; the third is a 429 saying when the oldest expires."""
    fake.set_behaviour(Behaviour(rate_limit_requests=2, rate_limit_window_s=60.0))
    assert [post(fake).status_code for _ in range(2)] == [200, 200]
    refused = post(fake)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    ms = int(refused.headers["retry-after-ms"])
    assert 59_000 < ms <= 60_000
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == f"{ms}ms"
    assert fake.stats.requests == 3


def test_the_fakes_own_limit_speaks_anthropic_headers_on_the_messages_path(
    fake: FakeProvider,
) -> None:
    """On ``/v1/messages`` the 429 carries ``anthropic-ratelimit-requests-*`` (RFC 3339)."""
    fake.set_behaviour(
        Behaviour(rate_limit_requests=1, rate_limit_window_s=30.0, rate_limit_reset_only=True)
    )
    assert post(fake, "/v1/messages").status_code == 200
    refused = post(fake, "/v1/messages")
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after" not in refused.headers and "retry-after-ms" not in refused.headers
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = datetime.datetime.fromisoformat(refused.headers["anthropic-ratelimit-requests-reset"])
    assert reset.tzinfo is not None
    assert 25 < reset.timestamp() - time.time() <= 31


def test_the_window_slides_and_models_requests_do_not_count(fake: FakeProvider) -> None:
    """Probes (``GET /v1/models``) are never limited; a request past the window is admitted."""
    fake.set_behaviour(Behaviour(rate_limit_requests=1, rate_limit_window_s=0.2))
    assert post(fake).status_code == 200
    assert httpx.get(fake.url + "/v1/models", timeout=5.0).status_code == 200
    assert post(fake).status_code == 429
    time.sleep(0.25)  # the fake's own window is on real time: nothing to inject
    assert post(fake).status_code == 200


@pytest.mark.parametrize(
    "fields",
    [
        {"rate_limit_requests": 0},
        {"rate_limit_window_s": 0.0},
        {"headers": {"bad name": "x"}},
        {"headers": {"x-ok": "split\r\nx-evil: 1"}},
    ],
)
def test_shaping_values_that_cannot_be_honoured_are_refused(fields: dict[str, object]) -> None:
    """A limit under one, an empty window or a header that would break the head: ValueError."""
    with pytest.raises(ValueError):
        Behaviour(**fields)  # type: ignore[arg-type]
