"""Read a TOML file: the one place routeledger opens a configuration or scenario file.

``routeledger.events`` promises no I/O, so it only parses mappings that are already loaded;
:meth:`RuntimeConfig.from_toml <routeledger.events.RuntimeConfig.from_toml>` and the
simulation's scenario loader both read their file here, and report a file that cannot be read
or parsed as one :class:`ConfigError` naming the path.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from routeledger.events import ConfigError

__all__ = ["read_toml"]


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the parsed contents of the TOML file at ``path``.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8, or is not valid TOML.
    """
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"cannot read {os.fspath(path)}: {exc.strerror}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{os.fspath(path)} is not valid TOML: {exc}"]) from None
