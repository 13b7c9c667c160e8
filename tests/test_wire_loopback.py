"""End-to-end tests of both wire adapters against the loopback fake provider."""

from __future__ import annotations

import email.utils
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from routeledger.actors.wire import make_adapter
from routeledger.events import (
    AuthenticationError,
    ContextLengthExceeded,
    Message,
    ModelSpec,
    ProtocolError,
    ProviderConfig,
    ProviderConnectError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Request,
    Secret,
    StreamChunk,
    StreamInterrupted,
    UnsupportedByProvider,
    Usage,
)
from routeledger.testing import Behaviour, FakeProvider

KINDS = ["openai", "anthropic"]
MODEL = ModelSpec(name="fake-model", input_per_mtok=1.0, output_per_mtok=2.0)
CANARY = "sk-loopback-canary-91c2"
NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    """Run one fake provider for the module."""
    with FakeProvider(Behaviour(), seed=0) as server:
        yield server


@pytest.fixture(params=KINDS)
def adapter(request: pytest.FixtureRequest, fake: FakeProvider) -> Iterator[Any]:
    """Return an adapter of each format on its own real client; resets the behaviour."""
    fake.set_behaviour(Behaviour())
    fake.reset_stats()
    a: Any = make_adapter(
        ProviderConfig(
            name=f"fake-{request.param}",
            kind=request.param,
            base_url=fake.url + "/v1",
            models=[MODEL],
            max_line_bytes=64 * 1024,
            timeout_s=10.0,
        ),
        api_key=Secret(CANARY),
        clock=lambda: NOW,
    )
    yield a
    a.close()
    fake.set_behaviour(Behaviour())


def req(**kwargs: Any) -> Request:
    """Return a one-message request."""
    return Request(
        model="fake-model", messages=[Message(role="user", content="Say hello")], **kwargs
    )


def test_complete(adapter: Any, fake: FakeProvider) -> None:
    """A completion round-trips: content, model, usage and cost."""
    fake.set_behaviour(Behaviour(content="Hello there", output_tokens=3))
    request = req(max_tokens=16)
    resp = adapter.complete(request, MODEL)
    assert resp.content == "Hello there"
    assert resp.model == "fake-model"
    assert resp.provider == adapter.config.name
    assert resp.request_id == request.request_id
    assert resp.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.output_tokens == 3
    assert resp.cost == MODEL.cost(resp.usage)
    headers = fake.stats.last_request_headers
    if adapter.kind == "openai":
        assert headers["authorization"] == f"Bearer {CANARY}"
    else:
        assert headers["x-api-key"] == CANARY
        assert headers["anthropic-version"] == "2023-06-01"


def test_stream(adapter: Any, fake: FakeProvider) -> None:
    """A stream yields the text in pieces and ends with finish reason, usage and cost."""
    fake.set_behaviour(Behaviour(content="one two three four", output_tokens=4))
    chunks = list(adapter.stream(req(stream=True), MODEL))
    assert "".join(c.delta for c in chunks) == "one two three four"
    assert len(chunks) == 5
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert isinstance(last.usage, Usage)
    assert last.usage.output_tokens == 4
    assert last.cost == MODEL.cost(last.usage)
    assert all(c.finish_reason is None for c in chunks[:-1])
    if adapter.kind == "openai":
        assert fake.stats.last_request_json["stream_options"] == {"include_usage": True}


def test_probe(adapter: Any, fake: FakeProvider) -> None:
    """The probe GETs /v1/models and nothing else."""
    adapter.probe(timeout_s=5.0)
    assert fake.stats.by_path == {"/v1/models": 1}


def test_keep_alive_reuses_connections(adapter: Any, fake: FakeProvider) -> None:
    """Sequential requests share one keep-alive connection."""
    for _ in range(5):
        adapter.complete(req(), MODEL)
    list(adapter.stream(req(), MODEL))
    assert fake.stats.connections == 1


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("rate_limit_exceeded", RateLimited),
        ("insufficient_quota", QuotaExceeded),
        ("context_length_exceeded", ContextLengthExceeded),
        ("invalid_api_key", AuthenticationError),
        ("permission_denied", AuthenticationError),
        ("model_not_found", UnsupportedByProvider),
        ("server_error", ProviderUnavailable),
        ("overloaded", ProviderUnavailable),
    ],
)
def test_provider_error_codes(
    adapter: Any, fake: FakeProvider, code: str, error: type[ProviderError]
) -> None:
    """Each provider error, in each format's own status and body, maps to its type."""
    fake.set_behaviour(Behaviour(error_code=code))
    for call in (
        lambda: adapter.complete(req(), MODEL),
        lambda: next(iter(adapter.stream(req(), MODEL))),
    ):
        with pytest.raises(ProviderError) as info:
            call()
        assert type(info.value) is error
        assert CANARY not in str(info.value)


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (Behaviour(status=429, retry_after="7"), 7.0),
        (Behaviour(status=429, retry_after=email.utils.formatdate(NOW + 20, usegmt=True)), 20.0),
        (Behaviour(status=429, retry_after_ms=1500), 1.5),
        (Behaviour(status=429, retry_after="soon"), None),
        (Behaviour(status=429), None),
    ],
)
def test_retry_after(
    adapter: Any, fake: FakeProvider, behaviour: Behaviour, expected: float | None
) -> None:
    """A 429 carries Retry-After (seconds, HTTP-date or milliseconds)."""
    fake.set_behaviour(behaviour)
    with pytest.raises(RateLimited) as info:
        adapter.complete(req(), MODEL)
    assert info.value.retry_after_s == expected


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504, 529])
def test_unavailable_statuses(adapter: Any, fake: FakeProvider, status: int) -> None:
    """Transient server statuses are ProviderUnavailable, for calls and probes."""
    fake.set_behaviour(Behaviour(status=status))
    with pytest.raises(ProviderUnavailable):
        adapter.complete(req(), MODEL)
    with pytest.raises(ProviderUnavailable):
        adapter.probe()


@pytest.mark.parametrize("malformed", ["html", "wrong_json", "not_utf8", "huge"])
def test_malformed_answers(adapter: Any, fake: FakeProvider, malformed: str) -> None:
    """Malformed 200 answers are ProtocolErrors, whole or streamed, before any chunk."""
    fake.set_behaviour(Behaviour(malformed=malformed, huge_bytes=12 << 20))
    with pytest.raises(ProtocolError):
        adapter.complete(req(), MODEL)
    with pytest.raises(ProtocolError):
        list(adapter.stream(req(), MODEL))


def test_truncated_stream(adapter: Any, fake: FakeProvider) -> None:
    """A stream cut after two chunks without its terminator raises StreamInterrupted."""
    fake.set_behaviour(Behaviour(output_tokens=5, truncate_after_chunks=2))
    received: list[StreamChunk] = []
    with pytest.raises(StreamInterrupted):
        for chunk in adapter.stream(req(), MODEL):
            received.append(chunk)
    assert len(received) == 2


def test_truncated_before_first_chunk(adapter: Any, fake: FakeProvider) -> None:
    """A stream cut before any text may fail over: ProviderUnavailable, not interrupted."""
    fake.set_behaviour(Behaviour(output_tokens=5, truncate_after_chunks=0))
    with pytest.raises(ProviderUnavailable) as info:
        list(adapter.stream(req(), MODEL))
    assert not isinstance(info.value, StreamInterrupted)


def test_error_event_mid_stream(adapter: Any, fake: FakeProvider) -> None:
    """An error event after two chunks raises the mapped error (overloaded / server error)."""
    fake.set_behaviour(Behaviour(output_tokens=5, error_event_after_chunks=2))
    received: list[StreamChunk] = []
    with pytest.raises(ProviderUnavailable):
        for chunk in adapter.stream(req(), MODEL):
            received.append(chunk)
    assert len(received) == 2


def test_stall_mid_stream_times_out(adapter: Any, fake: FakeProvider) -> None:
    """A stream that stalls longer than the timeout raises ProviderTimeout."""
    fake.set_behaviour(Behaviour(output_tokens=5, stall_after_chunks=1, stall_ms=5000))
    received: list[StreamChunk] = []
    with pytest.raises(ProviderTimeout):
        for chunk in adapter.stream(req(), MODEL, timeout_s=0.2):
            received.append(chunk)
    assert len(received) == 1


def test_reset_before_response(adapter: Any, fake: FakeProvider) -> None:
    """A connection reset before any answer is ProviderUnavailable (it may have been billed)."""
    fake.set_behaviour(Behaviour(reset="before_response"))
    with pytest.raises(ProviderUnavailable):
        adapter.complete(req(), MODEL)
    with pytest.raises(ProviderUnavailable):
        list(adapter.stream(req(), MODEL))


def test_reset_mid_body(adapter: Any, fake: FakeProvider) -> None:
    """A reset in the middle of a body is ProviderUnavailable, never a raw httpx error."""
    fake.set_behaviour(Behaviour(reset="mid_body", output_tokens=5))
    with pytest.raises(ProviderUnavailable):
        adapter.complete(req(), MODEL)
    with pytest.raises(ProviderUnavailable):
        list(adapter.stream(req(), MODEL))


def test_recovers_after_failures(adapter: Any, fake: FakeProvider) -> None:
    """After resets and errors the same adapter and client serve normally again."""
    fake.set_behaviour(Behaviour(reset="mid_body"))
    with pytest.raises(ProviderUnavailable):
        adapter.complete(req(), MODEL)
    fake.set_behaviour(Behaviour(content="fine", output_tokens=1))
    assert adapter.complete(req(), MODEL).content == "fine"


def test_connection_refused_is_connect_error() -> None:
    """Nothing listening on the port is a ProviderConnectError (never sent)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for kind in KINDS:
        a: Any = make_adapter(
            ProviderConfig(
                name="down", kind=kind, base_url=f"http://127.0.0.1:{port}/v1", models=[MODEL]
            )
        )
        try:
            with pytest.raises(ProviderConnectError):
                a.complete(req(), MODEL)
            with pytest.raises(ProviderConnectError):
                list(a.stream(req(), MODEL))
            with pytest.raises(ProviderConnectError):
                a.probe()
        finally:
            a.close()


def test_client_keeps_max_concurrency_connections_alive() -> None:
    """The client never blocks on a pool of its own (the runtime's budget bounds concurrency)
    and keeps at most max_concurrency connections alive afterwards."""
    errors: list[BaseException] = []
    with FakeProvider(Behaviour(latency_ms=30), seed=0) as own:
        a: Any = make_adapter(
            ProviderConfig(
                name="bounded",
                kind="openai",
                base_url=own.url + "/v1",
                models=[MODEL],
                max_concurrency=3,
            )
        )

        def work() -> None:
            try:
                a.complete(req(), MODEL)
            except BaseException as exc:  # collected and asserted on below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(9)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            idle = len(a._client._transport._pool.connections)
        finally:
            a.close()
        stats = own.stats.snapshot()
    assert errors == []
    assert stats["requests"] == 9
    assert stats["max_concurrent"] > 3  # not queued behind a pool sized at start
    assert idle <= 3
