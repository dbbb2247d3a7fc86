"""How many examples each fuzz test generates: a setting, so CI's budget fits the suite's
time and a longer hunt is one variable away (``STRATA_FUZZ_REST_EXAMPLES=2000 pytest -m fuzz``).
"""

from __future__ import annotations

import os


def fuzz_budget(name: str, default: int) -> int:
    """``STRATA_FUZZ_<NAME>_EXAMPLES`` if it is set, else ``default``."""
    variable = f"STRATA_FUZZ_{name.upper()}_EXAMPLES"
    raw = os.environ.get(variable, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{variable}={raw!r} is not a count: set it to a whole number >= 1")
    return int(raw)
