"""How long a rate limit lasts when a provider sends no ``Retry-After``: its reset headers.

OpenAI sends, with every answer, ``x-ratelimit-remaining-{requests,tokens}`` and
``x-ratelimit-reset-{requests,tokens}``, the reset being a Go-style duration (``"1s"``,
``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``; some compatible servers send plain seconds).
Anthropic sends ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining``
and ``...-reset``, the reset being an RFC 3339 instant (``"2024-05-01T12:00:30Z"``).

:func:`reset_after` turns them into one wait: the latest reset among the limits whose
``remaining`` is zero (those are the limits that refused the request), or, when no limit says
it is exhausted (a token limit too small for this one request, say), the earliest reset (the
first moment anything changes; a wrong guess costs one more 429, which names its own wait).
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Mapping

__all__ = ["parse_duration", "parse_instant", "reset_after"]

_OPENAI_LIMITS = ("requests", "tokens")
_ANTHROPIC_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")

_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_PLAIN = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(text: str) -> float | None:
    """Return the seconds of a Go-style duration (``"6m0s"``) or plain seconds, else ``None``."""
    text = text.strip()
    if _PLAIN.fullmatch(text):
        value = float(text)
        return value if math.isfinite(value) else None
    total = 0.0
    at = 0
    for match in _PART.finditer(text):
        if match.start() != at:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        at = match.end()
    if at == 0 or at != len(text) or not math.isfinite(total):
        return None
    return total


def parse_instant(text: str, *, now: float) -> float | None:
    """Return the seconds from wall time ``now`` until an RFC 3339 instant (0 if past)."""
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # RFC 3339 instants always carry an offset
    return max(0.0, when.timestamp() - now)


def _remaining(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def reset_after(headers: Mapping[str, str], *, clock: Callable[[], float]) -> float | None:
    """Return the wait the reset headers of a refused request stand for, or ``None``."""
    resets: list[tuple[float, bool]] = []  # (seconds, that limit is exhausted)
    for limit in _OPENAI_LIMITS:
        raw = headers.get(f"x-ratelimit-reset-{limit}")
        seconds = None if raw is None else parse_duration(raw)
        if seconds is not None:
            left = _remaining(headers.get(f"x-ratelimit-remaining-{limit}"))
            resets.append((seconds, left is not None and left <= 0))
    now: float | None = None
    for limit in _ANTHROPIC_LIMITS:
        raw = headers.get(f"anthropic-ratelimit-{limit}-reset")
        if raw is None:
            continue
        now = clock() if now is None else now
        seconds = parse_instant(raw, now=now)
        if seconds is not None:
            left = _remaining(headers.get(f"anthropic-ratelimit-{limit}-remaining"))
            resets.append((seconds, left is not None and left <= 0))
    if not resets:
        return None
    exhausted = [s for s, done in resets if done]
    return max(exhausted) if exhausted else min(s for s, _ in resets)
