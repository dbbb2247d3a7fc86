"""Where a study's results go: results.json, a markdown table in README.md, PNG plots.

Plots are drawn on a bare matplotlib `Figure` (the Agg canvas, no pyplot and no display),
so studies run on a headless machine; matplotlib is the ``experiments`` extra.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratafl.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def write_json(path: Path, results: dict[str, Any]) -> None:
    """The results as JSON; NaN (a metric with nothing to measure) is written as null."""
    path.write_text(json.dumps(_nan_to_none(results), indent=2) + "\n")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def new_figure(rows: int = 1, cols: int = 1, width: float = 6.0, height: float = 4.0) -> Figure:
    """A figure of ``rows`` x ``cols`` panels of ``width`` x ``height`` inches each."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError("plots need matplotlib: pip install 'stratafl[experiments]'") from exc
    figure = Figure(figsize=(width * cols, height * rows), layout="constrained")
    figure.subplots(rows, cols, squeeze=False)
    return figure


def save_figure(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=110)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value
