"""Request validation: refuse a malformed request before it reaches any provider."""

from __future__ import annotations

import math

import msgspec

from routeledger.events._errors import RequestError
from routeledger.events._types import ImagePart, Request, TextPart

__all__ = ["validate_request"]

ROLES = frozenset({"system", "user", "assistant", "tool"})


def validate_request(request: object) -> Request:
    """Return ``request`` if it is a well-formed :class:`Request`; raise :class:`RequestError`.

    Every problem found is listed in the one error.
    """
    if not isinstance(request, Request):
        raise RequestError(f"expected a Request, got {type(request).__name__}")
    problems: list[str] = []
    if not isinstance(request.model, str) or not request.model.strip():
        problems.append("model must be a non-empty string")
    if not isinstance(request.messages, list) or not request.messages:
        problems.append("messages must be a non-empty list")
    else:
        for i, m in enumerate(request.messages):
            if getattr(m, "role", None) not in ROLES:
                problems.append(f"messages[{i}].role must be one of {sorted(ROLES)}")
                continue
            # Typed loosely: the values come from callers and may be anything.
            content: object = m.content
            if isinstance(content, list):
                part: object
                for j, part in enumerate(content):
                    if isinstance(part, ImagePart):
                        fields: tuple[object, ...] = (part.url, part.data, part.media_type)
                        if not all(f is None or isinstance(f, str) for f in fields):
                            problems.append(
                                f"messages[{i}].content[{j}]: image fields must be strings"
                            )
                        elif not (part.url or part.data):
                            problems.append(f"messages[{i}].content[{j}]: image needs url or data")
                    elif isinstance(part, TextPart):
                        text: object = part.text
                        if not isinstance(text, str):
                            problems.append(f"messages[{i}].content[{j}].text must be a string")
                    else:
                        problems.append(f"messages[{i}].content[{j}] is not a text or image part")
            elif not isinstance(content, str):
                problems.append(f"messages[{i}].content must be a string or a list of parts")
            if m.role == "tool" and not m.tool_call_id:
                problems.append(f"messages[{i}]: a tool message needs tool_call_id")
    mt = request.max_tokens
    if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
        problems.append(f"max_tokens must be a positive integer, got {mt!r}")
    t = request.temperature
    if t is not None and (not isinstance(t, int | float) or math.isnan(t) or not 0 <= t <= 2):
        problems.append(f"temperature must be in [0, 2], got {t!r}")
    p = request.top_p
    if p is not None and (not isinstance(p, int | float) or math.isnan(p) or not 0 < p <= 1):
        problems.append(f"top_p must be in (0, 1], got {p!r}")
    d = request.deadline
    if d is not None and (not isinstance(d, int | float) or not math.isfinite(d) or d <= 0):
        problems.append(f"deadline must be a positive, finite number of seconds, got {d!r}")
    pr = request.priority
    if isinstance(pr, bool) or not isinstance(pr, int):
        problems.append(f"priority must be an integer, got {pr!r}")
    stop: object = request.stop
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(x, str) for x in stop)
    ):
        problems.append(f"stop must be a list of strings, got {stop!r}")
    # Typed loosely: metadata is stored with request.received, which holds str -> str only.
    metadata: object = request.metadata
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        problems.append("metadata must be a dict of strings to strings")
    problems.extend(_wire_field_problems(request))
    if not isinstance(request.request_id, str) or not request.request_id:
        problems.append("request_id must be a non-empty string")
    session: object = request.session_id
    if session is not None and (not isinstance(session, str) or not session):
        problems.append("session_id must be a non-empty string or None")
    if problems:
        raise RequestError(
            "invalid request: " + "; ".join(problems), request_id=str(request.request_id)
        )
    return request


def _wire_field_problems(request: Request) -> list[str]:
    """Return what is wrong with the fields passed through to the wire as they are."""
    problems: list[str] = []
    effort: object = request.reasoning_effort
    if effort is not None and (not isinstance(effort, str) or not effort.strip()):
        problems.append(f"reasoning_effort must be a non-empty string, got {effort!r}")
    fmt: object = request.response_format
    if fmt is not None and not isinstance(fmt, dict):
        problems.append(f"response_format must be a dict, got {type(fmt).__name__}")
    seed: object = request.seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        problems.append(f"seed must be an integer, got {seed!r}")
    extra: object = request.extra_body
    if extra is not None:
        if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
            problems.append("extra_body must be a dict with string keys")
        else:
            try:
                msgspec.json.encode(extra)
            except (TypeError, ValueError, OverflowError) as exc:
                problems.append(f"extra_body must be JSON-encodable ({exc})")
    return problems
