"""Ids as people type them: the whole id, or any prefix of it that names one row.

Tables print ids cut to fit the terminal (``6d79d9322581…``), so whatever takes an id
takes a unique prefix too (with the ellipsis, if it was pasted along): the exact id is
looked up first, and only a miss searches by prefix. A prefix that several ids share is
refused with the candidates, so a person never acts on a row they did not mean.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from stratafl.errors import ConfigError, NotFoundError

__all__ = ["ELLIPSIS", "MAX_CANDIDATES", "row_by_id"]

ELLIPSIS = "…"
"""What a table cell cut short ends with; pasted along with the prefix, it is ignored."""
MAX_CANDIDATES = 5
"""Ids an ambiguous prefix's error lists (and says how many more there are)."""

Row = TypeVar("Row")


def row_by_id(
    db: Session,
    table: type[Row],
    key: InstrumentedAttribute[Any],
    given: str,
    *,
    what: str,
    missing: str,
) -> Row:
    """The row of ``table`` whose ``key`` is ``given``, or the only one it starts with.

    ``what`` names the kind of id (``"model"``) and ``missing`` is the message of the
    `NotFoundError` for an id that matches nothing; a prefix that matches several rows is a
    `ConfigError` listing them."""
    row = db.get(table, given)
    if row is not None:
        return row
    prefix = given.removesuffix(ELLIPSIS)
    if prefix:
        # LIKE is case-insensitive on SQLite: the exact-case check below keeps ids exact
        query = select(key).where(key.startswith(prefix, autoescape=True)).order_by(key)
        found = [match for match in db.scalars(query.limit(50)) if match.startswith(prefix)]
        if len(found) == 1:
            match = db.get(table, found[0])
            assert match is not None
            return match
        if found:
            shown = ", ".join(found[:MAX_CANDIDATES])
            more = f" and {len(found) - MAX_CANDIDATES} more" if len(found) > MAX_CANDIDATES else ""
            raise ConfigError(
                f"{what} id {prefix!r} is the start of {len(found)} {what}s ({shown}{more}); "
                "give more of the id to pick one"
            )
    raise NotFoundError(missing)
