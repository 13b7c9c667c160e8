#!/usr/bin/env bash
# Set up (a virtual environment in .venv, created if missing) and run every check:
# ruff (lint and format), mypy (strict, on an installed copy of the package), pytest.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh

echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

echo "== mypy"
# mypy cannot follow setuptools' package-dir mapping of an editable install, so it checks a
# real installed copy of the package instead.
rm -rf .mypy-site
"$VENV/bin/pip" install -q --no-deps --no-build-isolation --target .mypy-site . >/dev/null
MYPYPATH=.mypy-site "$VENV/bin/mypy" -p routeledger
rm -rf .mypy-site build

if [ -n "${CI:-}" ]; then
    bash scripts/ensure-chromium.sh  # the report tests render HTML in headless Chromium
fi

echo "== pytest"
"$VENV/bin/pytest" "$@"
