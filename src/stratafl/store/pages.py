"""Keyset pages of the store's lists, and the opaque cursors that name where a page ends.

A list is read in the order of a unique key (e.g. ``(created_at, id)``); a page is the
``limit`` rows after a key, found by the index with ``WHERE key > :after``, so reading
page 1000 costs what reading page 1 does and a row added meanwhile is neither skipped nor
repeated. The cursor handed out is that key, tagged with the list it belongs to, as
URL-safe base64 of JSON: opaque to callers, and checked when it comes back (a cursor of
another list, or a mangled one, is refused with how to get a good one).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from stratafl.errors import StrataError

__all__ = [
    "MAX_CURSOR_CHARS",
    "bad_cursor",
    "decode_cursor",
    "encode_cursor",
    "keyset",
    "next_cursor",
]

MAX_CURSOR_CHARS = 512
"""Longer than any cursor this module makes; a longer one is refused unread."""

Key = tuple[str | int | float, ...]


def encode_cursor(kind: str, key: Key) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def bad_cursor(kind: str, cursor: str) -> StrataError:
    """The error for a cursor that is not one the list ``kind`` gave out (a 400)."""
    what = (
        f"a cursor of {MAX_CURSOR_CHARS}+ characters"
        if len(cursor) > MAX_CURSOR_CHARS
        else repr(cursor[:40])
    )
    return StrataError(
        f"{what} is not a cursor of {kind}: pass the `next` of the previous page of {kind} "
        "unchanged, or leave `after` out to start from the first page"
    )


def decode_cursor(kind: str, cursor: str, types: Sequence[type]) -> Key:
    """The key in ``cursor``, checked against the list ``kind`` and its key's ``types``."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise bad_cursor(kind, cursor)
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        decoded = None
    if (
        not isinstance(decoded, list)
        or len(decoded) != len(types) + 1
        or decoded[0] != kind
        or not all(_is(value, want) for value, want in zip(decoded[1:], types, strict=True))
    ):
        raise bad_cursor(kind, cursor)
    return tuple(decoded[1:])


def _is(value: Any, want: type) -> bool:
    """``value`` is a ``want`` a database can compare: an int64, a finite float, a string."""
    if isinstance(value, bool):
        return False
    if want is float:
        return isinstance(value, int | float) and math.isfinite(value) and abs(value) < 2**63
    if want is int:
        return isinstance(value, int) and -(2**63) <= value < 2**63
    return isinstance(value, want)


def keyset(
    query: Select[Any],
    kind: str,
    columns: Sequence[InstrumentedAttribute[Any]],
    after: str | None,
    limit: int,
) -> Select[Any]:
    """``query`` ordered by ``columns`` (a unique key), from after the cursor ``after``,
    one row more than ``limit`` (that row only tells whether there is a next page)."""
    if after is not None:
        types = [column.type.python_type for column in columns]
        key = decode_cursor(kind, after, types)
        query = query.where(tuple_(*columns) > tuple_(*key))
    return query.order_by(*columns).limit(limit + 1)


def next_cursor(kind: str, rows: Sequence[Any], columns: Sequence[str], limit: int) -> str | None:
    """The cursor after the last of ``limit`` rows, or None when no row is past them."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor(kind, tuple(getattr(last, name) for name in columns))
