"""The controller's live feed of events: every event the state store records, handed to
the open ``/events/stream`` connections as it is recorded, without polling the database.

`EventFeed.publish` is the store's listener (`StateStore.listen`): it may run on any
thread (a round's pruning runs in a worker), so it only schedules the hand-over on each
subscriber's event loop, in order. A subscriber holds a bounded queue; one that falls
behind by more than its queue is dropped (`Subscription.dropped`) rather than letting the
controller's memory grow: its stream closes and the client reconnects with
``Last-Event-ID``, reading what it missed from the store. The number of subscribers is
bounded too (`MAX_STREAMS`): past it, `subscribe` refuses with `UnavailableError` (503).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from stratafl.errors import UnavailableError
from stratafl.records import EventRecord

__all__ = ["MAX_STREAMS", "QUEUE_EVENTS", "EventFeed", "Subscription"]

MAX_STREAMS = 32
"""Open event streams at once; each holds a connection and a queue."""
QUEUE_EVENTS = 1000
"""Events a subscriber may fall behind by before it is dropped."""


@dataclass(eq=False)
class Subscription:
    """One stream's view of the feed: the events of ``session_id`` (None: every event)."""

    session_id: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[EventRecord | None]
    dropped: bool = field(default=False)
    """Fell behind by more than its queue (or the feed closed): the stream must end."""

    def offer(self, event: EventRecord | None) -> None:
        """On the subscriber's loop: queue ``event`` (None: end now), or drop the subscriber."""
        if self.dropped:
            return
        if event is not None and not self.queue.full():
            self.queue.put_nowait(event)
            return
        self.dropped = True
        if not self.queue.full():  # a full queue has no reader waiting on it
            self.queue.put_nowait(None)  # wakes the reader waiting in `next`

    async def next(self, timeout: float) -> EventRecord | None:
        """The next event, or None after ``timeout`` seconds without one or once dropped."""
        if self.dropped:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class EventFeed:
    """The open subscriptions, and the events handed to them; constructing it starts nothing."""

    def __init__(self, *, max_streams: int = MAX_STREAMS, queue_events: int = QUEUE_EVENTS) -> None:
        self._max_streams = max_streams
        self._queue_events = queue_events
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self._closed = False

    def subscribe(self, session_id: str | None) -> Subscription:
        """A new subscription on the running loop; `unsubscribe` it when the stream ends."""
        with self._lock:
            if self._closed:
                raise UnavailableError("the controller is shutting down; reconnect once it is back")
            if len(self._subscribers) >= self._max_streams:
                raise UnavailableError(
                    f"{self._max_streams} event streams are open already, the most the "
                    "controller serves; close one, or read GET /api/v1/events pages instead"
                )
            loop = asyncio.get_running_loop()
            sub = Subscription(session_id, loop, asyncio.Queue(self._queue_events))
            self._subscribers.add(sub)
            return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def open_streams(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, event: EventRecord) -> None:
        """Hand ``event`` to every subscriber it concerns; callable from any thread."""
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            if sub.session_id is None or sub.session_id == event.session_id:
                self._schedule(sub, event)

    def close(self) -> None:
        """End every stream (the controller is stopping) and refuse new ones."""
        with self._lock:
            self._closed = True
            subscribers = list(self._subscribers)
        for sub in subscribers:
            self._schedule(sub, None)

    def _schedule(self, sub: Subscription, event: EventRecord | None) -> None:
        try:
            sub.loop.call_soon_threadsafe(sub.offer, event)
        except RuntimeError:  # its loop is closed: the stream is gone
            self.unsubscribe(sub)
