"""How every `strata ... list` prints: a table for people or, with ``--format json``, the
records as JSON (the REST API's own records, ids whole), so scripts need no second API.

Table cells may be cut to the terminal's width (``6d79d9322581…``); every command that
takes an id takes such a prefix too (the controller resolves it, `stratafl.store.ids`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel
from rich.table import Table

from stratafl.cli.console import console

__all__ = ["Format", "FormatOption", "show", "when"]


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"


R = TypeVar("R", bound=BaseModel)

FormatOption = Annotated[
    Format, typer.Option("--format", help="table for people, json for scripts (ids whole)")
]


def when(timestamp: float | None) -> str:
    """A Unix time as an ISO 8601 UTC date and time ("" for None)."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def show(
    records: Sequence[R],
    output: Format,
    columns: dict[str, Callable[[R], object]],
) -> None:
    """Print ``records`` as a table of ``columns`` or as their JSON."""
    if output is Format.JSON:
        print(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    table = Table()
    for name in columns:
        table.add_column(name)
    for record in records:
        table.add_row(*(str(cell(record)) for cell in columns.values()))
    console.print(table)
