"""Server-Sent Events: a session's progress, or every event, as it is recorded.

``GET /sessions/{id}/events/stream`` replays the session's stored events after the one the
client names (``Last-Event-ID``, as a browser's EventSource sends on reconnecting, or
``?after=``), then sends new ones as the store records them (`EventFeed`, no polling), and
closes after the session's end event. ``GET /events/stream`` does the same for every
event and never closes. Each message is

    id: <event id>
    event: <kind>
    data: <EventRecord as one line of JSON>

with a ``: keepalive`` comment every `KEEPALIVE_SECONDS` so proxies keep the connection.
The store is the source of truth: a stream that is dropped (too slow, or the controller
stopping) loses nothing, since the client reconnects and replays from its last id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from stratafl.controller.events import EventFeed, Subscription
from stratafl.controller.rest.errors import errors_of
from stratafl.errors import StrataError
from stratafl.records import SESSION_END_KINDS, EventRecord
from stratafl.status import SessionStatus
from stratafl.store.protocols import EventReads

if TYPE_CHECKING:
    from stratafl.controller.wiring import Controller

__all__ = ["KEEPALIVE_SECONDS", "add_stream_routes", "message"]

KEEPALIVE_SECONDS = 15.0
REPLAY_BATCH = 500
"""Stored events read per query while replaying (a replay never holds them all)."""
END_GRACE_SECONDS = 5.0
"""How long a stream waits for the end event of a session whose status has ended (the
status is written a moment before the event)."""

EventId = Annotated[
    str | None,
    Query(max_length=20, description="replay the events after this event id (an integer)"),
]
LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", max_length=20, description="as `after`; EventSource sends it"),
]

STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: id, event (the kind), data (an EventRecord)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **errors_of(400, 503),
}


def message(event: EventRecord) -> str:
    """One SSE message; the JSON has no newline, so it is one ``data`` line."""
    return f"id: {event.id}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"


def add_stream_routes(router: APIRouter, controller: Controller) -> None:
    """The two stream endpoints, on the sessions router (same prefix, same auth)."""
    store: EventReads = controller.store
    feed = controller.events

    @router.get(
        "/sessions/{session_id}/events/stream",
        response_class=StreamingResponse,
        responses={**STREAM_RESPONSES, **errors_of(404)},
    )
    async def session_stream(
        session_id: str, after: EventId = None, last_event_id: LastEventId = None
    ) -> StreamingResponse:
        """The session's events, live; closes after its end event (session_finished,
        session_stopped, session_cancelled or session_failed)."""
        session = await store.off_loop.read(store.session, session_id)  # unknown: a 404
        return _stream(store, feed, session.id, _event_id(last_event_id or after))

    @router.get("/events/stream", response_class=StreamingResponse, responses=STREAM_RESPONSES)
    async def all_events_stream(
        after: EventId = None, last_event_id: LastEventId = None
    ) -> StreamingResponse:
        """Every event, live; never closes (reconnect with Last-Event-ID if it drops)."""
        return _stream(store, feed, None, _event_id(last_event_id or after))


def _event_id(value: str | None) -> int:
    if value is None:
        return 0
    if not (value.isascii() and value.isdigit()) or int(value) >= 2**63:
        raise StrataError(
            f"{value[:20]!r} is not an event id: pass the `id` of the last event received "
            "(an integer), or leave it out to replay from the first event"
        )
    return int(value)


def _stream(
    store: EventReads, feed: EventFeed, session_id: str | None, after: int
) -> StreamingResponse:
    sub = feed.subscribe(session_id)  # before the replay: nothing falls in between
    return _EventStreamResponse(
        _messages(store, sub, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        on_close=lambda: feed.unsubscribe(sub),
    )


class _EventStreamResponse(StreamingResponse):
    """A streamed answer that runs ``on_close`` however it ends: the stream's end, the
    client hanging up (whichever way the server reports it), or an error."""

    def __init__(
        self, content: AsyncIterator[str], *, on_close: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def _messages(store: EventReads, sub: Subscription, last: int) -> AsyncIterator[str]:
    """Replay from the store after ``last``, then the feed's events, skipping any replayed."""
    session_id = sub.session_id
    while True:
        batch = await store.off_loop.read(store.events_after, last, session_id, REPLAY_BATCH)
        for event in batch:
            last = event.id
            yield message(event)
            if session_id is not None and event.kind in SESSION_END_KINDS:
                return
        if len(batch) < REPLAY_BATCH:
            break
    deadline = await _end_deadline(store, session_id)
    loop = asyncio.get_running_loop()
    while True:
        wait = KEEPALIVE_SECONDS if deadline is None else deadline - loop.time()
        if wait <= 0:
            return
        live = await sub.next(min(wait, KEEPALIVE_SECONDS))
        if sub.dropped:  # fell behind, or the controller stops: the client reconnects
            return
        if live is None:
            yield ": keepalive\n\n"
        elif live.id > last:  # not replayed already
            last = live.id
            yield message(live)
            if session_id is not None and live.kind in SESSION_END_KINDS:
                return


async def _end_deadline(store: EventReads, session_id: str | None) -> float | None:
    """When to stop waiting for the end event of a session that has ended (None: it runs).

    A session ended long ago whose end event was not replayed (recorded before events had
    a session) ends its stream at once."""
    if session_id is None:
        return None
    session = await store.off_loop.read(store.session, session_id)
    if session.status == SessionStatus.RUNNING:
        return None
    now = asyncio.get_running_loop().time()
    if session.finished_at is not None and time.time() - session.finished_at > END_GRACE_SECONDS:
        return now
    return now + END_GRACE_SECONDS
