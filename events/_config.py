"""Configuration: provider and runtime settings, built from Python objects or parsed TOML.

:func:`validate_config` checks a whole configuration and raises one :class:`ConfigError`
listing every problem found, so an operator fixes a file in one pass. API keys are held in
:class:`Secret`, whose repr is ``'***'``; a missing key variable is named by its variable.

This module is over 500 lines because it holds every configuration struct with its
documented fields (the TOML reference is these docstrings) next to the checks of each; the
request-level checks are in ``_validation``.
"""

from __future__ import annotations

import math
import os
import re
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeGuard
from urllib.parse import SplitResult, urlsplit

import msgspec

from routeledger.events._address import is_loopback, url_without_password
from routeledger.events._errors import ConfigError
from routeledger.events._types import CAPABILITIES, Usage

__all__ = [
    "BUDGET_PERIODS",
    "KINDS",
    "STRATEGIES",
    "ABTestConfig",
    "BudgetConfig",
    "CacheConfig",
    "CostConfig",
    "FailoverConfig",
    "HealthConfig",
    "LogConfig",
    "ModelSpec",
    "PoolConfig",
    "ProviderConfig",
    "RuntimeConfig",
    "Secret",
    "check_ab_test",
    "check_budgets",
    "check_fallbacks",
    "check_pool",
    "conversion_problems",
    "validate_config",
]

KINDS = frozenset({"openai", "anthropic"})
STRATEGIES = frozenset({"round-robin", "least-loaded", "latency", "cost", "weighted", "usage"})
RETRYABLE_ERROR_NAMES = frozenset(
    {
        "RateLimited",
        "ProviderUnavailable",
        "ProviderConnectError",
        "ProviderTimeout",
        "ProtocolError",
        "QuotaExceeded",
        "AuthenticationError",
        "ProviderSaturated",
        "UnsupportedByProvider",
    }
)
"""Error types that may appear in ``FailoverConfig.retryable_errors``."""

_REASONING_NAME = re.compile(r"^(?:o[1-9]\d*(?:-|$)|gpt-5(?!.*-chat))")
"""OpenAI reasoning model ids: the o-series and GPT-5 (its ``-chat`` variants excepted)."""


class Secret:
    """A credential: its repr and str are ``***``; :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value; only adapters building a request call this."""
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("a Secret cannot be pickled")


class ModelSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A model a provider serves; prices in currency units per million tokens.

    A model without prices has an unknown cost (``None``), never zero. ``name`` is the name
    requests use to ask for the model (the same name on several providers makes them
    alternatives for each other); ``upstream`` is the provider's own model id sent on the wire,
    when it differs.
    """

    name: str
    upstream: str | None = None
    input_per_mtok: float | None = None
    output_per_mtok: float | None = None
    context_window: int | None = None
    max_output: int | None = None
    capabilities: frozenset[str] = frozenset({"streaming"})
    reasoning: bool | None = None
    """A reasoning model: sent ``max_completion_tokens``, never ``temperature`` or ``top_p``.
    ``None`` decides by name (:meth:`is_reasoning`)."""
    cached_input_per_mtok: float | None = None
    """Price of prompt tokens read from the cache; absent, the input price (no discount is
    assumed: set it from the provider's price list, e.g. a tenth of input for Anthropic)."""
    cache_write_per_mtok: float | None = None
    """Price of prompt tokens written to the cache; absent, the input price (Anthropic
    charges 1.25x input for 5-minute writes: set it to be exact)."""
    rpm: int | None = None
    """Requests per minute this model may take on this provider (``None``: no limit)."""
    tpm: int | None = None
    """Tokens per minute (prompt estimate plus the most it may output) on this provider."""

    @property
    def wire_name(self) -> str:
        """Return the model id to send to the provider."""
        return self.upstream or self.name

    def is_reasoning(self, base_url: str) -> bool:
        """Return whether to treat this model as a reasoning model on ``base_url``.

        ``reasoning`` decides when set. Left ``None``, only api.openai.com model ids of the
        o-series (``o1``, ``o3-mini``, ``o4-mini``, ...) and the GPT-5 family (but not its
        ``-chat`` variants, which take sampling parameters) count: elsewhere (a gateway, a
        compatible server) the same name may be served by anything.
        """
        if self.reasoning is not None:
            return self.reasoning
        if "://api.openai.com" not in base_url:
            return False
        return _REASONING_NAME.match(self.wire_name) is not None

    @property
    def priced(self) -> bool:
        """Return whether both prices are known."""
        return self.input_per_mtok is not None and self.output_per_mtok is not None

    def cost(self, usage: Usage | None) -> float | None:
        """Return the cost of ``usage`` on this model, or ``None`` if unknown.

        Cached reads and cache writes (parts of ``input_tokens``) are priced at their own
        rates; reasoning tokens are output tokens.
        """
        if usage is None or self.input_per_mtok is None or self.output_per_mtok is None:
            return None
        cached = usage.cached_input_tokens
        written = usage.cache_write_tokens
        if not cached and not written:
            return (
                usage.input_tokens * self.input_per_mtok
                + usage.output_tokens * self.output_per_mtok
            ) / 1_000_000
        read_price = self.cached_input_per_mtok
        write_price = self.cache_write_per_mtok
        plain = max(0, usage.input_tokens - cached - written)
        return (
            plain * self.input_per_mtok
            + cached * (self.input_per_mtok if read_price is None else read_price)
            + written * (self.input_per_mtok if write_price is None else write_price)
            + usage.output_tokens * self.output_per_mtok
        ) / 1_000_000


class ProviderConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One provider endpoint.

    ``api_key`` may be given directly (it is wrapped in :class:`Secret`) or read from the
    environment variable ``api_key_env`` when the runtime starts; with neither, no auth header
    is sent (local OpenAI-compatible servers). A higher ``priority`` is preferred.

    Time bounds of one attempt (the request's deadline bounds them all): ``timeout_s`` bounds
    the whole exchange up to the complete response headers (a completion's: up to its whole
    body), however slowly the bytes trickle; ``first_token_timeout_s`` bounds a stream's
    first chunk, counted from the start of the attempt (``None``: no bound of its own; when
    it fires the stream fails over like any timeout); ``stream_idle_timeout_s`` bounds the
    wait between two chunks of a stream (``None``: ``timeout_s``). Each socket read is also
    bounded by ``timeout_s``, as before.
    """

    name: str
    kind: str
    base_url: str
    models: list[ModelSpec]
    api_key_env: str | None = None
    api_key: Secret | None = None
    priority: int = 0
    max_concurrency: int = 10
    weight: float = 1.0
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float | None = 10.0
    stream_idle_timeout_s: float | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    anthropic_version: str = "2023-06-01"
    max_response_bytes: int = 8 * 1024 * 1024
    max_line_bytes: int = 1024 * 1024
    enabled: bool = True
    rpm: int | None = None
    """Requests per minute (a token bucket, see ``routeledger.actors._buckets``)."""
    tpm: int | None = None
    """Tokens per minute: each request counts its prompt estimate plus its most output."""
    api_keys: list[Secret] | None = None
    """Several keys, used in rotation (a 429 or 401 on one moves to the next key first)."""
    api_key_envs: list[str] | None = None
    """Environment variables holding several keys (with ``api_keys``: after them)."""

    def __post_init__(self) -> None:
        key: object = self.api_key
        if isinstance(key, str):
            self.api_key = Secret(key)
        keys: object = self.api_keys
        if isinstance(keys, list) and any(isinstance(k, str) for k in keys):
            self.api_keys = [Secret(k) if isinstance(k, str) else k for k in keys]

    def model(self, name: str) -> ModelSpec | None:
        """Return the spec of model ``name``, or ``None`` if this provider does not serve it."""
        for spec in self.models:
            if spec.name == name:
                return spec
        return None

    def resolve_api_key(self, environ: Mapping[str, str] | None = None) -> Secret | None:
        """Return the key to send: the given one, else the named variable's value."""
        if self.api_key is not None:
            return self.api_key
        if self.api_key_env:
            value = (os.environ if environ is None else environ).get(self.api_key_env)
            return Secret(value) if value else None
        return None

    def resolve_api_keys(self, environ: Mapping[str, str] | None = None) -> list[Secret]:
        """Return every key to rotate through: ``api_key``/``api_key_env`` first, then
        ``api_keys``, then the values of ``api_key_envs`` (unset ones skipped, repeats once)."""
        env = os.environ if environ is None else environ
        keys: list[Secret] = []
        first = self.resolve_api_key(env)
        if first is not None:
            keys.append(first)
        keys.extend(self.api_keys or [])
        for name in self.api_key_envs or []:
            value = env.get(name)
            if value:
                keys.append(Secret(value))
        return list(dict.fromkeys(keys))


class FailoverConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Bounded retries and failover.

    ``max_attempts`` counts every attempt of one request, on any provider.
    ``max_attempts_per_provider`` bounds retries of the same provider (retryable errors only,
    with exponential backoff and full jitter). ``retryable_errors`` names the error types that
    allow another attempt at all. Retries draw on a budget per target provider, so that
    failures do not become retry storms: the retries to one provider that are in flight or
    failed within the last ``retry_budget_window_s`` may number ``retry_budget_ratio`` of the
    calls it served in that window, or ``retry_budget_min``, whichever is more. A retry that
    succeeds costs nothing, so failover to a healthy provider is never refused.
    """

    enabled: bool = True
    max_attempts: int = 3
    max_attempts_per_provider: int = 1
    backoff_base_s: float = 0.1
    backoff_max_s: float = 5.0
    max_retry_after_s: float = 30.0
    retryable_errors: list[str] = msgspec.field(
        default_factory=lambda: sorted(RETRYABLE_ERROR_NAMES)
    )
    retry_budget_ratio: float = 0.2
    retry_budget_min: int = 10
    retry_budget_window_s: float = 10.0
    queue_timeout_s: float = 5.0
    max_queue: int = 1000
    default_deadline_s: float | None = 120.0


class HealthConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Passive circuit breaking and active probes.

    The circuit opens after ``failure_threshold`` consecutive failures, or when the error rate
    over the last ``window_size`` calls reaches ``error_rate_threshold`` with at least
    ``min_calls`` calls, or when the share of calls slower than ``slow_call_ms`` reaches
    ``slow_call_rate``. It stays open ``cooldown_s``, doubled on each repeated trip up to
    ``max_cooldown_s``, then lets ``half_open_probes`` requests through. After
    ``failed_after_trips`` trips without a recovery the provider is reported failed.
    """

    enabled: bool = True
    interval_s: float = 60.0
    probe_timeout_s: float = 5.0
    cooldown_s: float = 30.0
    max_cooldown_s: float = 600.0
    failure_threshold: int = 5
    error_rate_threshold: float = 0.5
    window_size: int = 20
    min_calls: int = 10
    slow_call_ms: float | None = None
    slow_call_rate: float = 0.8
    half_open_probes: int = 1
    failed_after_trips: int = 3
    panic_routing: bool = False


class CostConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Cost limits; ``max_cost_per_request`` applies to every request without its own."""

    max_cost_per_request: float | None = None
    assumed_output_tokens: int = 256


class CacheConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Response cache (off by default) and route cache."""

    enabled: bool = False
    ttl_s: float = 300.0
    max_entries: int = 1024
    route_cache: bool = True


class LogConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Event log options.

    ``include_text`` stores prompt and response text in events (off: no text is stored).
    The writer group-commits: one transaction holds every event that arrived while the
    previous one was being written, up to ``batch_max_events``. While the store fails, up to
    ``buffer_max_events`` wait in memory, and beyond that a gap event records how many were
    dropped.

    ``snapshot_every``: after a commit that takes the log ``snapshot_every`` events past the
    last snapshot, and at close, the writer stores a snapshot of the projections (SQLite logs
    of at least that many events only), so that a start or a replay folds only the events
    after it. ``0`` writes none (snapshots already stored are still read, and checked).
    """

    include_text: bool = False
    batch_max_events: int = 4096
    buffer_max_events: int = 100_000
    synchronous: str = "NORMAL"
    snapshot_every: int = 10_000


class PoolConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A named group of providers with its own strategy and optional weights."""

    name: str
    providers: list[str]
    strategy: str = "round-robin"
    weights: dict[str, float] | None = None


class ABTestConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An A/B test between two providers.

    ``split_ratio`` is the probability of variant A. With ``sticky_key`` set, requests with the
    same value of that metadata key always get the same variant. ``metrics`` may seed each
    variant's figures (keys ``"A"`` and ``"B"``), which then count in the results.
    """

    name: str
    variant_a: str
    variant_b: str
    split_ratio: float = 0.5
    sticky_key: str | None = None
    metrics: dict[str, dict[str, float]] | None = None


BUDGET_PERIODS = frozenset({"hour", "day", "month"})
"""The UTC calendar periods a budget may run over."""
BUDGET_ACTIONS = frozenset({"refuse", "other_providers"})


class BudgetConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A spend budget: at most ``limit`` (in the models' price unit) per UTC ``period``.

    The scope is what the budget counts and constrains: the attempts on ``provider``, of
    ``model`` (the configured model name), of requests tagged ``tag`` (a metadata key,
    ``"team"``, or a key and value, ``"team=search"``), or any combination (all must match);
    none set is a budget over everything. Spend is the cost the ``attempt.succeeded`` events
    carry (unpriced models count nothing).

    From ``prefer_below`` of the limit on (spend plus what requests in flight may cost), the
    providers the budget covers are ranked after the others. Once the limit is reached,
    ``on_exceeded`` says what happens: ``"refuse"`` refuses every request the budget covers
    with ``BudgetExceeded``; ``"other_providers"`` leaves out the providers it covers, and
    refuses only when none is left.
    """

    name: str
    limit: float
    period: str = "day"
    provider: str | None = None
    model: str | None = None
    tag: str | None = None
    on_exceeded: str = "refuse"
    prefer_below: float = 0.8

    @property
    def tag_key(self) -> str | None:
        """Return the metadata key of ``tag`` (``None`` without a tag)."""
        return None if self.tag is None else self.tag.partition("=")[0]

    @property
    def tag_value(self) -> str | None:
        """Return the value ``tag`` requires (``None``: any value of the key)."""
        if self.tag is None or "=" not in self.tag:
            return None
        return self.tag.partition("=")[2]

    def covers_request(self, metadata: Mapping[str, str]) -> bool:
        """Return whether a request with ``metadata`` is in the budget's tag scope."""
        key = self.tag_key
        if key is None:
            return True
        if key not in metadata:
            return False
        value = self.tag_value
        return value is None or metadata[key] == value

    def covers(self, provider: str, model: str) -> bool:
        """Return whether an attempt on ``provider`` with ``model`` is in the budget's scope
        (the request's tags are checked by :meth:`covers_request`)."""
        return (self.provider is None or self.provider == provider) and (
            self.model is None or self.model == model
        )


class RuntimeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything a :class:`Runtime` needs."""

    providers: list[ProviderConfig]
    strategy: str = "round-robin"
    failover: FailoverConfig = msgspec.field(default_factory=FailoverConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    cost: CostConfig = msgspec.field(default_factory=CostConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    pools: list[PoolConfig] = msgspec.field(default_factory=list)
    ab_tests: list[ABTestConfig] = msgspec.field(default_factory=list)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    seed: int | None = None
    shared_concurrency: Literal["local", "lease", "strict"] = "lease"
    """How ``max_concurrency`` holds when several runtimes share one log: ``lease`` (each
    runtime uses its granted share, from heartbeat leases), ``local`` (each runtime alone,
    as if unshared), ``strict`` (one slot per request, PostgreSQL advisory locks; no
    leases). A runtime alone on its log uses its whole budget in every mode."""
    lease_ttl_s: float = 3.0
    """How long a shared-log runtime's heartbeat (its leadership and capacity leases) holds;
    it renews every third of it. A runtime that died frees its share after this long."""
    budgets: list[BudgetConfig] = msgspec.field(default_factory=list)
    fallbacks: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Model name -> the models to try, in order, when every provider of it is exhausted."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeConfig:
        """Build and validate a configuration from plain data (as parsed from TOML)."""
        try:
            config = msgspec.convert(dict(data), cls, dec_hook=_dec_hook, strict=True)
        except msgspec.ValidationError as exc:
            # msgspec stops at the first wrong value: list them all, and the rest of the
            # file's problems too, as validate_config would for Python objects.
            raise ConfigError(conversion_problems(data) or [str(exc)]) from None
        validate_config(config)
        return config

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> RuntimeConfig:
        """Load and validate a configuration file (``[[providers]]`` tables and sections).

        Raises:
            ConfigError: the file cannot be read or parsed, or the configuration is invalid.
        """
        # events/ does no I/O: the file is read by the facade's TOML helper. The import is
        # deferred to the call (routeledger._toml imports this package), and it is the one
        # upward import tests/test_layering.py allows, because from_toml is public contract.
        from routeledger._toml import read_toml

        return cls.from_dict(read_toml(path))

    def provider(self, name: str) -> ProviderConfig | None:
        """Return the provider called ``name``, if configured."""
        for p in self.providers:
            if p.name == name:
                return p
        return None


def _dec_hook(typ: type, value: Any) -> Any:
    if typ is Secret and isinstance(value, str):
        return Secret(value)
    raise TypeError(f"cannot convert {type(value).__name__} to {typ.__name__}")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USUAL_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")


def _is_number(value: object) -> TypeGuard[int | float]:
    """Return whether ``value`` is a finite int or float (not a bool).

    NaN and infinity are refused everywhere: JSON has no spelling for them, so an event that
    carried one could never be stored (the writer would drop it as a gap).
    """
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(
    problems: list[str],
    where: str,
    value: float | None,
    *,
    minimum: float,
    inclusive: bool = True,
    optional: bool = False,
    integer: bool = False,
) -> None:
    if value is None and optional:
        return
    if isinstance(value, float) and math.isinf(value):
        problems.append(f"{where} must be finite, got {value!r}")
    elif not _is_number(value):
        problems.append(f"{where} must be a number, got {value!r}")
    elif integer and not isinstance(value, int):
        # msgspec does not check types on construction: 2.5 reaches here from Python code.
        problems.append(f"{where} must be an integer, got {value!r}")
    elif value < minimum or (not inclusive and value == minimum):
        op = ">=" if inclusive else ">"
        problems.append(f"{where} must be {op} {minimum}, got {value!r}")


def _check_share(problems: list[str], where: str, value: object) -> None:
    """Report ``value`` unless it is a number in (0, 1]."""
    if not _is_number(value) or not 0 < value <= 1:
        problems.append(f"{where} must be in (0, 1], got {value!r}")


def _both_numbers(*values: object) -> bool:
    # Comparing settings with each other only makes sense once each is a number; a wrongly
    # typed one is already reported by its own check.
    return all(_is_number(v) for v in values)


def _validate_provider(
    p: ProviderConfig, i: int, problems: list[str], environ: Mapping[str, str]
) -> None:
    where = f"providers[{i}] ({p.name!r})" if isinstance(p.name, str) else f"providers[{i}]"
    if not isinstance(p.name, str) or not p.name.strip():
        problems.append(f"{where}: name must be a non-empty string")
    if p.kind not in KINDS:
        problems.append(f"{where}: unknown kind {p.kind!r} (expected one of {sorted(KINDS)})")
    url: SplitResult | None
    try:
        url = urlsplit(p.base_url) if isinstance(p.base_url, str) else None
        host = url.hostname if url is not None else None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        url, host = None, None
    if url is None or url.scheme not in ("http", "https") or not host:
        shown = url_without_password(p.base_url) if isinstance(p.base_url, str) else p.base_url
        problems.append(f"{where}: base_url {shown!r} is not an http(s) URL")
    elif url.scheme == "http" and not is_loopback(host):
        problems.append(f"{where}: base_url must use https for non-loopback host {host!r}")
    if not p.models:
        problems.append(f"{where}: at least one model is required")
    seen: set[str] = set()
    for j, m in enumerate(p.models):
        mw = f"{where}.models[{j}] ({m.name!r})"
        if m.name in seen:
            problems.append(f"{mw}: duplicate model name")
        seen.add(m.name)
        _check_number(problems, f"{mw}.input_per_mtok", m.input_per_mtok, minimum=0, optional=True)
        _check_number(
            problems, f"{mw}.output_per_mtok", m.output_per_mtok, minimum=0, optional=True
        )
        for price in ("cached_input_per_mtok", "cache_write_per_mtok"):
            _check_number(problems, f"{mw}.{price}", getattr(m, price), minimum=0, optional=True)
        _check_number(
            problems,
            f"{mw}.context_window",
            m.context_window,
            minimum=1,
            optional=True,
            integer=True,
        )
        _check_number(
            problems, f"{mw}.max_output", m.max_output, minimum=1, optional=True, integer=True
        )
        _check_number(problems, f"{mw}.rpm", m.rpm, minimum=1, optional=True, integer=True)
        _check_number(problems, f"{mw}.tpm", m.tpm, minimum=1, optional=True, integer=True)
        unknown = set(m.capabilities) - CAPABILITIES
        if unknown:
            problems.append(
                f"{mw}: unknown capabilities {sorted(unknown)} (known: {sorted(CAPABILITIES)})"
            )
    _check_number(problems, f"{where}.max_concurrency", p.max_concurrency, minimum=1, integer=True)
    if isinstance(p.priority, bool) or not isinstance(p.priority, int):
        problems.append(f"{where}.priority must be an integer, got {p.priority!r}")
    _check_number(problems, f"{where}.weight", p.weight, minimum=0)
    _check_number(problems, f"{where}.timeout_s", p.timeout_s, minimum=0, inclusive=False)
    _check_number(
        problems, f"{where}.connect_timeout_s", p.connect_timeout_s, minimum=0, inclusive=False
    )
    for name in ("first_token_timeout_s", "stream_idle_timeout_s"):
        _check_number(
            problems,
            f"{where}.{name}",
            getattr(p, name),
            minimum=0,
            inclusive=False,
            optional=True,
        )
    _check_number(
        problems, f"{where}.max_response_bytes", p.max_response_bytes, minimum=1024, integer=True
    )
    _check_number(problems, f"{where}.max_line_bytes", p.max_line_bytes, minimum=1024, integer=True)
    if p.api_key is None and p.api_key_env is not None:
        if not isinstance(p.api_key_env, str) or not _ENV_NAME.fullmatch(p.api_key_env):
            # Most likely the key itself pasted in the wrong field: never echo it.
            problems.append(
                f"{where}: api_key_env is not an environment variable name (value not shown; "
                "put a key itself in api_key)"
            )
        elif not environ.get(p.api_key_env):
            # Named only when it has the usual UPPER_CASE form: a key such as ``gsk_...``
            # is a valid variable name too, and must not be echoed.
            shown = p.api_key_env if _USUAL_ENV_NAME.fullmatch(p.api_key_env) else "(not shown)"
            problems.append(f"{where}: environment variable {shown} (api_key_env) is not set")
    _check_number(problems, f"{where}.rpm", p.rpm, minimum=1, optional=True, integer=True)
    _check_number(problems, f"{where}.tpm", p.tpm, minimum=1, optional=True, integer=True)
    _check_api_keys(p, where, problems, environ)
    for h in p.headers:
        if h.lower() in ("authorization", "x-api-key"):
            problems.append(f"{where}.headers: put credentials in api_key or api_key_env")


def _check_api_keys(
    p: ProviderConfig, where: str, problems: list[str], environ: Mapping[str, str]
) -> None:
    """Check ``api_keys`` and ``api_key_envs`` (never echoing a value that may be a key)."""
    if p.api_keys is not None:
        if not p.api_keys:
            problems.append(f"{where}.api_keys must list at least one key (or be left out)")
        for j, key in enumerate(p.api_keys):
            if not isinstance(key, Secret) or not key.reveal():
                problems.append(f"{where}.api_keys[{j}] must be a non-empty string")
    if p.api_key_envs is not None:
        if not p.api_key_envs:
            problems.append(f"{where}.api_key_envs must list at least one name (or be left out)")
        for j, name in enumerate(p.api_key_envs):
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                problems.append(
                    f"{where}.api_key_envs[{j}] is not an environment variable name "
                    "(value not shown; put keys themselves in api_keys)"
                )
            elif not environ.get(name):
                shown = name if _USUAL_ENV_NAME.fullmatch(name) else "(not shown)"
                problems.append(
                    f"{where}: environment variable {shown} (api_key_envs[{j}]) is not set"
                )


def validate_config(config: RuntimeConfig, *, environ: Mapping[str, str] | None = None) -> None:
    """Check ``config`` as a whole; raise one :class:`ConfigError` listing every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    if not config.providers:
        problems.append("at least one provider is required")
    names: set[str] = set()
    for i, p in enumerate(config.providers):
        if p.name in names:
            problems.append(f"providers[{i}]: duplicate provider name {p.name!r}")
        names.add(p.name)
        _validate_provider(p, i, problems, env)
    if config.strategy not in STRATEGIES:
        problems.append(
            f"strategy {config.strategy!r} is unknown (expected one of {sorted(STRATEGIES)})"
        )
    if config.shared_concurrency not in ("local", "lease", "strict"):
        problems.append(
            f"shared_concurrency {config.shared_concurrency!r} is unknown "
            "(expected 'local', 'lease' or 'strict')"
        )
    _check_number(problems, "lease_ttl_s", config.lease_ttl_s, minimum=0.05)

    f = config.failover
    _check_number(problems, "failover.max_attempts", f.max_attempts, minimum=1, integer=True)
    _check_number(
        problems,
        "failover.max_attempts_per_provider",
        f.max_attempts_per_provider,
        minimum=1,
        integer=True,
    )
    if (
        _both_numbers(f.max_attempts, f.max_attempts_per_provider)
        and f.max_attempts_per_provider > f.max_attempts
    ):
        problems.append("failover.max_attempts_per_provider must not exceed max_attempts")
    _check_number(problems, "failover.backoff_base_s", f.backoff_base_s, minimum=0)
    _check_number(problems, "failover.backoff_max_s", f.backoff_max_s, minimum=0)
    if _both_numbers(f.backoff_max_s, f.backoff_base_s) and f.backoff_max_s < f.backoff_base_s:
        problems.append("failover.backoff_max_s must be >= backoff_base_s")
    _check_number(problems, "failover.max_retry_after_s", f.max_retry_after_s, minimum=0)
    _check_number(problems, "failover.retry_budget_ratio", f.retry_budget_ratio, minimum=0)
    _check_number(
        problems, "failover.retry_budget_min", f.retry_budget_min, minimum=0, integer=True
    )
    _check_number(
        problems,
        "failover.retry_budget_window_s",
        f.retry_budget_window_s,
        minimum=0,
        inclusive=False,
    )
    _check_number(problems, "failover.queue_timeout_s", f.queue_timeout_s, minimum=0)
    _check_number(problems, "failover.max_queue", f.max_queue, minimum=0, integer=True)
    _check_number(
        problems,
        "failover.default_deadline_s",
        f.default_deadline_s,
        minimum=0,
        inclusive=False,
        optional=True,
    )
    unknown_errors = set(f.retryable_errors) - RETRYABLE_ERROR_NAMES
    if unknown_errors:
        problems.append(
            f"failover.retryable_errors has unknown or never-retryable names "
            f"{sorted(unknown_errors)} (allowed: {sorted(RETRYABLE_ERROR_NAMES)})"
        )

    h = config.health
    _check_number(problems, "health.interval_s", h.interval_s, minimum=0, inclusive=False)
    _check_number(problems, "health.probe_timeout_s", h.probe_timeout_s, minimum=0, inclusive=False)
    _check_number(problems, "health.cooldown_s", h.cooldown_s, minimum=0, inclusive=False)
    _check_number(problems, "health.max_cooldown_s", h.max_cooldown_s, minimum=0, inclusive=False)
    if _both_numbers(h.max_cooldown_s, h.cooldown_s) and h.max_cooldown_s < h.cooldown_s:
        problems.append("health.max_cooldown_s must be >= cooldown_s")
    _check_number(
        problems, "health.failure_threshold", h.failure_threshold, minimum=1, integer=True
    )
    _check_share(problems, "health.error_rate_threshold", h.error_rate_threshold)
    _check_number(problems, "health.window_size", h.window_size, minimum=1, integer=True)
    _check_number(problems, "health.min_calls", h.min_calls, minimum=1, integer=True)
    if _both_numbers(h.min_calls, h.window_size) and h.min_calls > h.window_size:
        problems.append("health.min_calls must not exceed window_size")
    _check_number(
        problems, "health.slow_call_ms", h.slow_call_ms, minimum=0, inclusive=False, optional=True
    )
    _check_share(problems, "health.slow_call_rate", h.slow_call_rate)
    _check_number(problems, "health.half_open_probes", h.half_open_probes, minimum=1, integer=True)
    _check_number(
        problems, "health.failed_after_trips", h.failed_after_trips, minimum=1, integer=True
    )

    _check_number(
        problems,
        "cost.max_cost_per_request",
        config.cost.max_cost_per_request,
        minimum=0,
        optional=True,
    )
    _check_number(
        problems,
        "cost.assumed_output_tokens",
        config.cost.assumed_output_tokens,
        minimum=1,
        integer=True,
    )
    _check_number(problems, "cache.ttl_s", config.cache.ttl_s, minimum=0, inclusive=False)
    _check_number(problems, "cache.max_entries", config.cache.max_entries, minimum=1, integer=True)
    lg = config.log
    _check_number(problems, "log.batch_max_events", lg.batch_max_events, minimum=1, integer=True)
    _check_number(problems, "log.buffer_max_events", lg.buffer_max_events, minimum=1, integer=True)
    # A whole number of events: 2.5 would be a typo, not a schedule.
    every = lg.snapshot_every
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        problems.append(f"log.snapshot_every must be a whole number >= 0, got {every!r}")
    if not isinstance(lg.synchronous, str) or lg.synchronous.upper() not in (
        "OFF",
        "NORMAL",
        "FULL",
        "EXTRA",
    ):
        problems.append(f"log.synchronous {lg.synchronous!r} must be OFF, NORMAL, FULL or EXTRA")

    pool_names: set[str] = set()
    for pool in config.pools:
        problems.extend(check_pool(pool, names, taken=pool_names))
        pool_names.add(pool.name)
    test_names: set[str] = set()
    for test in config.ab_tests:
        problems.extend(check_ab_test(test, names, taken=test_names))
        test_names.add(test.name)
    problems.extend(check_budgets(config))
    problems.extend(check_fallbacks(config))
    if problems:
        raise ConfigError(problems)


_UNCONVERTIBLE = object()
"""What :func:`_convertible` returns for a value that does not convert to its type."""


def conversion_problems(data: Mapping[str, Any]) -> list[str]:
    """Return every problem of plain ``data`` (as parsed from TOML) as a configuration.

    Each value that does not convert to its field's type is reported with its path (msgspec
    alone stops at the first). When every wrong value has a default, the file's values are
    then validated with the defaults in their place, so that the other problems of the file
    are reported in the same pass; a wrong required value (a provider's ``name``, say) leaves
    too little to validate, and only the conversion problems are reported.
    """
    problems: list[str] = []
    cleaned = _convertible(dict(data), RuntimeConfig, "$", problems)
    if cleaned is not _UNCONVERTIBLE:
        try:
            validate_config(
                msgspec.convert(cleaned, RuntimeConfig, dec_hook=_dec_hook, strict=True)
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
        except msgspec.ValidationError as exc:  # not expected: each part converted alone
            problems.append(str(exc))
    return problems


def _convertible(value: object, typ: Any, path: str, problems: list[str]) -> object:
    """Return ``value`` without the fields that do not convert to ``typ``, noting each one.

    Returns ``_UNCONVERTIBLE`` when ``value`` itself cannot be kept (it does not convert, or
    a required field of it does not).
    """
    if isinstance(typ, type) and issubclass(typ, msgspec.Struct) and isinstance(value, dict):
        fields = {f.encode_name: f for f in msgspec.structs.fields(typ)}
        kept: dict[str, object] = {}
        whole = True
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                problems.append(f"Object contains unknown field `{key}` - at `{path}`")
                continue
            sub = _convertible(item, field.type, f"{path}.{key}", problems)
            if sub is _UNCONVERTIBLE:
                whole = whole and not field.required
                continue
            kept[key] = sub
        for name, field in fields.items():
            if field.required and name not in value:
                problems.append(f"Object missing required field `{name}` - at `{path}`")
                whole = False
        return kept if whole else _UNCONVERTIBLE
    if typing.get_origin(typ) is list and isinstance(value, list):
        (item_type,) = typing.get_args(typ)
        items = [_convertible(v, item_type, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return _UNCONVERTIBLE if _UNCONVERTIBLE in items else items
    try:
        msgspec.convert(value, typ, dec_hook=_dec_hook, strict=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if " - at `$" in message:
            problems.append(message.replace(" - at `$", f" - at `{path}", 1))
        else:
            problems.append(f"{message} - at `{path}`")
        return _UNCONVERTIBLE
    return value


def check_pool(pool: PoolConfig, providers: set[str], *, taken: set[str]) -> list[str]:
    """Return the problems of one pool definition."""
    problems = []
    where = f"pool {pool.name!r}"
    if pool.name in taken:
        problems.append(f"{where}: duplicate pool name")
    if not pool.providers:
        problems.append(f"{where}: at least one provider is required")
    for p in pool.providers:
        if p not in providers:
            problems.append(f"{where}: unknown provider {p!r}")
    if pool.strategy not in STRATEGIES:
        problems.append(f"{where}: unknown strategy {pool.strategy!r}")
    for p, w in (pool.weights or {}).items():
        if p not in pool.providers:
            problems.append(f"{where}: weight given for {p!r}, which is not in the pool")
        _check_number(problems, f"{where}.weights[{p!r}]", w, minimum=0)
    if pool.weights and not any(_is_number(w) and w > 0 for w in pool.weights.values()):
        problems.append(f"{where}: at least one weight must be positive")
    return problems


def check_ab_test(test: ABTestConfig, providers: set[str], *, taken: set[str]) -> list[str]:
    """Return the problems of one A/B test definition."""
    problems = []
    where = f"A/B test {test.name!r}"
    if test.name in taken:
        problems.append(f"{where}: duplicate test name")
    for label, p in (("variant_a", test.variant_a), ("variant_b", test.variant_b)):
        if p not in providers:
            problems.append(f"{where}: {label} names unknown provider {p!r}")
    if not _is_number(test.split_ratio) or not 0 <= test.split_ratio <= 1:
        problems.append(f"{where}: split_ratio must be in [0, 1], got {test.split_ratio!r}")
    metrics: object = test.metrics or {}  # typed loosely: the values come from callers
    for key, figures in metrics.items() if isinstance(metrics, dict) else ():
        if key not in ("A", "B"):
            problems.append(f"{where}: metrics keys must be 'A' or 'B', got {key!r}")
        if not isinstance(figures, dict):
            problems.append(f"{where}: metrics[{key!r}] must be a table of numbers")
            continue
        for name, value in figures.items():
            if not isinstance(name, str) or not _is_number(value):
                problems.append(
                    f"{where}: metrics[{key!r}][{name!r}] must be a finite number, got {value!r}"
                )
    return problems


def check_budgets(config: RuntimeConfig) -> list[str]:
    """Return the problems of the configuration's spend budgets."""
    problems: list[str] = []
    providers = {p.name for p in config.providers}
    models = {m.name for p in config.providers for m in p.models}
    seen: set[str] = set()
    for i, b in enumerate(config.budgets):
        where = f"budgets[{i}] ({b.name!r})"
        if not isinstance(b.name, str) or not b.name.strip():
            problems.append(f"budgets[{i}]: name must be a non-empty string")
        elif b.name in seen:
            problems.append(f"{where}: duplicate budget name")
        seen.add(b.name)
        _check_number(problems, f"{where}.limit", b.limit, minimum=0, inclusive=False)
        _check_share(problems, f"{where}.prefer_below", b.prefer_below)
        if b.period not in BUDGET_PERIODS:
            problems.append(
                f"{where}: unknown period {b.period!r} (expected one of {sorted(BUDGET_PERIODS)})"
            )
        if b.on_exceeded not in BUDGET_ACTIONS:
            problems.append(
                f"{where}: on_exceeded {b.on_exceeded!r} is unknown "
                f"(expected one of {sorted(BUDGET_ACTIONS)})"
            )
        if b.provider is not None and b.provider not in providers:
            problems.append(f"{where}: unknown provider {b.provider!r}")
        if b.model is not None and b.model not in models:
            problems.append(f"{where}: no provider serves model {b.model!r}")
        if b.tag is not None and (not isinstance(b.tag, str) or not b.tag.partition("=")[0]):
            problems.append(f"{where}: tag must be a metadata key or key=value, got {b.tag!r}")
    return problems


def check_fallbacks(config: RuntimeConfig) -> list[str]:
    """Return the problems of the configuration's model fallbacks (unknown models, cycles)."""
    problems: list[str] = []
    models = {m.name for p in config.providers for m in p.models}
    for model, chain in config.fallbacks.items():
        if model not in models:
            problems.append(f"fallbacks[{model!r}]: no provider serves model {model!r}")
        if not chain:
            problems.append(f"fallbacks[{model!r}]: list at least one fallback model")
        for other in chain:
            if other not in models:
                problems.append(f"fallbacks[{model!r}]: no provider serves model {other!r}")
            elif other == model:
                problems.append(f"fallbacks[{model!r}]: a model cannot fall back to itself")
        if len(set(chain)) != len(chain):
            problems.append(f"fallbacks[{model!r}]: a model is listed twice")
    # A cycle (big -> small -> big) would make "the request's model" ambiguous: refuse it.
    for start in sorted(config.fallbacks):
        path = [start]
        stack = [(start, iter(config.fallbacks.get(start, ())))]
        while stack:
            _, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                continue
            if child == start:
                if start == min(path):  # each cycle once, from its smallest name
                    problems.append(f"fallbacks: cycle {' -> '.join([*path, child])}")
                break
            if child in path or child not in config.fallbacks:
                continue
            path.append(child)
            stack.append((child, iter(config.fallbacks[child])))
    return problems
