"""Where a run keeps its warehouse and state: --workdir, else $SPENDSTREAM_HOME, else ./spendstream-data."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_workdir"]

ENV_HOME = "SPENDSTREAM_HOME"
DEFAULT_WORKDIR = "spendstream-data"


def resolve_workdir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the work directory (not created), by the contract's precedence."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    return (Path.cwd() / DEFAULT_WORKDIR).resolve()
