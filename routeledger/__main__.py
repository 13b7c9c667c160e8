"""Allow ``python -m routeledger``."""

from __future__ import annotations

import sys

from routeledger.cli import main

sys.exit(main())
