"""Logs this process may not write: refused by writers at open, read by readers (issue 12.12).

The tests run as root here, and root writes through any file mode, so ``chmod`` alone proves
nothing. Each case therefore runs in a child process that drops to the ``nobody`` user
(``os.setuid``) before it opens the log; run by any other user, the child keeps its user and
the file modes do the work. A directory without write permission stands for a read-only
filesystem: SQLite meets the same refusal when it tries to create the ``-wal`` and ``-shm``
files beside the log (SQLITE_READONLY_DIRECTORY, or SQLITE_CANTOPEN).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import cannot

from routeledger._replay import replay
from routeledger.cli import main
from routeledger.events import RequestReceived
from routeledger.store import SQLiteStore

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v1_log.sqlite"
NOBODY = 65534


_CHILD = """
import contextlib, io, json, os, sys

import msgspec

from routeledger import ModelSpec, ProviderConfig, Runtime, RuntimeConfig
from routeledger._replay import replay
from routeledger.cli import main
from routeledger.events import RouteledgerError
from routeledger.store import SQLiteStore

action, path, warm, argv = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
config = RuntimeConfig(
    providers=[
        ProviderConfig(name="a", kind="openai", base_url="http://127.0.0.1:9/v1",
                       models=[ModelSpec(name="m")])
    ]
)


def run(log):
    if action == "open":
        SQLiteStore(log).close()
        return {"ok": True}
    if action == "runtime":
        rt = Runtime.start(config, event_log=log, active_health_checks=False)
        rt.close()
        return {"ok": True}
    if action == "replay":
        return {"ok": True, "figures": msgspec.to_builtins(replay(log).snapshot())}
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = main([arg.replace("{db}", log) for arg in argv])
    return {"ok": status == 0, "output": out.getvalue()}


# Walk the same code path once while still root, on a log in a writable place: the modules it
# imports lazily live under the interpreter's prefix, which nobody may not read.
run(warm)
if os.geteuid() == 0:
    os.setgid(NOBODY)
    os.setuid(NOBODY)
try:
    result = run(path)
except RouteledgerError as exc:
    result = {"error": type(exc).__name__, "message": str(exc)}
print(json.dumps(result))
""".replace("NOBODY", str(NOBODY))


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory the unprivileged child can reach (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="routeledger-ro-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)


def as_unprivileged(
    action: str, log: Path, warm: Path, argv: list[str] | None = None
) -> dict[str, Any]:
    """Run ``action`` on ``log`` in a child that cannot write what the modes forbid."""
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, action, str(log), str(warm), json.dumps(argv or [])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if child.returncode != 0 and "Operation not permitted" in child.stderr:
        cannot("cannot drop privileges here: no real way to make a file read-only")
    assert child.returncode == 0, child.stderr
    result: dict[str, Any] = json.loads(child.stdout.splitlines()[-1])
    return result


def make_log(path: Path, count: int = 3) -> None:
    """Write a closed WAL-mode log of ``count`` events at ``path``."""
    with SQLiteStore(path) as store:
        store.append(
            [RequestReceived(ts=float(i), request_id=f"r{i}", model="m") for i in range(count)]
        )


def protect(directory: Path, *, dir_mode: int, file_mode: int) -> None:
    """Set the modes of ``directory`` and of every file in it."""
    for file in directory.iterdir():
        file.chmod(file_mode)
    directory.chmod(dir_mode)


READ_ONLY_FILE = {"dir_mode": 0o777, "file_mode": 0o444}
"""The log file is read-only; its directory is writable (-wal and -shm can be created)."""
READ_ONLY_DIRECTORY = {"dir_mode": 0o555, "file_mode": 0o666}
"""The directory is read-only (as on a read-only filesystem); the file itself is writable."""
READ_ONLY_BOTH = {"dir_mode": 0o555, "file_mode": 0o444}


# --- writers are refused at open --------------------------------------------------------------


@pytest.mark.parametrize("modes", [READ_ONLY_FILE, READ_ONLY_DIRECTORY], ids=["file", "dir"])
def test_a_writer_refuses_a_log_it_cannot_write_when_it_opens(
    shared: Path, tmp_path: Path, modes: dict[str, int]
) -> None:
    """SQLiteStore opened for writing on a read-only log raises a StoreError saying so."""
    log = shared / "events.sqlite"
    make_log(log)
    protect(shared, **modes)
    result = as_unprivileged("open", log, tmp_path / "warm.sqlite")
    assert result.get("error") == "StoreError", result
    assert "read-only" in result["message"]
    assert str(log) in result["message"]


@pytest.mark.parametrize("modes", [READ_ONLY_FILE, READ_ONLY_DIRECTORY], ids=["file", "dir"])
def test_runtime_start_refuses_a_log_it_cannot_write_before_any_request(
    shared: Path, tmp_path: Path, modes: dict[str, int]
) -> None:
    """Runtime.start on a log it cannot write fails at once with a StoreError, not at a flush."""
    log = shared / "events.sqlite"
    make_log(log)
    protect(shared, **modes)
    result = as_unprivileged("runtime", log, tmp_path / "warm.sqlite")
    assert result.get("error") == "StoreError", result
    assert "read-only" in result["message"]


# --- readers open what they cannot write ------------------------------------------------------


def run_cli(argv: list[str], log: Path) -> str:
    """Run the command line in this process and return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert main(argv) == 0
    return out.getvalue().replace(str(log), "{db}")


COMMANDS = {
    "replay": ["replay", "--db", "{db}", "--json"],
    "tail": ["tail", "--db", "{db}", "--no-follow", "--json"],
    "audit": ["audit", "--db", "{db}", "--json", "{request}"],
}


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_read_commands_open_a_wal_log_in_a_read_only_directory(
    shared: Path, tmp_path: Path, version: int, command: str
) -> None:
    """replay, tail and audit read a v1 or v2 WAL log where no -shm can be created."""
    log = shared / "events.sqlite"
    shutil.copyfile(FIXTURE, log)
    if version == 2:
        SQLiteStore(log).close()  # migrates it; a clean close leaves no -wal behind
    copy = tmp_path / "reference.sqlite"
    shutil.copyfile(log, copy)
    with SQLiteStore(copy, readonly=True) as store:
        request = next(
            str(s.event.request_id) for s in store.read() if getattr(s.event, "request_id", None)
        )
    argv = [arg.replace("{request}", request) for arg in COMMANDS[command]]
    expected = run_cli([arg.replace("{db}", str(copy)) for arg in argv], copy)
    assert request in expected or '"steady"' in expected
    protect(shared, **READ_ONLY_BOTH)
    assert sorted(p.name for p in shared.iterdir()) == ["events.sqlite"]

    result = as_unprivileged("cli", log, tmp_path / "reference.sqlite", argv)

    assert result.get("ok"), result
    assert result["output"].replace(str(log), "{db}") == expected
    assert sorted(p.name for p in shared.iterdir()) == ["events.sqlite"]


def test_replay_of_a_log_in_a_read_only_directory_equals_the_writable_replay(
    shared: Path, tmp_path: Path
) -> None:
    """replay() in a read-only directory gives the figures of the same log read normally."""
    log = shared / "events.sqlite"
    shutil.copyfile(FIXTURE, log)
    expected = msgspec.to_builtins(replay(FIXTURE).snapshot())
    protect(shared, **READ_ONLY_BOTH)
    warm = tmp_path / "warm.sqlite"
    shutil.copyfile(FIXTURE, warm)
    result = as_unprivileged("replay", log, warm)
    assert result.get("figures") == json.loads(json.dumps(expected))


_CRASHED_WRITER = """
import os, sys
from routeledger.events import RequestReceived
from routeledger.store import SQLiteStore

store = SQLiteStore(sys.argv[1])
store.append([RequestReceived(ts=9.0, request_id="in-the-wal", model="m")])
os._exit(0)  # no close: the commit stays in the -wal, not yet checkpointed
"""


@pytest.mark.parametrize("keep_shm", [True, False], ids=["with-shm", "without-shm"])
def test_a_log_whose_wal_holds_commits_is_read_whole_or_refused_never_read_short(
    shared: Path, tmp_path: Path, keep_shm: bool
) -> None:
    """Commits still in the -wal are read (with a -shm) or the open fails; never skipped."""
    log = shared / "events.sqlite"
    make_log(log, 3)
    subprocess.run([sys.executable, "-c", _CRASHED_WRITER, str(log)], check=True, timeout=60)
    assert (shared / "events.sqlite-wal").stat().st_size > 0
    if not keep_shm:
        (shared / "events.sqlite-shm").unlink()
    protect(shared, **READ_ONLY_BOTH)
    warm = tmp_path / "warm.sqlite"
    make_log(warm, 1)
    result = as_unprivileged("replay", log, warm)
    if keep_shm:
        assert result.get("figures", {}).get("events") == 4, result
    else:
        assert result.get("error") == "StoreError", result
        assert "events.sqlite-wal" in result["message"]
        assert "cannot create" in result["message"]


def test_the_shared_directory_is_not_writable_by_the_child(shared: Path, tmp_path: Path) -> None:
    """The premise of this module: the child really cannot create a file in a 0o555 directory."""
    shared.chmod(0o555)
    probe = shared / "probe"
    code = (
        "import os, sys\n"
        f"if os.geteuid() == 0:\n    os.setgid({NOBODY}); os.setuid({NOBODY})\n"
        "try:\n    open(sys.argv[1], 'w')\nexcept PermissionError:\n    print('refused')\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, str(probe)], capture_output=True, text=True, timeout=60
    )
    if "Operation not permitted" in child.stderr:
        cannot("cannot drop privileges here")
    assert child.stdout.strip() == "refused"
    assert not probe.exists()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o555


# --- a real read-only filesystem, where this machine allows one ------------------------------

_ON_READ_ONLY_MOUNT = """
import contextlib, io, json, sys

from routeledger import ModelSpec, ProviderConfig, Runtime, RuntimeConfig
from routeledger.cli import main
from routeledger.events import StoreError

log = sys.argv[1]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = main(["replay", "--db", log, "--json"])
config = RuntimeConfig(
    providers=[ProviderConfig(name="a", kind="openai", base_url="http://127.0.0.1:9/v1",
                              models=[ModelSpec(name="m")])]
)
try:
    Runtime.start(config, event_log=log, active_health_checks=False).close()
    start = "started"
except StoreError as exc:
    start = str(exc)
print(json.dumps({"status": status, "replay": out.getvalue(), "start": start}))
"""

_MOUNT = """
set -e
mount -t tmpfs -o size=8m tmpfs "$1"
cp "$2" "$1/events.sqlite"
mount -o remount,ro "$1"
echo mounted
exec "$3" -c "$4" "$1/events.sqlite"
"""


def test_replay_reads_and_runtime_start_refuses_a_log_on_a_read_only_filesystem(
    tmp_path: Path,
) -> None:
    """On a read-only mount (even as root) replay reads the log and Runtime.start refuses it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        cannot("no unshare(1): cannot make a private read-only mount here")
    mountpoint = tmp_path / "ro"
    mountpoint.mkdir()
    script = [str(mountpoint), str(FIXTURE), sys.executable, _ON_READ_ONLY_MOUNT]
    # A private mount namespace: the mount exists only for the child and vanishes with it.
    child = subprocess.run(
        [unshare, "--mount", "sh", "-c", _MOUNT, "sh", *script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if not child.stdout.startswith("mounted"):
        cannot(f"cannot mount a read-only filesystem here: {child.stderr.strip()}")
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.splitlines()[-1])
    copy = tmp_path / "copy.sqlite"
    shutil.copyfile(FIXTURE, copy)
    expected = run_cli(["replay", "--db", str(copy), "--json"], copy)
    assert result["status"] == 0
    assert result["replay"].replace(str(mountpoint / "events.sqlite"), "{db}") == expected
    assert "read-only" in result["start"]
