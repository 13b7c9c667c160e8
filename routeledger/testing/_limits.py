"""The fake provider's own rate limits: requests and tokens per minute, as real providers
enforce theirs (token buckets refilled continuously), with their rate-limit headers."""

from __future__ import annotations

import time
from typing import Any

from routeledger.actors._buckets import TokenBucket

__all__ = ["OwnLimits"]


class OwnLimits:
    """The buckets of one behaviour's ``rpm``/``tpm``, on real monotonic time.

    A request counts one request and its tokens as providers count them: the prompt's
    estimate plus the most it may output (``max_tokens`` or ``max_completion_tokens``).
    """

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        now = time.monotonic()
        self.requests = TokenBucket(rpm, now) if rpm else None
        self.tokens = TokenBucket(tpm, now) if tpm else None

    def admit(self, parsed: dict[str, Any], prompt_tokens: int) -> bool:
        """Charge a request if both buckets hold it; return whether it was admitted."""
        now = time.monotonic()
        most = parsed.get("max_tokens") or parsed.get("max_completion_tokens") or 0
        need = prompt_tokens + (most if isinstance(most, int) else 0)
        if self.requests is not None and self.requests.available(now) < 1 - 1e-6:
            return False
        if self.tokens is not None and self.tokens.available(now) < need - 1e-6:
            return False
        if self.requests is not None:
            self.requests.take(1, now)
        if self.tokens is not None:
            self.tokens.take(need, now)
        return True

    def headers(self, anthropic: bool) -> bytes:
        """Return the header lines saying what is left (in the provider's own spelling)."""
        now = time.monotonic()
        lines = []
        for bucket, kind in ((self.requests, "requests"), (self.tokens, "tokens")):
            if bucket is None:
                continue
            left = max(0, int(bucket.available(now)))
            cap = int(bucket.capacity)
            if anthropic:
                lines.append(f"anthropic-ratelimit-{kind}-limit: {cap}")
                lines.append(f"anthropic-ratelimit-{kind}-remaining: {left}")
            else:
                lines.append(f"x-ratelimit-limit-{kind}: {cap}")
                lines.append(f"x-ratelimit-remaining-{kind}: {left}")
        return "".join(line + "\r\n" for line in lines).encode()
