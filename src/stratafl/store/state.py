"""The state store: combiners, clients, sessions, rounds, the model trail and events.

SQLAlchemy 2 gives one code path for the embedded default (SQLite in the controller's
work folder) and PostgreSQL (``postgresql+psycopg://...``). Liveness is data: combiner
heartbeats and client connects land here, so anyone can see who is alive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from stratafl.errors import NotFoundError


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}

    def to_dict(self) -> dict[str, Any]:
        return {column.key: getattr(self, column.key) for column in self.__table__.columns}


class CombinerRow(Base):
    __tablename__ = "combiners"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(256))
    max_clients: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # online | offline
    num_clients: Mapped[int] = mapped_column(Integer, default=0)
    registered_at: Mapped[float] = mapped_column(Float)
    last_heartbeat: Mapped[float] = mapped_column(Float)


class ClientRow(Base):
    __tablename__ = "clients"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    combiner_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # assigned | connected | disconnected
    last_seen: Mapped[float] = mapped_column(Float)


class SessionRow(Base):
    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # running | finished | failed
    reason: Mapped[str] = mapped_column(Text, default="")
    seed_model_id: Mapped[str] = mapped_column(String(64))
    final_model_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rounds_done: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RoundRow(Base):
    __tablename__ = "rounds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # finished | failed
    reason: Mapped[str] = mapped_column(Text, default="")
    model_in: Mapped[str] = mapped_column(String(64))
    model_out: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[float] = mapped_column(Float)
    duration: Mapped[float] = mapped_column(Float)
    participants: Mapped[list[Any]] = mapped_column(JSON)
    outcomes: Mapped[list[Any]] = mapped_column(JSON)
    validation: Mapped[dict[str, Any]] = mapped_column(JSON)
    traffic: Mapped[dict[str, Any]] = mapped_column(JSON)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)


class ModelRow(Base):
    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    num_parameters: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


def _enable_sqlite_wal(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


class StateStore:
    """Typed reads and writes of the controller's state; no I/O in the constructor."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    def open(self) -> StateStore:
        self._engine = create_engine(self.url)
        if self._engine.dialect.name == "sqlite":
            _enable_sqlite_wal(self._engine)
        Base.metadata.create_all(self._engine)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        return self

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def _session(self) -> Session:
        assert self._sessions is not None, "call StateStore.open() first"
        return self._sessions()

    # -- combiners ----------------------------------------------------------------------

    def register_combiner(self, combiner_id: str, address: str, max_clients: int) -> None:
        now = time.time()
        with self._session() as db, db.begin():
            row = db.get(CombinerRow, combiner_id)
            if row is None:
                db.add(
                    CombinerRow(
                        id=combiner_id,
                        address=address,
                        max_clients=max_clients,
                        status="online",
                        num_clients=0,
                        registered_at=now,
                        last_heartbeat=now,
                    )
                )
            else:
                row.address, row.max_clients, row.status, row.last_heartbeat = (
                    address,
                    max_clients,
                    "online",
                    now,
                )

    def combiner_heartbeat(self, combiner_id: str, client_ids: Sequence[str]) -> None:
        """Mark the combiner and every client it holds as alive now, in a few statements
        however many clients there are (one UPDATE, plus INSERTs for unknown ids)."""
        now = time.time()
        with self._session() as db, db.begin():
            row = db.get(CombinerRow, combiner_id)
            if row is not None:
                row.status, row.last_heartbeat, row.num_clients = "online", now, len(client_ids)
            if not client_ids:
                return
            db.execute(
                update(ClientRow)
                .where(ClientRow.id.in_(client_ids))
                .values(combiner_id=combiner_id, status="connected", last_seen=now)
            )
            known = set(db.scalars(select(ClientRow.id).where(ClientRow.id.in_(client_ids))))
            db.add_all(
                ClientRow(id=client_id, combiner_id=combiner_id, status="connected", last_seen=now)
                for client_id in client_ids
                if client_id not in known
            )

    def set_combiner_status(self, combiner_id: str, status: str) -> None:
        with self._session() as db, db.begin():
            row = db.get(CombinerRow, combiner_id)
            if row is not None:
                row.status = status
            if status == "offline":
                for client in db.scalars(
                    select(ClientRow).where(ClientRow.combiner_id == combiner_id)
                ):
                    client.status = "disconnected"

    def combiners(self) -> list[dict[str, Any]]:
        with self._session() as db:
            return [
                row.to_dict() for row in db.scalars(select(CombinerRow).order_by(CombinerRow.id))
            ]

    # -- clients ------------------------------------------------------------------------

    def set_client(self, client_id: str, combiner_id: str | None, status: str) -> None:
        now = time.time()
        with self._session() as db, db.begin():
            row = db.get(ClientRow, client_id)
            if row is None:
                db.add(
                    ClientRow(id=client_id, combiner_id=combiner_id, status=status, last_seen=now)
                )
            else:
                row.combiner_id, row.status, row.last_seen = combiner_id, status, now

    def clients(self) -> list[dict[str, Any]]:
        with self._session() as db:
            return [row.to_dict() for row in db.scalars(select(ClientRow).order_by(ClientRow.id))]

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
    ) -> None:
        with self._session() as db, db.begin():
            db.add(
                ModelRow(
                    id=model_id,
                    parent_id=parent_id,
                    session_id=session_id,
                    round=round_number,
                    size_bytes=size_bytes,
                    num_parameters=num_parameters,
                    created_at=time.time(),
                )
            )

    def model(self, model_id: str) -> dict[str, Any]:
        with self._session() as db:
            row = db.get(ModelRow, model_id)
            if row is None:
                raise NotFoundError(f"model {model_id!r} is not in the model trail")
            return row.to_dict()

    def models(self, session_id: str | None = None) -> list[dict[str, Any]]:
        query = select(ModelRow).order_by(ModelRow.created_at)
        if session_id is not None:
            query = query.where(ModelRow.session_id == session_id)
        with self._session() as db:
            return [row.to_dict() for row in db.scalars(query)]

    def trail(self, model_id: str) -> list[dict[str, Any]]:
        """The chain of models from ``model_id`` back to its seed, newest first."""
        chain: list[dict[str, Any]] = []
        current: str | None = model_id
        while current is not None:
            row = self.model(current)
            chain.append(row)
            current = row["parent_id"]
        return chain

    # -- sessions and rounds ------------------------------------------------------------

    def create_session(self, session_id: str, config: dict[str, Any], seed_model_id: str) -> None:
        with self._session() as db, db.begin():
            db.add(
                SessionRow(
                    id=session_id,
                    config=config,
                    status="running",
                    reason="",
                    seed_model_id=seed_model_id,
                    final_model_id=seed_model_id,
                    rounds_done=0,
                    created_at=time.time(),
                )
            )

    def update_session(self, session_id: str, **changes: Any) -> None:
        with self._session() as db, db.begin():
            row = db.get(SessionRow, session_id)
            if row is None:
                raise NotFoundError(f"session {session_id!r} does not exist")
            for key, value in changes.items():
                setattr(row, key, value)

    def session(self, session_id: str) -> dict[str, Any]:
        with self._session() as db:
            row = db.get(SessionRow, session_id)
            if row is None:
                raise NotFoundError(
                    f"session {session_id!r} does not exist; list them with GET /api/v1/sessions"
                )
            return row.to_dict()

    def sessions(self) -> list[dict[str, Any]]:
        with self._session() as db:
            return [
                row.to_dict()
                for row in db.scalars(select(SessionRow).order_by(SessionRow.created_at))
            ]

    def fail_interrupted_sessions(self, reason: str) -> list[str]:
        """Mark sessions left 'running' by a crashed controller as failed; returns their ids."""
        with self._session() as db, db.begin():
            rows = list(db.scalars(select(SessionRow).where(SessionRow.status == "running")))
            for row in rows:
                row.status, row.reason, row.finished_at = "failed", reason, time.time()
            return [row.id for row in rows]

    def add_round(self, **fields: Any) -> None:
        with self._session() as db, db.begin():
            db.add(RoundRow(**fields))

    def rounds(self, session_id: str) -> list[dict[str, Any]]:
        query = select(RoundRow).where(RoundRow.session_id == session_id).order_by(RoundRow.number)
        with self._session() as db:
            return [row.to_dict() for row in db.scalars(query)]

    # -- events -------------------------------------------------------------------------

    def add_event(self, kind: str, source: str, message: str, **data: Any) -> None:
        with self._session() as db, db.begin():
            db.add(
                EventRow(
                    time=time.time(),
                    kind=kind,
                    source=source,
                    message=message,
                    data=json.loads(json.dumps(data, default=str)),
                )
            )

    def events(self, limit: int = 200) -> list[dict[str, Any]]:
        query = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
        with self._session() as db:
            return [row.to_dict() for row in db.scalars(query)][::-1]
