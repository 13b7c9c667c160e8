#!/usr/bin/env bash
# Run CMD... with a throw-away PostgreSQL server: `bash scripts/with-postgres.sh CMD...`.
#
# Finds Debian's server (/usr/lib/postgresql/*/bin; when absent and running as root, installs
# the `postgresql` package), creates a temporary data directory, starts the server on a free
# 127.0.0.1 port (as the `postgres` user when run as root: the server refuses to run as root),
# creates a database and exports, for CMD:
#   ROUTELEDGER_TEST_PG_URL   postgresql://postgres@127.0.0.1:PORT/routeledger_test
#   ROUTELEDGER_TEST_PG_BIN   the server's bin directory (pg_ctl, ...)
#   ROUTELEDGER_TEST_PG_DATA  the data directory (a test may `pg_ctl restart` it)
#   ROUTELEDGER_TEST_PG_USER  the OS user the server runs as
# The server is stopped and the directory removed on exit, whatever CMD's status, which is
# this script's status. When no server can be had, CMD runs without the variables (tests
# that need PostgreSQL then skip, or fail under CI) and a line on stderr says why.
set -uo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 CMD..." >&2
  exit 2
fi

find_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

PG_BIN=$(find_bin || true)
if [ -z "$PG_BIN" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "with-postgres: installing Debian's postgresql package" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
    >/dev/null 2>&1 || echo "with-postgres: apt-get install postgresql failed" >&2
  PG_BIN=$(find_bin || true)
fi
if [ -z "$PG_BIN" ]; then
  echo "with-postgres: no PostgreSQL server found; running without one" >&2
  exec "$@"
fi

# As root, the server runs as `postgres` (Debian's package creates that user).
if [ "$(id -u)" -eq 0 ]; then
  PG_USER=postgres
  as_pg() { runuser -u "$PG_USER" -- "$@"; }
else
  PG_USER=$(id -un)
  as_pg() { "$@"; }
fi

PG_DATA=$(mktemp -d "${TMPDIR:-/tmp}/routeledger-pg.XXXXXX")
chmod 700 "$PG_DATA"
[ "$(id -u)" -eq 0 ] && chown "$PG_USER" "$PG_DATA"

cleanup() {
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DATA"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free port: ask the kernel for one (the small race with another process is acceptable;
# the start fails loudly if the port was taken meanwhile).
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

if ! as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U "$PG_USER" -A trust -E UTF8 --no-locale \
  >"$PG_DATA.initdb.log" 2>&1; then
  echo "with-postgres: initdb failed:" >&2
  cat "$PG_DATA.initdb.log" >&2
  rm -f "$PG_DATA.initdb.log"
  exit 1
fi
rm -f "$PG_DATA.initdb.log"
# Small and quick: tests make many short-lived databases; durability is not the point here.
cat >>"$PG_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PG_DATA'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
EOF

if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 30 start >/dev/null; then
  echo "with-postgres: the server did not start:" >&2
  cat "$PG_DATA/server.log" >&2
  exit 1
fi
as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$PG_USER" routeledger_test

export ROUTELEDGER_TEST_PG_URL="postgresql://$PG_USER@127.0.0.1:$PORT/routeledger_test"
export ROUTELEDGER_TEST_PG_BIN="$PG_BIN"
export ROUTELEDGER_TEST_PG_DATA="$PG_DATA"
export ROUTELEDGER_TEST_PG_USER="$PG_USER"

"$@"
