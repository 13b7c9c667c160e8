"""Tests of the response cache: what the key covers, TTL on a virtual clock, the LRU bound."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from routeledger._cache import ResponseCache, cache_key
from routeledger.actors._clock import VirtualClock
from routeledger.events import ImagePart, Message, Request, Requirements, Response, TextPart, Tool

BASE = Request(
    model="m",
    messages=[Message(role="user", content="hello")],
    request_id="r1",
)


def key(request: Request = BASE, **kw: Any) -> bytes:
    kw.setdefault("preferred_provider", None)
    kw.setdefault("requirements", None)
    kw.setdefault("pool", None)
    kw.setdefault("ab_test", None)
    return cache_key(request, **kw)


def response(text: str = "ok") -> Response:
    return Response(content=text, provider="a", model="m", request_id="r1")


def test_key_ignores_request_id_and_deadline() -> None:
    """Two calls that differ only in request id and deadline share a key."""
    other = msgspec.structs.replace(BASE, request_id="r2", deadline=5.0)
    assert key(other) == key(BASE)


def test_key_is_order_independent_for_sets_and_maps() -> None:
    """Equal metadata and capability sets give one key whatever their insertion order."""
    a = msgspec.structs.replace(BASE, metadata={"x": "1", "y": "2"})
    b = msgspec.structs.replace(BASE, metadata={"y": "2", "x": "1"})
    assert key(a) == key(b)
    ra = Requirements(require_capabilities=frozenset({"tools", "vision", "audio"}))
    rb = Requirements(require_capabilities=frozenset({"audio", "vision", "tools"}))
    assert key(requirements=ra) == key(requirements=rb)


CHANGES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "model": st.just({"model": "m2"}),
    "messages": st.sampled_from(
        [
            {"messages": [Message(role="user", content="hello!")]},
            {"messages": [Message(role="system", content="hello")]},
            {"messages": [Message(role="user", content=[TextPart("hello")])]},
            {
                "messages": [
                    Message(role="user", content="hello"),
                    Message(role="user", content=[ImagePart(url="http://x/i.png")]),
                ]
            },
            {"messages": [Message(role="user", content="hello", name="n")]},
        ]
    ),
    "max_tokens": st.integers(1, 10_000).map(lambda n: {"max_tokens": n}),
    "temperature": st.floats(0, 2).map(lambda t: {"temperature": t}),
    "top_p": st.floats(0.01, 1).map(lambda p: {"top_p": p}),
    "stop": st.lists(st.text(max_size=3), max_size=2).map(lambda s: {"stop": s}),
    "tools": st.just({"tools": [Tool(name="f")]}),
    "tool_choice": st.sampled_from(["auto", "none", {"type": "function"}]).map(
        lambda c: {"tool_choice": c}
    ),
    "stream": st.just({"stream": True}),
    "metadata": st.dictionaries(st.text(max_size=3), st.text(max_size=3), min_size=1).map(
        lambda m: {"metadata": m}
    ),
}
CONTEXT: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "preferred_provider": st.text(max_size=5).map(lambda p: {"preferred_provider": p}),
    "pool": st.text(max_size=5).map(lambda p: {"pool": p}),
    "ab_test": st.text(max_size=5).map(lambda p: {"ab_test": p}),
    "requirements": st.sampled_from(
        [
            Requirements(),
            Requirements(max_cost=0.01),
            Requirements(max_latency_ms=100.0),
            Requirements(require_capabilities=frozenset({"tools"})),
            Requirements(preferred_providers=["a"]),
            Requirements(exclude_providers=["a"]),
            Requirements(model="other"),
            Requirements(pool="p"),
        ]
    ).map(lambda r: {"requirements": r}),
}


@settings(max_examples=120, deadline=None)
@given(data=st.data(), field=st.sampled_from(sorted(CHANGES) + sorted(CONTEXT)))
def test_changing_any_field_changes_the_key(data: st.DataObject, field: str) -> None:
    """Changing any request field or routing constraint (but id and deadline) changes the key."""
    if field in CHANGES:
        change = data.draw(CHANGES[field])
        changed = msgspec.structs.replace(BASE, **change)
        if changed == BASE:
            return
        assert key(changed) != key(BASE)
    else:
        change = data.draw(CONTEXT[field])
        assert key(**change) != key()


def test_ttl_expires_on_virtual_time() -> None:
    """An entry is served until ttl_s has passed, then it is a miss and is dropped."""
    clock = VirtualClock()
    cache = ResponseCache(ttl_s=10.0, max_entries=4, clock=clock)
    k = key()
    assert cache.get(k) is None
    cache.put(k, response())
    clock.advance(9.99)
    assert cache.get(k) == response()
    clock.advance(0.01)
    assert cache.get(k) is None
    assert len(cache) == 0
    assert (cache.hits, cache.misses) == (1, 2)


def test_lru_bound_evicts_least_recently_used() -> None:
    """Past max_entries the least recently used entry goes; a get refreshes recency."""
    clock = VirtualClock()
    cache = ResponseCache(ttl_s=100.0, max_entries=2, clock=clock)
    cache.put(b"a", response("a"))
    cache.put(b"b", response("b"))
    assert cache.get(b"a") is not None  # a is now the most recent
    cache.put(b"c", response("c"))
    assert len(cache) == 2
    assert cache.get(b"b") is None
    assert cache.get(b"a") is not None
    assert cache.get(b"c") is not None
    cache.put(b"a", response("a2"))  # overwriting refreshes value and expiry
    assert cache.get(b"a") == response("a2")
    cache.clear()
    assert len(cache) == 0
