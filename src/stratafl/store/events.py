"""The federation's events: recorded in the state store, and handed to listeners as they are.

An event is stored first, then given to every listener (the controller's live feed, which
serves ``/events/stream``): a listener sees only events that are stored, in the order of
their ids, even when events are added from several threads (one lock holds the insert and
the hand-over together). A reader who missed some reads them back by id; so a listener may
drop events (a slow subscriber is disconnected) without losing any.

These methods are part of `StateStore` (it inherits them from `EventTable`); they live here
to keep `stratafl.store.state` small.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stratafl.records import EventRecord, Page
from stratafl.store.pages import keyset, next_cursor
from stratafl.store.tables import EventRow

__all__ = ["EventListener", "EventTable"]

EventListener = Callable[[EventRecord], None]
"""Called with each event once it is stored, in id order; it must not block (it runs
while events are added)."""


class EventTable:
    """Events, stored and handed to listeners, mixed into `StateStore`."""

    _listeners: list[EventListener]
    _event_lock: threading.Lock

    def _session(self) -> Session:  # StateStore's own opens a session on its engine
        raise NotImplementedError

    def listen(self, listener: EventListener) -> None:
        """Hand every event added from now on to ``listener``."""
        self._listeners.append(listener)

    def add_event(
        self, kind: str, source: str, message: str, *, session_id: str | None = None, **data: Any
    ) -> EventRecord:
        """Record an event (of ``session_id``, if it belongs to one) and hand it to the
        listeners; ``data`` is kept as JSON (values it cannot encode become strings)."""
        encoded = json.loads(json.dumps(data, default=str))
        with self._event_lock:
            row = EventRow(
                time=time.time(),
                kind=kind,
                source=source,
                message=message,
                data=encoded,
                session_id=session_id,
            )
            with self._session() as db, db.begin():
                db.add(row)
            record = EventRecord.model_validate(row)
            for listener in list(self._listeners):
                listener(record)
        return record

    def events(self, limit: int = 200) -> list[EventRecord]:
        """The newest ``limit`` events, oldest first (the order they happened in)."""
        query = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
        with self._session() as db:
            return [EventRecord.model_validate(row) for row in db.scalars(query)][::-1]

    def events_page(
        self, session_id: str | None = None, after: str | None = None, limit: int = 100
    ) -> Page[EventRecord]:
        """Events by id (the order they happened in), all of them or one session's."""
        query = select(EventRow)
        if session_id is not None:
            query = query.where(EventRow.session_id == session_id)
        with self._session() as db:
            rows = list(db.scalars(keyset(query, "events", (EventRow.id,), after, limit)))
            items = [EventRecord.model_validate(row) for row in rows[:limit]]
        return Page[EventRecord](items=items, next=next_cursor("events", rows, ["id"], limit))

    def events_after(
        self, event_id: int, session_id: str | None = None, limit: int = 100
    ) -> list[EventRecord]:
        """Up to ``limit`` events with ids past ``event_id``, by id (what a stream replays)."""
        query = select(EventRow).where(EventRow.id > event_id)
        if session_id is not None:
            query = query.where(EventRow.session_id == session_id)
        with self._session() as db:
            rows = db.scalars(query.order_by(EventRow.id).limit(limit))
            return [EventRecord.model_validate(row) for row in rows]
