"""What each part of the controller needs of the state store, and nothing more.

`StateStore` has some forty methods; a part typed against one of these Protocols can call
only the few it needs, so a reader sees at once what discovery writes or what a REST
router reads, and a test can hand it a small fake. Each carries the store's `OffLoop`:
the parts that run on the event loop call the methods through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from stratafl.records import (
    ClientRecord,
    CombinerRecord,
    EventRecord,
    ModelRecord,
    Page,
    PromiseRecord,
    RoundRecord,
    SessionRecord,
)
from stratafl.status import ClientStatus, CombinerStatus
from stratafl.store.offloop import OffLoop

__all__ = [
    "DiscoveryRecords",
    "EventReads",
    "FederationReads",
    "ModelReads",
    "SessionReads",
]


class _OffLoop(Protocol):
    @property
    def off_loop(self) -> OffLoop: ...


class DiscoveryRecords(_OffLoop, Protocol):
    """What discovery records: combiners and their clients as they come and go."""

    def register_combiner(self, combiner_id: str, address: str, max_clients: int) -> None: ...

    def combiner_heartbeat(
        self, combiner_id: str, client_ids: Sequence[str], *, num_clients: int | None = None
    ) -> None: ...

    def set_combiner_status(self, combiner_id: str, status: CombinerStatus) -> None: ...

    def set_client(self, client_id: str, combiner_id: str | None, status: ClientStatus) -> None: ...

    def add_event(
        self, kind: str, source: str, message: str, *, session_id: str | None = None, **data: Any
    ) -> EventRecord: ...

    def combiners(self) -> list[CombinerRecord]: ...

    def clients(self) -> list[ClientRecord]: ...


class FederationReads(_OffLoop, Protocol):
    """What the REST API lists of the federation's members."""

    def combiners_page(
        self, after: str | None = None, limit: int = 100
    ) -> Page[CombinerRecord]: ...

    def clients_page(self, after: str | None = None, limit: int = 100) -> Page[ClientRecord]: ...


class ModelReads(_OffLoop, Protocol):
    """What the REST API reads of the model trail."""

    def model(self, model_id: str) -> ModelRecord: ...

    def models_page(
        self, session_id: str | None = None, after: str | None = None, limit: int = 100
    ) -> Page[ModelRecord]: ...

    def trail_page(
        self, model_id: str, after: str | None = None, limit: int = 100
    ) -> Page[ModelRecord]: ...


class EventReads(_OffLoop, Protocol):
    """What an event stream reads: the session it follows, and the events it replays."""

    def session(self, session_id: str) -> SessionRecord: ...

    def events_after(
        self, event_id: int, session_id: str | None = None, limit: int = 100
    ) -> list[EventRecord]: ...


class SessionReads(EventReads, Protocol):
    """What the REST API reads and writes of sessions: pages, rounds, events, promises."""

    def sessions_page(self, after: str | None = None, limit: int = 100) -> Page[SessionRecord]: ...

    def rounds_page(
        self, session_id: str, after: str | None = None, limit: int = 100, max_outcomes: int = ...
    ) -> Page[RoundRecord]: ...

    def events_page(
        self, session_id: str | None = None, after: str | None = None, limit: int = 100
    ) -> Page[EventRecord]: ...

    def set_promise(self, session_id: str, promise: PromiseRecord) -> SessionRecord: ...
