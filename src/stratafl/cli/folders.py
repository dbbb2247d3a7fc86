"""Where a `strata` command that makes files puts them when it is not told: a new folder of
its own in the working directory, never one shared with other runs or with the sources."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

__all__ = ["new_work_folder"]


def new_work_folder(kind: str) -> Path:
    """``./strata-KIND-YYYYmmdd-HHMMSS`` (absolute), with a suffix if one this second has
    that name; not made here (the run makes it)."""
    base = Path(f"strata-{kind}-{datetime.now():%Y%m%d-%H%M%S}").absolute()
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
