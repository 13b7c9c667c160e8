#!/usr/bin/env bash
# Set up (a virtual environment in .venv, created if missing) and run `routeledger demo`.
# Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
exec "$VENV/bin/routeledger" demo "$@"
