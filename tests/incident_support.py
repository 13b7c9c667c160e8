"""Record a provider outage with a real runtime against loopback fake providers.

``tests/fixtures/incident.toml`` was made with this module, from the repository root::

    .venv/bin/python tests/incident_support.py tests/fixtures/incident.toml

It records 120 sequential requests to two fake providers ("primary" preferred by priority,
"backup"); "primary" answers 503 to requests 40 to 79, its circuit opens, traffic fails over
to "backup", and a half-open probe brings "primary" back. Then ``routeledger scenario``
extracts the whole log.
"""

from __future__ import annotations

import sys
from pathlib import Path

from routeledger import (
    HealthConfig,
    Message,
    ModelSpec,
    ProviderConfig,
    Request,
    Runtime,
    RuntimeConfig,
)
from routeledger.events import RouteledgerError
from routeledger.testing import Behaviour, FakeProvider, no_backoff

REQUESTS = 120
OUTAGE = range(40, 80)


def record_outage(db: Path, *, requests: int = REQUESTS) -> None:
    """Write the log of a recorded outage of "primary" to ``db`` (see the module docstring)."""
    with (
        FakeProvider(Behaviour(latency_ms=8), seed=1) as primary,
        FakeProvider(Behaviour(latency_ms=20), seed=2) as backup,
    ):
        config = RuntimeConfig(
            providers=[
                ProviderConfig(
                    name=name,
                    kind="openai",
                    base_url=fake.url + "/v1",
                    priority=priority,
                    models=[ModelSpec(name="m", input_per_mtok=1.0, output_per_mtok=2.0)],
                )
                for name, fake, priority in (("primary", primary, 200), ("backup", backup, 100))
            ],
            failover=no_backoff(),
            health=HealthConfig(failure_threshold=3, cooldown_s=0.2, interval_s=60.0),
        )
        request = Request(model="m", messages=[Message(role="user", content="hi " * 40)])
        with Runtime.start(config, event_log=db) as rt:
            for i in range(requests):
                bad = i in OUTAGE
                primary.set_behaviour(Behaviour(status=503) if bad else Behaviour(latency_ms=8))
                try:
                    rt.complete(request)
                except RouteledgerError:
                    pass
            rt.flush()


if __name__ == "__main__":
    import tempfile

    from routeledger.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "incident.sqlite"
        record_outage(log)
        sys.exit(main(["scenario", "--db", str(log), "--bucket-s", "0.25", "-o", sys.argv[1]]))
