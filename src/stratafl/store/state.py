"""The state store: combiners, clients, sessions, rounds, the model trail and events.

SQLAlchemy 2 gives one code path for the embedded default (SQLite in the controller's
work folder) and PostgreSQL (``postgresql+psycopg://...``). Liveness is data: combiner
heartbeats and client connects land here, so anyone can see who is alive.

Methods take and return the records of `stratafl.records` (statuses as the enums of
`stratafl.status`), never ORM rows or loose dicts: a row leaves its database session only
as a checked record, so callers cannot touch a detached row or misspell a key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from stratafl.records import (
    ClientRecord,
    CombinerRecord,
    ModelRecord,
    PromiseRecord,
    Record,
    RoundRecord,
    SessionRecord,
)
from stratafl.status import ClientStatus, CombinerStatus, SessionStatus
from stratafl.store.audit import AuditTable
from stratafl.store.events import EventListener, EventTable
from stratafl.store.ids import row_by_id
from stratafl.store.listing import ListingTable
from stratafl.store.migrations import migrated_engine
from stratafl.store.offloop import OffLoop
from stratafl.store.progress import ProgressTable
from stratafl.store.tables import (
    ClientRow,
    CombinerRow,
    ModelRow,
    RoundRow,
    SessionRow,
)
from stratafl.store.tokens import TokenTable

__all__ = ["StateStore"]

R = TypeVar("R", bound=Record)


class StateStore(TokenTable, AuditTable, ProgressTable, ListingTable, EventTable):
    """Typed reads and writes of the controller's state; no I/O in the constructor.

    Every method blocks on the database: code on an event loop calls them through
    `off_loop` (``await store.off_loop.read(store.clients_page, ...)``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._listeners: list[EventListener] = []
        self._event_lock = threading.Lock()
        self.off_loop = OffLoop(name="state-store")

    def open(self) -> StateStore:
        """Connect, and migrate the database to this version's schema first."""
        self._engine, _ = migrated_engine(self.url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        return self

    def close(self) -> None:
        self.off_loop.close()  # the calls in flight finish on the engine first
        if self._engine is not None:
            self._engine.dispose()

    def _session(self) -> Session:
        if self._sessions is None:
            raise RuntimeError("the state store is not open; call StateStore.open() first")
        return self._sessions()

    def _all(self, record: type[R], query: Select[Any]) -> list[R]:
        """Every row ``query`` selects, checked into ``record`` before the session closes."""
        with self._session() as db:
            return [record.model_validate(row) for row in db.scalars(query)]

    # -- combiners and clients ----------------------------------------------------------

    def register_combiner(self, combiner_id: str, address: str, max_clients: int) -> None:
        now = time.time()
        with self._session() as db, db.begin():
            row = db.get(CombinerRow, combiner_id)
            if row is None:
                row = CombinerRow(id=combiner_id, num_clients=0, registered_at=now)
                db.add(row)
            row.address, row.max_clients = address, max_clients
            row.status, row.last_heartbeat = CombinerStatus.ONLINE.value, now

    def combiner_heartbeat(
        self, combiner_id: str, client_ids: Sequence[str], *, num_clients: int | None = None
    ) -> None:
        """Mark the combiner alive now, holding ``num_clients`` (default: as many as
        ``client_ids``), and the clients ``client_ids`` as connected to it and seen now, in a
        few statements however many clients there are (one UPDATE, plus INSERTs for unknown
        ids)."""
        now = time.time()
        connected = ClientStatus.CONNECTED.value
        with self._session() as db, db.begin():
            row = db.get(CombinerRow, combiner_id)
            if row is not None:
                row.status, row.last_heartbeat = CombinerStatus.ONLINE.value, now
                row.num_clients = len(client_ids) if num_clients is None else num_clients
            if not client_ids:
                return
            db.execute(
                update(ClientRow)
                .where(ClientRow.id.in_(client_ids))
                .values(combiner_id=combiner_id, status=connected, last_seen=now)
            )
            known = set(db.scalars(select(ClientRow.id).where(ClientRow.id.in_(client_ids))))
            db.add_all(
                ClientRow(id=client_id, combiner_id=combiner_id, status=connected, last_seen=now)
                for client_id in client_ids
                if client_id not in known
            )

    def set_combiner_status(self, combiner_id: str, status: CombinerStatus) -> None:
        """Set a combiner's status; an offline combiner's clients are disconnected with it."""
        with self._session() as db, db.begin():
            row = db.get(CombinerRow, combiner_id)
            if row is not None:
                row.status = status.value
            if status is CombinerStatus.OFFLINE:
                db.execute(
                    update(ClientRow)
                    .where(ClientRow.combiner_id == combiner_id)
                    .values(status=ClientStatus.DISCONNECTED.value)
                )

    def combiners(self) -> list[CombinerRecord]:
        return self._all(CombinerRecord, select(CombinerRow).order_by(CombinerRow.id))

    def set_client(self, client_id: str, combiner_id: str | None, status: ClientStatus) -> None:
        with self._session() as db, db.begin():
            row = db.get(ClientRow, client_id)
            if row is None:
                row = ClientRow(id=client_id)
                db.add(row)
            row.combiner_id, row.status, row.last_seen = combiner_id, status.value, time.time()

    def clients(self) -> list[ClientRecord]:
        return self._all(ClientRecord, select(ClientRow).order_by(ClientRow.id))

    # -- models -------------------------------------------------------------------------

    def add_model(
        self,
        model_id: str,
        *,
        parent_id: str | None,
        session_id: str | None,
        round_number: int | None,
        size_bytes: int,
        num_parameters: int,
    ) -> ModelRecord:
        """List a model whose file is already in the model store; returns its record."""
        row = ModelRow(
            id=model_id,
            parent_id=parent_id,
            session_id=session_id,
            round=round_number,
            size_bytes=size_bytes,
            num_parameters=num_parameters,
            created_at=time.time(),
        )
        with self._session() as db, db.begin():
            db.add(row)
        return ModelRecord.model_validate(row)

    def model(self, model_id: str) -> ModelRecord:
        with self._session() as db:
            return ModelRecord.model_validate(self._model_row(db, model_id))

    def models(self, session_id: str | None = None) -> list[ModelRecord]:
        """Models oldest first, all of them or those one session made."""
        query = select(ModelRow).order_by(ModelRow.created_at, ModelRow.id)
        if session_id is not None:
            query = query.where(ModelRow.session_id == session_id)
        return self._all(ModelRecord, query)

    def newest_model(self) -> ModelRecord | None:
        """The model listed last, or None in an empty store (a session's default seed)."""
        query = select(ModelRow).order_by(ModelRow.created_at.desc(), ModelRow.id.desc())
        newest = self._all(ModelRecord, query.limit(1))
        return newest[0] if newest else None

    def trail(self, model_id: str) -> list[ModelRecord]:
        """The chain of models from ``model_id`` back to its seed, newest first."""
        chain: list[ModelRecord] = []
        seen: set[str] = set()
        current: str | None = model_id
        with self._session() as db:
            while current is not None and current not in seen:  # a cycle would loop forever
                seen.add(current)
                record = ModelRecord.model_validate(self._model_row(db, current))
                chain.append(record)
                current = record.parent_id
        return chain

    @staticmethod
    def _model_row(db: Session, model_id: str) -> ModelRow:
        """The model ``model_id`` names: its id or a unique prefix (`store.ids`)."""
        return row_by_id(
            db,
            ModelRow,
            ModelRow.id,
            model_id,
            what="model",
            missing=f"model {model_id!r} is not in the model trail; list models with "
            "`strata model list` (GET /api/v1/models)",
        )

    # -- sessions and rounds ------------------------------------------------------------

    def create_session(
        self, session_id: str, config: dict[str, Any], seed_model_id: str
    ) -> SessionRecord:
        row = SessionRow(
            id=session_id,
            config=config,
            status=SessionStatus.RUNNING.value,
            reason="",
            seed_model_id=seed_model_id,
            final_model_id=seed_model_id,
            rounds_done=0,
            created_at=time.time(),
            finished_at=None,
        )
        with self._session() as db, db.begin():
            db.add(row)
        return SessionRecord.model_validate(row)

    def update_session(
        self,
        session_id: str,
        *,
        status: SessionStatus | None = None,
        reason: str | None = None,
        rounds_done: int | None = None,
        final_model_id: str | None = None,
        finished_at: float | None = None,
    ) -> None:
        """Change the fields given (not None); the others keep their stored values."""
        with self._session() as db, db.begin():
            row = self._session_row(db, session_id)
            if status is not None:
                row.status = status.value
            if reason is not None:
                row.reason = reason
            if rounds_done is not None:
                row.rounds_done = rounds_done
            if final_model_id is not None:
                row.final_model_id = final_model_id
            if finished_at is not None:
                row.finished_at = finished_at

    def session(self, session_id: str) -> SessionRecord:
        with self._session() as db:
            return SessionRecord.model_validate(self._session_row(db, session_id))

    def set_promise(self, session_id: str, promise: PromiseRecord) -> SessionRecord:
        """Store the promise check of a session (replacing any stored before)."""
        with self._session() as db, db.begin():
            row = self._session_row(db, session_id)
            row.promise = promise.model_dump(mode="json")
        return SessionRecord.model_validate(row)

    def sessions(self) -> list[SessionRecord]:
        return self._all(SessionRecord, select(SessionRow).order_by(SessionRow.created_at))

    @staticmethod
    def _session_row(db: Session, session_id: str) -> SessionRow:
        """The session ``session_id`` names: its id or a unique prefix (`store.ids`)."""
        return row_by_id(
            db,
            SessionRow,
            SessionRow.id,
            session_id,
            what="session",
            missing=f"session {session_id!r} does not exist; list them with "
            "`strata session list` (GET /api/v1/sessions)",
        )

    def add_round(self, record: RoundRecord) -> None:
        """Record one round; its outcomes, validation, traffic and timings become JSON."""
        with self._session() as db, db.begin():
            db.add(RoundRow(**record.model_dump(mode="json")))

    def rounds(self, session_id: str) -> list[RoundRecord]:
        """A session's rounds in order (none for an unknown session)."""
        query = select(RoundRow).where(RoundRow.session_id == session_id)
        return self._all(RoundRecord, query.order_by(RoundRow.number, RoundRow.id))
