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

from sqlalchemy import Select, func, select
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

__all__ = ["OUTCOMES_PER_PAGE", "ListingTable"]

OUTCOMES_PER_PAGE = 10_000
"""How many client outcomes a page of rounds carries at most (unless one round has more)."""

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
        self,
        session_id: str,
        after: str | None = None,
        limit: int = 100,
        max_outcomes: int = OUTCOMES_PER_PAGE,
    ) -> Page[RoundRecord]:
        """A session's rounds by number (a failed round comes before its retry).

        Each round carries every participant's outcome, so a page also stops before its
        outcomes pass ``max_outcomes`` (a round that alone has more is a page of its own):
        with 10,000 clients a round, a page is one round (about 2 MB), not 100. The sizes
        are counted in the database first, so a round past the budget is never loaded.
        """
        sizes = select(RoundRow.number, RoundRow.id, func.json_array_length(RoundRow.outcomes))
        sizes = sizes.where(RoundRow.session_id == session_id)
        key = (RoundRow.number, RoundRow.id)
        with self._session() as db:
            chosen, cursor = _within_budget(
                list(db.execute(keyset(sizes, "rounds", key, after, limit))), limit, max_outcomes
            )
            query = select(RoundRow).where(RoundRow.id.in_(chosen)).order_by(*key)
            items = [RoundRecord.model_validate(row) for row in db.scalars(query)]
        return Page[RoundRecord](items=items, next=cursor)

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


def _within_budget(
    sizes: Sequence[Any], limit: int, max_outcomes: int
) -> tuple[list[int], str | None]:
    """The ids of the first rounds of ``sizes`` (rows of number, id, outcome count) that
    fit ``limit`` and ``max_outcomes`` (at least one), and the cursor after them."""
    chosen: list[int] = []
    total, last = 0, (0, 0)
    for number, round_id, count in sizes:
        if len(chosen) == limit or (chosen and total + (count or 0) > max_outcomes):
            return chosen, encode_cursor("rounds", last)
        chosen.append(round_id)
        total, last = total + (count or 0), (number, round_id)
    return chosen, None
