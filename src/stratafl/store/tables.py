"""The state store's tables, as SQLAlchemy ORM rows.

Kept apart from `stratafl.store.state` so the schema reads in one place. Table and column
names are the on-disk contract: a database written by an older controller must still
open, so change nothing here without a revision in `stratafl.store.migrations` (a test
compares the migrated schema with these rows). Statuses are plain strings in the
database (readable with any SQL client); `stratafl.status` types them on the way out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Integer, String, Text, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from stratafl.errors import ConfigError


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class CombinerRow(Base):
    __tablename__ = "combiners"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(256))
    max_clients: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # CombinerStatus
    num_clients: Mapped[int] = mapped_column(Integer, default=0)
    registered_at: Mapped[float] = mapped_column(Float)
    last_heartbeat: Mapped[float] = mapped_column(Float)


class ClientRow(Base):
    __tablename__ = "clients"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    combiner_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # ClientStatus
    last_seen: Mapped[float] = mapped_column(Float)


class SessionRow(Base):
    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # SessionStatus
    reason: Mapped[str] = mapped_column(Text, default="")
    seed_model_id: Mapped[str] = mapped_column(String(64))
    final_model_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rounds_done: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    promise: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # PromiseRecord
    best_model_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    best_score: Mapped[float | None] = mapped_column(Float, nullable=True)


class RoundRow(Base):
    """One finished or failed round; its nested parts are JSON columns (see RoundRecord)."""

    __tablename__ = "rounds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # RoundStatus
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
    pruned_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # file deleted


class EventRow(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class TokenRow(Base):
    """A token the controller issued (its claims, never the token); revoked_at once revoked."""

    __tablename__ = "tokens"
    token_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    subject: Mapped[str] = mapped_column(String(256), index=True)
    role: Mapped[str] = mapped_column(String(16))  # stratafl.security.Role
    issued_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    max_examples: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AuditRow(Base):
    """An admin action (see `stratafl.records.AuditRecord`); rows are only ever added."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(256), index=True)
    action: Mapped[str] = mapped_column(String(32))  # stratafl.records.AuditAction
    target: Mapped[str] = mapped_column(String(256))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


def sqlite_url(workdir: Path) -> str:
    """The controller's default database: SQLite in its work folder."""
    return f"sqlite:///{workdir / 'state.db'}"


def open_engine(url: str) -> Engine:
    """An engine on ``url``; it makes no table (`stratafl.store.migrations.upgrade` does).

    SQLite runs in WAL mode so the REST API can read while a round writes.
    """
    try:
        engine = create_engine(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"{url!r} is not a database URL: pass e.g. sqlite:///state.db or "
            "postgresql+psycopg://user@host:5432/db"
        ) from exc
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the database URL needs the driver {exc.name!r}, which is not installed: "
            "pip install 'stratafl[postgres]' for PostgreSQL"
        ) from exc
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine
