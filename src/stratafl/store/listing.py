"""Every list of the state store a page at a time: sessions, rounds, models, the trail,
combiners, clients and tokens (events: `stratafl.store.events`).

Each list has one order, oldest first by a unique key (`stratafl.store.pages.keyset`), except
a model's trail, which runs newest first from the model back to its seed. These methods are
part of `StateStore` (it inherits them from `ListingTable`); they live here to keep
`stratafl.store.state` small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from stratafl.errors import NotFoundError
from stratafl.records import (
    ClientRecord,
    CombinerRecord,
    ModelRecord,
    Page,
    Record,
    RoundRecord,
    SessionRecord,
    TokenRecord,
)
from stratafl.store.pages import bad_cursor, decode_cursor, encode_cursor, keyset, next_cursor
from stratafl.store.tables import (
    ClientRow,
    CombinerRow,
    ModelRow,
    RoundRow,
    SessionRow,
    TokenRow,
)

__all__ = ["ListingTable"]

R = TypeVar("R", bound=Record)


class ListingTable:
    """Keyset pages of the store's lists, mixed into `StateStore`."""

    def _session(self) -> Session:  # StateStore's own opens a session on its engine
        raise NotImplementedError

    def _page(
        self,
        record: type[R],
        query: Select[Any],
        kind: str,
        key: Sequence[InstrumentedAttribute[Any]],
        after: str | None,
        limit: int,
    ) -> Page[R]:
        """A page of ``query`` in the order of ``key``, after the cursor ``after``."""
        with self._session() as db:
            rows = list(db.scalars(keyset(query, kind, key, after, limit)))
            items = [record.model_validate(row) for row in rows[:limit]]
            return Page[R](items=items, next=next_cursor(kind, rows, [c.key for c in key], limit))

    def sessions_page(self, after: str | None = None, limit: int = 100) -> Page[SessionRecord]:
        """Sessions in the order they were created."""
        key = (SessionRow.created_at, SessionRow.id)
        return self._page(SessionRecord, select(SessionRow), "sessions", key, after, limit)

    def rounds_page(
        self, session_id: str, after: str | None = None, limit: int = 100
    ) -> Page[RoundRecord]:
        """A session's rounds by number (a failed round comes before its retry)."""
        query = select(RoundRow).where(RoundRow.session_id == session_id)
        key = (RoundRow.number, RoundRow.id)
        return self._page(RoundRecord, query, "rounds", key, after, limit)

    def models_page(
        self, session_id: str | None = None, after: str | None = None, limit: int = 100
    ) -> Page[ModelRecord]:
        """Models in the order they were listed, all of them or those one session made."""
        query = select(ModelRow)
        if session_id is not None:
            query = query.where(ModelRow.session_id == session_id)
        key = (ModelRow.created_at, ModelRow.id)
        return self._page(ModelRecord, query, "models", key, after, limit)

    def combiners_page(self, after: str | None = None, limit: int = 100) -> Page[CombinerRecord]:
        query = select(CombinerRow)
        return self._page(CombinerRecord, query, "combiners", (CombinerRow.id,), after, limit)

    def clients_page(self, after: str | None = None, limit: int = 100) -> Page[ClientRecord]:
        query = select(ClientRow)
        return self._page(ClientRecord, query, "clients", (ClientRow.id,), after, limit)

    def tokens_page(self, after: str | None = None, limit: int = 100) -> Page[TokenRecord]:
        """Token records (never tokens) in the order they were issued."""
        key = (TokenRow.issued_at, TokenRow.token_id)
        return self._page(TokenRecord, select(TokenRow), "tokens", key, after, limit)

    def trail_page(
        self, model_id: str, after: str | None = None, limit: int = 100
    ) -> Page[ModelRecord]:
        """The chain from ``model_id`` back to its seed, newest first, ``limit`` at a time."""
        current: str | None = model_id
        if after is not None:
            head, start = decode_cursor("trail", after, [str, str])
            current = str(start)
            if head != model_id:  # a cursor of another model's trail
                raise bad_cursor(f"the trail of {model_id}", after)
        chain: list[ModelRecord] = []
        seen: set[str] = set()
        with self._session() as db:
            while current is not None and current not in seen and len(chain) <= limit:
                seen.add(current)  # a cycle would loop forever
                row = db.get(ModelRow, current)
                if row is None:
                    raise NotFoundError(
                        f"model {current!r} is not in the model trail; "
                        "list models with GET /api/v1/models"
                    )
                chain.append(ModelRecord.model_validate(row))
                current = row.parent_id
        more = len(chain) > limit
        cursor = encode_cursor("trail", (model_id, chain[limit].id)) if more else None
        return Page[ModelRecord](items=chain[:limit], next=cursor)
