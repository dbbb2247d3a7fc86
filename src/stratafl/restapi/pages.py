"""The REST API's lists from Python: one page, every item (following ``next``), or a list.

Each list endpoint answers a `Page` (at most ``limit`` records and the cursor of the next
page). For each, `Listings` has three ways in:

- ``<list>_page(..., after=None, limit=100) -> Page[T]``: one request, one page; pass the
  page's ``next`` as ``after`` for the one after it (None: it was the last);
- ``iter_<list>(...) -> Iterator[T]``: every record, a page at a time, lazily;
- ``<list>(..., limit=None) -> list[T]``: at most ``limit`` records (None: all of them).

`Listings` is part of `ControllerClient` (it inherits these methods); they live here to keep
`stratafl.restapi.client` small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pydantic import TypeAdapter

from stratafl.records import (
    AuditRecord,
    ClientRecord,
    CombinerRecord,
    EventRecord,
    ModelRecord,
    Page,
    RoundRecord,
    TokenRecord,
)
from stratafl.restapi.schema import Session
from stratafl.restapi.wire import segment

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "Listings", "walk"]

T = TypeVar("T")

DEFAULT_PAGE = 100
MAX_PAGE = 1000
"""The largest ``limit`` the controller takes; iterators read pages of this size. Rounds
carry every client's outcome, so the controller also ends a page of rounds before its
outcomes pass 10,000 (`stratafl.store.listing.OUTCOMES_PER_PAGE`): a few MB at most."""

_SESSIONS = TypeAdapter(Page[Session])
_ROUNDS = TypeAdapter(Page[RoundRecord])
_EVENTS = TypeAdapter(Page[EventRecord])
_MODELS = TypeAdapter(Page[ModelRecord])
_CLIENTS = TypeAdapter(Page[ClientRecord])
_COMBINERS = TypeAdapter(Page[CombinerRecord])
_TOKENS = TypeAdapter(Page[TokenRecord])
_AUDIT = TypeAdapter(Page[AuditRecord])


def walk(
    fetch: Callable[[str | None, int], Page[T]],
    at_most: int | None = None,
    page_size: int = MAX_PAGE,
) -> Iterator[T]:
    """Every item of the pages ``fetch(after, limit)`` returns, following ``next``; at most
    ``at_most`` of them (pages are never larger than what is still wanted)."""
    after: str | None = None
    left = at_most
    while left is None or left > 0:
        page = fetch(after, page_size if left is None else min(left, page_size))
        yield from page.items[:left]
        if left is not None:
            left -= len(page.items)
        if page.next is None:
            return
        after = page.next


def _query(after: str | None, limit: int, **filters: str | None) -> dict[str, Any]:
    query: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
    if after is not None:
        query["after"] = after
    return query | {"limit": limit}


class Listings:
    """The list endpoints, mixed into `ControllerClient`."""

    def _call(self, answer: TypeAdapter[T], method: str, path: str, **kwargs: Any) -> T:
        raise NotImplementedError  # ControllerClient's sends the request

    # -- one page -------------------------------------------------------------------------

    def sessions_page(self, after: str | None = None, limit: int = DEFAULT_PAGE) -> Page[Session]:
        """Sessions in the order they were started."""
        return self._call(_SESSIONS, "GET", "/sessions", params=_query(after, limit))

    def rounds_page(
        self, session_id: str, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[RoundRecord]:
        """A session's rounds by number; each is recorded once it ends."""
        path = f"/sessions/{segment(session_id)}/rounds"
        return self._call(_ROUNDS, "GET", path, params=_query(after, limit))

    def events_page(
        self, session_id: str | None = None, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[EventRecord]:
        """Events in the order they happened, all of them or one session's."""
        query = _query(after, limit, session_id=session_id)
        return self._call(_EVENTS, "GET", "/events", params=query)

    def models_page(
        self, session_id: str | None = None, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[ModelRecord]:
        """Models in the order they were stored, all of them or those a session made."""
        query = _query(after, limit, session_id=session_id)
        return self._call(_MODELS, "GET", "/models", params=query)

    def trail_page(
        self, model_id: str, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[ModelRecord]:
        """The model and its ancestors, newest first: the seed model comes last."""
        path = f"/models/{segment(model_id)}/trail"
        return self._call(_MODELS, "GET", path, params=_query(after, limit))

    def clients_page(
        self, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[ClientRecord]:
        """Every client that ever connected, by id, and where it is now."""
        return self._call(_CLIENTS, "GET", "/clients", params=_query(after, limit))

    def combiners_page(
        self, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[CombinerRecord]:
        """Every combiner that ever registered, online or offline, by id."""
        return self._call(_COMBINERS, "GET", "/combiners", params=_query(after, limit))

    def tokens_page(self, after: str | None = None, limit: int = DEFAULT_PAGE) -> Page[TokenRecord]:
        """Every token issued (their records, never the tokens), oldest first."""
        return self._call(_TOKENS, "GET", "/tokens", params=_query(after, limit))

    def audit_page(self, after: str | None = None, limit: int = DEFAULT_PAGE) -> Page[AuditRecord]:
        """Admin actions (tokens, sessions, model uploads), who asked and when, oldest first."""
        return self._call(_AUDIT, "GET", "/audit", params=_query(after, limit))

    # -- every item, lazily ---------------------------------------------------------------

    def iter_sessions(self) -> Iterator[Session]:
        return walk(self.sessions_page)

    def iter_rounds(self, session_id: str) -> Iterator[RoundRecord]:
        return walk(lambda after, limit: self.rounds_page(session_id, after, limit))

    def iter_events(self, session_id: str | None = None) -> Iterator[EventRecord]:
        return walk(lambda after, limit: self.events_page(session_id, after, limit))

    def iter_models(self, session_id: str | None = None) -> Iterator[ModelRecord]:
        return walk(lambda after, limit: self.models_page(session_id, after, limit))

    def iter_trail(self, model_id: str) -> Iterator[ModelRecord]:
        return walk(lambda after, limit: self.trail_page(model_id, after, limit))

    def iter_clients(self) -> Iterator[ClientRecord]:
        return walk(self.clients_page)

    def iter_combiners(self) -> Iterator[CombinerRecord]:
        return walk(self.combiners_page)

    def iter_tokens(self) -> Iterator[TokenRecord]:
        return walk(self.tokens_page)

    def iter_audit(self) -> Iterator[AuditRecord]:
        return walk(self.audit_page)

    # -- lists: at most ``limit`` items (None: all) -------------------------------------

    def sessions(self, limit: int | None = None) -> list[Session]:
        """Sessions, oldest first."""
        return list(walk(self.sessions_page, limit))

    def rounds(self, session_id: str, limit: int | None = None) -> list[RoundRecord]:
        """A session's rounds so far, in order."""
        return list(walk(lambda a, n: self.rounds_page(session_id, a, n), limit))

    def events(self, limit: int | None = None, session_id: str | None = None) -> list[EventRecord]:
        """Events, oldest first (the first ``limit``; `follow` for the newest, live)."""
        return list(walk(lambda a, n: self.events_page(session_id, a, n), limit))

    def models(self, session_id: str | None = None, limit: int | None = None) -> list[ModelRecord]:
        """Stored models, oldest first, or those a session made."""
        return list(walk(lambda a, n: self.models_page(session_id, a, n), limit))

    def trail(self, model_id: str, limit: int | None = None) -> list[ModelRecord]:
        """The model and its ancestors, newest first: the seed model is last."""
        return list(walk(lambda a, n: self.trail_page(model_id, a, n), limit))

    def clients(self, limit: int | None = None) -> list[ClientRecord]:
        return list(walk(self.clients_page, limit))

    def combiners(self, limit: int | None = None) -> list[CombinerRecord]:
        return list(walk(self.combiners_page, limit))

    def tokens(self, limit: int | None = None) -> list[TokenRecord]:
        return list(walk(self.tokens_page, limit))

    def audit(self, limit: int | None = None) -> list[AuditRecord]:
        """Admin actions, oldest first."""
        return list(walk(self.audit_page, limit))
