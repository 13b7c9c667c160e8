"""OpenTelemetry traces: span names, structure and attributes against a real runtime's figures."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from routeledger import (
    AllProvidersFailed,
    FailoverConfig,
    HealthConfig,
    Requirements,
    Runtime,
)
from routeledger.fake_provider import Behaviour, FakeProvider

try:
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError:
    # CI installs the test extra (the SDK included): there, a missing package is a failure.
    if os.environ.get("CI"):
        raise
    pytest.skip("the otel extra (and opentelemetry-sdk) is not installed", allow_module_level=True)

from routeledger.events import Message, ToolCall
from routeledger.otel import _input_messages, uninstrument

PROMPT = "hello"  # the text of conftest's make_request


class Traced:
    """A runtime over a bad (500) and a good fake provider, traced into memory."""

    def __init__(self, rt: Runtime, exporter: InMemorySpanExporter, tp: TracerProvider) -> None:
        self.rt = rt
        self.exporter = exporter
        self.tracer = tp.get_tracer("test")

    def spans(self) -> list[ReadableSpan]:
        """Return the finished spans, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def requests(self) -> list[ReadableSpan]:
        """Return the finished request spans (those whose parent is not a routeledger span)."""
        ids = {s.context.span_id for s in self.spans() if s.name.startswith("chat ")}
        return [
            s
            for s in self.spans()
            if s.name.startswith("chat ") and (s.parent is None or s.parent.span_id not in ids)
        ]

    def attempts_of(self, request: ReadableSpan) -> list[ReadableSpan]:
        """Return a request span's attempt spans, by attempt number."""
        children = [
            s
            for s in self.spans()
            if s.parent is not None and s.parent.span_id == request.context.span_id
        ]
        return sorted(children, key=lambda s: attr(s, "routeledger.attempt"))


def attr(span: ReadableSpan, key: str) -> Any:
    """Return one attribute of ``span`` (KeyError if absent)."""
    assert span.attributes is not None
    return span.attributes[key]


@pytest.fixture
def traced(
    fakes: Callable[..., list[FakeProvider]], config_for: Any, db: Path
) -> Iterator[Callable[..., Traced]]:
    """Return a starter of a traced runtime: ``traced(capture_content=False)``."""
    (good,) = fakes(1, Behaviour(latency_ms=2))
    (bad,) = fakes(1, Behaviour(status=500))
    cfg = config_for(
        {"bad": bad, "good": good},
        per_provider={"bad": {"priority": 10}},
        failover=FailoverConfig(backoff_base_s=0.0, backoff_max_s=0.0),
        health=HealthConfig(failure_threshold=1000, error_rate_threshold=1.0, min_calls=20),
    )
    runtimes: list[Runtime] = []

    def start(**options: Any) -> Traced:
        exporter = InMemorySpanExporter()
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(exporter))
        rt = Runtime.start(cfg, event_log=db, active_health_checks=False)
        runtimes.append(rt)
        rt.instrument_tracing(tp, **options)
        return Traced(rt, exporter, tp)

    yield start
    for rt in runtimes:
        rt.close()


@pytest.fixture
def workload(traced: Callable[..., Traced], req: Any) -> Traced:
    """Run a success, a failover, a stream (with a failover) and an error, then flush."""
    t = traced()
    t.rt.complete(req(), preferred_provider="good")
    t.rt.complete(req())
    for _chunk in t.rt.stream(req()):
        pass
    with pytest.raises(AllProvidersFailed):
        t.rt.complete(req(), requirements=Requirements(exclude_providers=["good"]))
    t.rt.flush()
    return t


def test_each_request_is_a_client_span_named_after_the_operation_and_model(
    workload: Traced,
) -> None:
    """Four requests make four ``chat fake-model`` CLIENT spans with the GenAI attributes."""
    requests = workload.requests()
    assert len(requests) == 4
    for span in requests:
        assert span.name == "chat fake-model"
        assert span.kind is SpanKind.CLIENT
        assert attr(span, "gen_ai.operation.name") == "chat"
        assert attr(span, "gen_ai.provider.name") == attr(span, "gen_ai.system") == "openai"
        assert attr(span, "gen_ai.request.model") == "fake-model"
        assert attr(span, "gen_ai.request.max_tokens") == 8
    assert [attr(s, "routeledger.stream") for s in requests] == [False, False, True, False]


def test_a_success_has_one_attempt_with_the_decision_and_the_server(workload: Traced) -> None:
    """The first request's one attempt carries usage, response model, route and server."""
    success = workload.requests()[0]
    (attempt,) = workload.attempts_of(success)
    assert attempt.kind is SpanKind.CLIENT
    assert attempt.name == "chat fake-model"
    assert attempt.context.trace_id == success.context.trace_id
    assert attr(attempt, "routeledger.provider") == attr(success, "routeledger.provider") == "good"
    assert attr(attempt, "routeledger.attempt") == 1
    assert attr(attempt, "routeledger.route.strategy") == "round-robin"
    assert attr(attempt, "routeledger.route.reason")
    assert 0.0 <= attr(attempt, "routeledger.route.confidence") <= 1.0
    assert attr(attempt, "server.address") == "127.0.0.1"
    assert attr(attempt, "server.port") > 0
    assert attr(attempt, "gen_ai.response.model") == attr(success, "gen_ai.response.model")
    assert attr(attempt, "gen_ai.usage.output_tokens") > 0
    assert attr(attempt, "gen_ai.response.finish_reasons") == ("stop",)
    assert attr(success, "routeledger.attempts") == 1
    assert attempt.status.status_code is StatusCode.UNSET
    assert "error.type" not in (success.attributes or {})


def test_a_failover_has_a_failed_attempt_then_a_served_one(workload: Traced) -> None:
    """The second request: attempt 1 on bad (500, error.type), attempt 2 on good."""
    failover = workload.requests()[1]
    first, second = workload.attempts_of(failover)
    assert attr(first, "routeledger.provider") == "bad"
    assert attr(first, "error.type") == "ProviderUnavailable"
    assert attr(first, "http.response.status_code") == 500
    assert first.status.status_code is StatusCode.ERROR
    assert first.end_time is not None and second.start_time is not None
    assert first.end_time <= second.start_time
    assert attr(second, "routeledger.provider") == "good"
    assert attr(second, "routeledger.attempt") == 2
    assert "error.type" not in (second.attributes or {})
    assert attr(failover, "routeledger.attempts") == 2
    assert attr(failover, "routeledger.failed_providers") == ("bad",)
    assert failover.status.status_code is StatusCode.UNSET


def test_a_stream_span_covers_its_chunks_and_time_to_first_chunk(workload: Traced) -> None:
    """The stream's served attempt has a time to first chunk and usage; both spans ended."""
    stream = workload.requests()[2]
    *_, served = workload.attempts_of(stream)
    assert attr(served, "routeledger.provider") == "good"
    assert attr(served, "gen_ai.response.time_to_first_chunk") > 0
    assert attr(stream, "gen_ai.usage.output_tokens") == attr(served, "gen_ai.usage.output_tokens")
    assert attr(stream, "routeledger.stream") is True
    assert stream.end_time is not None and served.end_time is not None
    assert served.end_time <= stream.end_time


def test_an_error_ends_the_request_span_with_its_error_type(workload: Traced) -> None:
    """The failed request's span has error.type AllProvidersFailed and an error status."""
    error = workload.requests()[3]
    assert attr(error, "error.type") == "AllProvidersFailed"
    assert error.status.status_code is StatusCode.ERROR
    assert error.status.description
    attempts = workload.attempts_of(error)
    assert attempts and all(attr(a, "routeledger.provider") == "bad" for a in attempts)
    assert attr(error, "routeledger.attempts") == len(attempts)


def test_attempt_spans_sum_to_get_metrics_and_request_spans_to_get_usage(
    workload: Traced,
) -> None:
    """Per provider, attempt spans' outcomes, tokens and cost equal get_metrics()."""
    rt = workload.rt
    requests = workload.requests()
    attempts = [a for r in requests for a in workload.attempts_of(r)]
    assert len(workload.spans()) == len(requests) + len(attempts)
    metrics = rt.get_metrics()
    for name, m in metrics.items():
        mine = [a for a in attempts if attr(a, "routeledger.provider") == name]
        ok = [a for a in mine if "error.type" not in (a.attributes or {})]
        assert len(ok) == m.successes
        assert len(mine) - len(ok) == m.failures
        assert sum(attr(a, "gen_ai.usage.input_tokens") for a in ok) == m.input_tokens
        assert sum(attr(a, "gen_ai.usage.output_tokens") for a in ok) == m.output_tokens
        assert sum(attr(a, "routeledger.cost") for a in ok) == pytest.approx(m.cost)
    assert metrics["good"].successes == 3 and metrics["bad"].failures >= 3
    usage = rt.get_usage("all")
    assert len(requests) == usage.requests
    assert sum("error.type" in (r.attributes or {}) for r in requests) == usage.errors == 1
    served = [r for r in requests if "error.type" not in (r.attributes or {})]
    assert sum(attr(r, "gen_ai.usage.input_tokens") for r in served) == usage.input_tokens
    assert sum(attr(r, "gen_ai.usage.output_tokens") for r in served) == usage.output_tokens


def test_no_prompt_or_completion_text_is_recorded_by_default(
    traced: Callable[..., Traced], req: Any
) -> None:
    """Without capture_content, no attribute or event holds the prompt or the answer."""
    t = traced()
    response = t.rt.complete(req(), preferred_provider="good")
    chunks = [c.delta for c in t.rt.stream(req(), preferred_provider="good")]
    texts = [PROMPT, response.content, *[c for c in chunks if len(c) > 2]]
    assert response.content
    for span in t.spans():
        values = [str(v) for v in (span.attributes or {}).values()]
        values += [str(v) for e in span.events for v in (e.attributes or {}).values()]
        assert not [v for v in values for text in texts if text in v], span.name
        assert "gen_ai.input.messages" not in (span.attributes or {})


def test_capture_content_records_the_messages_in_the_conventions_schema(
    traced: Callable[..., Traced], req: Any
) -> None:
    """With capture_content=True the request span has the input and output messages."""
    t = traced(capture_content=True)
    response = t.rt.complete(req(), preferred_provider="good")
    (span,) = t.requests()
    assert json.loads(attr(span, "gen_ai.input.messages")) == [
        {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}
    ]
    assert json.loads(attr(span, "gen_ai.output.messages")) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": response.content}],
            "finish_reason": "stop",
        }
    ]
    (attempt,) = t.attempts_of(span)
    assert "gen_ai.input.messages" not in (attempt.attributes or {})


def test_tool_calls_and_results_follow_the_input_message_schema() -> None:
    """Tool calls become tool_call parts; a tool message becomes a tool_call_response part."""
    call = ToolCall(id="c1", name="weather", arguments='{"city": "Paris"}')
    messages = [
        Message(role="system", content="be brief"),
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", tool_call_id="c1", content="rainy"),
    ]
    assert json.loads(_input_messages(messages)) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "c1",
                    "name": "weather",
                    "arguments": '{"city": "Paris"}',
                }
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "c1", "response": "rainy"}],
        },
    ]


def test_the_callers_current_span_is_the_parent_of_complete_and_stream(
    traced: Callable[..., Traced], req: Any
) -> None:
    """A request made inside the caller's span is its child, in the same trace."""
    t = traced()
    with t.tracer.start_as_current_span("caller") as caller:
        t.rt.complete(req(), preferred_provider="good")
        it = t.rt.stream(req(), preferred_provider="good")
    for _chunk in it:  # iterated outside: the parent is where the stream was asked for
        pass
    requests = t.requests()
    assert [r.name for r in requests] == ["chat fake-model"] * 2
    for r in requests:
        assert r.parent is not None
        assert r.parent.span_id == caller.get_span_context().span_id
        assert r.context.trace_id == caller.get_span_context().trace_id


def test_the_callers_span_is_the_parent_of_acomplete_and_astream(
    traced: Callable[..., Traced], req: Any
) -> None:
    """acomplete and astream run on worker threads, yet their parent is the caller's span."""
    t = traced()

    async def main() -> int:
        with t.tracer.start_as_current_span("caller") as caller:
            await t.rt.acomplete(req(), preferred_provider="good")
            async for _chunk in t.rt.astream(req(), preferred_provider="good"):
                pass
        return caller.get_span_context().span_id

    caller_id = asyncio.run(main())
    requests = t.requests()
    assert len(requests) == 2
    assert all(r.parent is not None and r.parent.span_id == caller_id for r in requests)
    assert all(len(t.attempts_of(r)) == 1 for r in requests)


def test_a_stream_closed_early_ends_its_spans_as_cancelled(
    traced: Callable[..., Traced], req: Any
) -> None:
    """Closing a stream after its first chunk ends both spans at once, not as errors."""
    t = traced()
    it = t.rt.stream(req(max_tokens=64), preferred_provider="good")
    next(it)
    assert t.spans() == []  # still open while the caller reads
    it.close()  # type: ignore[attr-defined]
    (span,) = t.requests()
    (attempt,) = t.attempts_of(span)
    for s in (span, attempt):
        assert attr(s, "routeledger.cancelled") is True
        assert s.status.status_code is StatusCode.UNSET
        assert "error.type" not in (s.attributes or {})


class OpenSpans(SpanProcessor):
    """Counts the spans started and not yet ended."""

    def __init__(self) -> None:
        self.open = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.open += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.open -= 1


def test_a_stream_never_iterated_leaves_no_span_open(
    fakes: Callable[..., list[FakeProvider]], config_for: Any, req: Any, db: Path
) -> None:
    """A stream asked for, then closed before its first chunk was read, starts no span."""
    (good,) = fakes(1)
    tp = TracerProvider()
    spans = OpenSpans()
    tp.add_span_processor(spans)
    with Runtime.start(config_for({"good": good}), event_log=db) as rt:
        rt.instrument_tracing(tp)
        it = rt.stream(req())
        it.close()  # type: ignore[attr-defined]
        del it
        assert spans.open == 0
        rt.complete(req())
        assert spans.open == 0


def test_a_request_span_starts_when_the_request_is_made(
    traced: Callable[..., Traced], req: Any
) -> None:
    """A stream's span starts at the stream() call, before its first chunk is asked for."""
    t = traced()
    with t.tracer.start_as_current_span("before") as before:
        pass
    it = t.rt.stream(req(), preferred_provider="good")
    with t.tracer.start_as_current_span("between") as between:
        pass
    for _chunk in it:
        pass
    (span,) = t.requests()
    assert before.end_time is not None and between.start_time is not None
    assert span.start_time is not None
    assert before.end_time <= span.start_time <= between.start_time


def test_a_saturated_provider_is_a_span_event_of_the_waiting_request(
    fakes: Callable[..., list[FakeProvider]], config_for: Any, req: Any, db: Path
) -> None:
    """A request that queued for a slot has a routeledger.saturated event on its span."""
    (slow,) = fakes(1, Behaviour(latency_ms=150))
    cfg = config_for({"slow": slow}, per_provider={"slow": {"max_concurrency": 1}})
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        rt.instrument_tracing(tp)
        first = threading.Thread(target=rt.complete, args=(req(),))
        first.start()
        wait_for(lambda: rt.get_active_requests("slow") == 1, "the first request in flight")
        rt.complete(req())
        first.join(timeout=10)
    events = [e.name for s in exporter.get_finished_spans() for e in s.events]
    assert events == ["routeledger.saturated"]


def test_uninstrument_stops_tracing(traced: Callable[..., Traced], req: Any) -> None:
    """After uninstrument(rt), requests make no spans; the interpreter's observer is None."""
    t = traced()
    uninstrument(t.rt)
    t.rt.complete(req(), preferred_provider="good")
    assert t.spans() == []


def test_importing_routeledger_does_not_import_opentelemetry(tmp_path: Path) -> None:
    """import routeledger (and a runtime's request path) leaves opentelemetry unloaded."""
    code = (
        "import sys, routeledger, routeledger.cli; routeledger.cli.build_parser();"
        "print('opentelemetry' in sys.modules, 'routeledger.otel' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
