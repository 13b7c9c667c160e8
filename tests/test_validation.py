"""Tests of request validation: every problem of a malformed request is reported at once."""

from __future__ import annotations

from typing import Any

import pytest

from routeledger.events import ImagePart, Message, Request, RequestError, TextPart, validate_request


def request(**kw: Any) -> Request:
    kw.setdefault("model", "m")
    kw.setdefault("messages", [Message(role="user", content="hi")])
    return Request(**kw)


def problems(req: object) -> str:
    with pytest.raises(RequestError) as info:
        validate_request(req)
    return str(info.value)


def test_good_request_passes() -> None:
    """A well-formed request is returned unchanged."""
    r = request(
        max_tokens=10,
        temperature=0.0,
        top_p=1.0,
        deadline=2.5,
        messages=[
            Message(role="system", content="be brief"),
            Message(role="user", content=[TextPart("look"), ImagePart(data="AAAA")]),
            Message(role="tool", content="42", tool_call_id="call_1"),
        ],
    )
    assert validate_request(r) is r


@pytest.mark.parametrize(
    ("kw", "needle"),
    [  # the type: ignores below build invalid messages on purpose, for the validator
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": [Message(role="robot", content="x")]}, "role must be one of"),  # type: ignore[arg-type]
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": 2.5}, "temperature must be in [0, 2]"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"deadline": 0.0}, "deadline"),
        ({"model": " "}, "model must be a non-empty string"),
        ({"request_id": ""}, "request_id"),
        ({"messages": [Message(role="tool", content="x")]}, "tool message needs tool_call_id"),
        (
            {"messages": [Message(role="user", content=[ImagePart()])]},
            "image needs url or data",
        ),
        (
            {"messages": [Message(role="user", content=[ImagePart(url="", data="")])]},
            "image needs url or data",
        ),
        ({"messages": [Message(role="user", content=None)]}, "content must be a string"),  # type: ignore[arg-type]
    ],
)
def test_each_problem_is_reported(kw: dict[str, Any], needle: str) -> None:
    """Each kind of malformed field raises RequestError naming the problem."""
    assert needle in problems(request(**kw))


def test_every_problem_listed_in_one_error() -> None:
    """A request with many problems lists all of them in the one error."""
    text = problems(
        request(
            request_id="bad-1",
            max_tokens=0,
            temperature=9.0,
            messages=[
                Message(role="tool", content="x"),
                Message(role="user", content=[ImagePart()]),
                Message(role="wizard", content="x"),  # type: ignore[arg-type]  # invalid on purpose
            ],
        )
    )
    for needle in (
        "messages[0]: a tool message needs tool_call_id",
        "messages[1].content[0]: image needs url or data",
        "messages[2].role",
        "max_tokens",
        "temperature",
        "request_id=bad-1",
    ):
        assert needle in text


def test_not_a_request() -> None:
    """Anything but a Request is refused."""
    assert "expected a Request, got dict" in problems({"model": "m"})
