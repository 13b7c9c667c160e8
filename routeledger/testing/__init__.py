"""Test helpers for routeledger and its users: a loopback fake provider, quick configurations.

`FakeProvider` is a loopback HTTP/1.1 server that answers like an LLM provider in both the
OpenAI and the Anthropic wire formats, shaped by a `Behaviour` (latencies, failures, broken
bodies and streams, connection resets); `FakeStats` counts what it served; `ERROR_CODES`
lists the provider errors it can imitate. `no_backoff` gives a failover policy whose retries
never sleep.

Both formats live under ``url + "/v1"``:

- ``POST /v1/chat/completions``: OpenAI chat completions (JSON, or SSE ``data:`` chunks ending
  in ``data: [DONE]``, with a final usage chunk when ``stream_options.include_usage`` is true);
- ``POST /v1/messages``: Anthropic messages (JSON, or the ``message_start`` ...
  ``message_stop`` event sequence);
- ``GET /v1/models`` (and ``GET /v1/models/{id}``): the configured models, in a shape both
  clients accept (OpenAI ``object``/``owned_by`` plus Anthropic ``type``/``display_name``).

Modules: ``_behaviour`` (what to do), ``_answer`` (doing it for one request), ``_exchange``
(the per-request object), ``_server`` (lifecycle, connections), ``_http`` (h11 parsing, raw
response bytes, resets), ``_openai`` and ``_anthropic`` (the formats), ``_config``.

Example:
    >>> with FakeProvider(Behaviour(latency_ms=5)) as fake:  # doctest: +SKIP
    ...     httpx.post(fake.url + "/v1/chat/completions", json={...})
"""

from __future__ import annotations

from routeledger.testing._behaviour import ERROR_CODES, Behaviour
from routeledger.testing._config import no_backoff
from routeledger.testing._server import FakeProvider
from routeledger.testing._stats import FakeStats

__all__ = ["ERROR_CODES", "Behaviour", "FakeProvider", "FakeStats", "no_backoff"]
