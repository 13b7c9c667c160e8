"""Real PostgreSQL for the tests: a fresh schema per test on the server the wrapper started.

``scripts/with-postgres.sh`` (which ``.ci/run`` and the README's test command use) starts a
throw-away server and exports ``ROUTELEDGER_TEST_PG_URL``, with its bin and data directories
(``ROUTELEDGER_TEST_PG_BIN``, ``ROUTELEDGER_TEST_PG_DATA``, ``ROUTELEDGER_TEST_PG_USER``) for
the tests that restart it. Without the variable a PostgreSQL test skips, and under CI (``CI``
set) fails: there a missing server is a broken environment.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote

from support import cannot

__all__ = ["fresh_url", "server_url", "start_server", "stop_server", "with_schema"]


def server_url() -> str:
    """Return the test server's URL, or skip (fail under CI) when there is none."""
    url = os.environ.get("ROUTELEDGER_TEST_PG_URL")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        url = None
    if not url:
        cannot("needs PostgreSQL: run under scripts/with-postgres.sh (and the postgres extra)")
    return url


def with_schema(url: str, schema: str) -> str:
    """Return ``url`` with its connections' ``search_path`` (and application name) ``schema``."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}&application_name={schema}"


@contextlib.contextmanager
def fresh_url() -> Iterator[str]:
    """Create an empty schema, yield a URL whose tables live there, then drop it."""
    base = server_url()  # skips (fails under CI) without a server or psycopg
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_schema(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            # Sessions a test left open (a killed child's) must not hold the drop up.
            conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND application_name = %s",
                (schema,),
            )
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _pg_ctl(*args: str) -> None:
    bin_dir = os.environ.get("ROUTELEDGER_TEST_PG_BIN")
    data = os.environ.get("ROUTELEDGER_TEST_PG_DATA")
    user = os.environ.get("ROUTELEDGER_TEST_PG_USER", "")
    if not bin_dir or not data:
        cannot("needs the server started by scripts/with-postgres.sh")
    command = [f"{bin_dir}/pg_ctl", "-D", data, *args]
    if os.geteuid() == 0 and user:
        command = ["runuser", "-u", user, "--", *command]
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60
    )


def stop_server() -> None:
    """Stop the test server (fast: every connection is dropped); :func:`start_server` again."""
    _pg_ctl("-m", "fast", "-w", "stop")


def start_server() -> None:
    """Start the test server again, on the same port and data."""
    data = os.environ["ROUTELEDGER_TEST_PG_DATA"]
    _pg_ctl("-l", f"{data}/server.log", "-w", "-t", "30", "start")
