"""Tests of the error hierarchy: one root, and retry/failover flags as the docstring tree says."""

from __future__ import annotations

import inspect
import re

import pytest

from routeledger.events import _errors
from routeledger.events._errors import (
    AllProvidersFailed,
    AllProvidersUnhealthy,
    ConfigError,
    NoCapableProvider,
    ProviderError,
    RouteledgerError,
    UnknownEventType,
)

ALL = [getattr(_errors, name) for name in _errors.__all__]


def test_every_error_derives_from_the_root() -> None:
    """Every exported error class derives from RouteledgerError."""
    assert ALL
    for cls in ALL:
        assert issubclass(cls, RouteledgerError), cls


def _tree() -> dict[str, tuple[str, str]]:
    """Parse the docstring tree: class name -> (parent name, note)."""
    doc = inspect.getdoc(_errors) or ""
    out: dict[str, tuple[str, str]] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        m = re.match(r"^([\s│]*)(?:[├└]── )?(\w+)\s*(.*)$", line)
        if (
            not m
            or not m.group(2)[0].isupper()
            or ("──" not in line and m.group(2) != "RouteledgerError")
        ):
            continue
        depth = len(m.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        out[m.group(2)] = (stack[-1][1] if stack else "", m.group(3))
        stack.append((depth, m.group(2)))
    return out


def test_docstring_tree_matches_classes() -> None:
    """The tree drawn in the module docstring names every class with its real parent."""
    tree = _tree()
    assert set(tree) == {cls.__name__ for cls in ALL}
    for name, (parent, _) in tree.items():
        if parent:
            assert getattr(_errors, name).__bases__ == (getattr(_errors, parent),), name


def test_flags_follow_the_docstring() -> None:
    """retryable/failover of each provider error are those its docstring note states."""
    for name, (_, note) in _tree().items():
        cls = getattr(_errors, name)
        if not issubclass(cls, ProviderError) or cls is ProviderError:
            continue
        if "final everywhere" in note:
            assert (cls.retryable, cls.failover) == (False, False), name
        elif "failover only" in note:
            assert (cls.retryable, cls.failover) == (False, True), name
        elif "retryable" in note:
            assert (cls.retryable, cls.failover) == (True, True), name


@pytest.mark.parametrize(
    ("name", "retryable", "failover", "billed"),
    [
        ("RateLimited", True, True, False),
        ("QuotaExceeded", False, True, False),
        ("AuthenticationError", False, True, False),
        ("BadRequest", False, False, False),
        ("ContextLengthExceeded", False, True, False),
        ("ProviderUnavailable", True, True, True),
        ("ProviderConnectError", True, True, False),
        ("ProviderTimeout", True, True, True),
        ("ProtocolError", False, True, True),
        ("ProviderSaturated", False, True, False),
        ("StreamInterrupted", False, False, True),
        ("StreamCancelled", False, False, True),
    ],
)
def test_provider_error_flags(name: str, retryable: bool, failover: bool, billed: bool) -> None:
    """Each provider error type carries its documented retry, failover and billing flags."""
    cls = getattr(_errors, name)
    assert (cls.retryable, cls.failover, cls.maybe_billed) == (retryable, failover, billed)


def test_str_names_provider_and_request() -> None:
    """An error's text names its provider and request id when known."""
    e = ProviderError("boom", provider="a", request_id="r", status=503, retry_after_s=2.0)
    assert str(e) == "boom (provider=a, request_id=r)"
    assert (e.status, e.retry_after_s) == (503, 2.0)
    assert str(RouteledgerError("plain")) == "plain"


def test_composite_errors_describe_their_parts() -> None:
    """ConfigError, NoCapableProvider, AllProvidersUnhealthy/Failed list what they hold."""
    c = ConfigError(["one", "two"])
    assert c.problems == ["one", "two"]
    assert "2 problem(s)" in str(c) and "  - two" in str(c)
    assert ConfigError("single").problems == ["single"]
    n = NoCapableProvider("none", excluded={"b": "excluded", "a": "circuit open"})
    assert str(n) == "none: a: circuit open; b: excluded"
    u = AllProvidersUnhealthy({"b": "open", "a": "half_open"}, request_id="r")
    assert "a=half_open, b=open" in str(u)
    f = AllProvidersFailed([ProviderError("x", provider="a")], request_id="r")
    assert f.last_error is f.attempts[0]
    assert "a: ProviderError" in str(f)
    assert AllProvidersFailed([]).last_error is None
    t = UnknownEventType("future.event", position=7)
    assert (t.tag, t.position) == ("future.event", 7)
    assert "future.event" in str(t)
