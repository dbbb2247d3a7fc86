"""The state store's migrations, on SQLite and on the real PostgreSQL: from empty, of a
database a controller made before migrations (with its rows), twice, back and forth, and
the migrated schema checked against the ORM rows with Alembic's own comparison."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from stratafl.cli.main import app
from stratafl.errors import ConfigError
from stratafl.store.migrations import alembic_config, differences, migrated_engine
from stratafl.store.migrations.versions.v0001_initial_schema import schema as initial_schema
from stratafl.store.state import StateStore
from stratafl.store.tables import Base

HEAD = "0005"
OURS = {"combiners", "clients", "sessions", "rounds", "models", "events", "tokens", "audit"}

LEGACY_DDL = """
CREATE TABLE clients ( id VARCHAR(128) NOT NULL, combiner_id VARCHAR(64), status VARCHAR(16) NOT NULL, last_seen FLOAT NOT NULL, PRIMARY KEY (id) );
CREATE TABLE combiners ( id VARCHAR(64) NOT NULL, address VARCHAR(256) NOT NULL, max_clients INTEGER NOT NULL, status VARCHAR(16) NOT NULL, num_clients INTEGER NOT NULL, registered_at FLOAT NOT NULL, last_heartbeat FLOAT NOT NULL, PRIMARY KEY (id) );
CREATE TABLE events ( id {serial} NOT NULL, time FLOAT NOT NULL, kind VARCHAR(64) NOT NULL, source VARCHAR(128) NOT NULL, message TEXT NOT NULL, data JSON NOT NULL, PRIMARY KEY (id) );
CREATE TABLE models ( id VARCHAR(64) NOT NULL, parent_id VARCHAR(64), session_id VARCHAR(64), round INTEGER, size_bytes BIGINT NOT NULL, num_parameters BIGINT NOT NULL, created_at FLOAT NOT NULL, PRIMARY KEY (id) );
CREATE INDEX ix_models_session_id ON models (session_id);
CREATE TABLE rounds ( id {serial} NOT NULL, session_id VARCHAR(64) NOT NULL, number INTEGER NOT NULL, status VARCHAR(16) NOT NULL, reason TEXT NOT NULL, model_in VARCHAR(64) NOT NULL, model_out VARCHAR(64), started_at FLOAT NOT NULL, duration FLOAT NOT NULL, participants JSON NOT NULL, outcomes JSON NOT NULL, validation JSON NOT NULL, traffic JSON NOT NULL, timings JSON NOT NULL, PRIMARY KEY (id) );
CREATE INDEX ix_rounds_session_id ON rounds (session_id);
CREATE TABLE sessions ( id VARCHAR(64) NOT NULL, config JSON NOT NULL, status VARCHAR(16) NOT NULL, reason TEXT NOT NULL, seed_model_id VARCHAR(64) NOT NULL, final_model_id VARCHAR(64), rounds_done INTEGER NOT NULL, created_at FLOAT NOT NULL, finished_at FLOAT, PRIMARY KEY (id) );
CREATE TABLE tokens ( token_id VARCHAR(64) NOT NULL, name VARCHAR(256) NOT NULL, subject VARCHAR(256) NOT NULL, role VARCHAR(16) NOT NULL, issued_at FLOAT NOT NULL, expires_at FLOAT NOT NULL, max_examples BIGINT, revoked_at FLOAT, PRIMARY KEY (token_id) );
CREATE INDEX ix_tokens_subject ON tokens (subject);
"""  # noqa: E501 - what `Base.metadata.create_all` emitted before migrations, verbatim

ROUND_JSON = json.dumps({"clients_up": 1, "clients_down": 2, "combiners_up": 3})
LEGACY_ROWS = f"""
INSERT INTO combiners VALUES ('combiner-0', '127.0.0.1:7000', 100, 'online', 2, 1.0, 2.0);
INSERT INTO clients VALUES ('client-0', 'combiner-0', 'connected', 2.0);
INSERT INTO models VALUES ('seed', NULL, NULL, NULL, 100, 25, 1.0);
INSERT INTO models VALUES ('m1', 'seed', 's1', 1, 100, 25, 2.0);
INSERT INTO sessions VALUES ('s1', '{{"rounds": 1}}', 'finished', '', 'seed', 'm1', 1, 1.5, 3.0);
INSERT INTO rounds (session_id, number, status, reason, model_in, model_out, started_at, duration,
  participants, outcomes, validation, traffic, timings)
  VALUES ('s1', 1, 'finished', '', 'seed', 'm1', 2.0, 0.5, '["client-0"]', '[]', '{{}}',
  '{ROUND_JSON}', '{{}}');
INSERT INTO events (time, kind, source, message, data)
  VALUES (2.5, 'round', 'controller', 'round 1 finished', '{{}}');
INSERT INTO tokens VALUES ('t1', 'hospital-0', 'client-0', 'client', 1.0, 9e9, 500, NULL);
"""


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def _run(engine: Engine, script: str) -> None:
    serial = "SERIAL" if engine.dialect.name == "postgresql" else "INTEGER"
    with engine.begin() as db:
        for statement in script.replace("{serial}", serial).split(";"):
            if statement.strip():
                db.execute(text(statement))


def _make_legacy(engine: Engine, *, rows: bool = True) -> None:
    """A database as a controller made it before migrations, with a row in every table."""
    _run(engine, LEGACY_DDL)
    if rows:
        _run(engine, LEGACY_ROWS)


def _revision(engine: Engine) -> str:
    with engine.connect() as db:
        return str(db.scalar(text("SELECT version_num FROM alembic_version")))


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _same_as_the_rows(engine: Engine) -> None:
    with engine.connect() as db:
        assert differences(db, Base.metadata) == []


def test_an_empty_database_gets_the_schema_of_the_orm_rows(
    database_url: str, engine: Engine
) -> None:
    migrated, done = migrated_engine(database_url)
    migrated.dispose()
    assert (done.before, done.after, done.adopted) == (None, HEAD, False)
    assert _tables(engine) == OURS | {"alembic_version"}
    assert _revision(engine) == HEAD
    _same_as_the_rows(engine)


def test_upgrading_twice_changes_nothing(database_url: str, engine: Engine) -> None:
    migrated_engine(database_url)[0].dispose()
    migrated, again = migrated_engine(database_url)
    migrated.dispose()
    assert (again.before, again.after, again.adopted) == (HEAD, HEAD, False)
    assert "nothing to do" in again.describe()
    _same_as_the_rows(engine)


def test_a_database_made_before_migrations_is_adopted_with_its_rows(
    database_url: str, engine: Engine
) -> None:
    _make_legacy(engine)
    with engine.connect() as db:  # the legacy DDL is what revision 0001 describes
        assert differences(db, initial_schema()) == []
    store = StateStore(database_url).open()
    try:
        assert _revision(engine) == HEAD
        _same_as_the_rows(engine)
        assert [m.id for m in store.trail("m1")] == ["m1", "seed"]
        assert store.model("m1").pruned_at is None  # the column revision 0002 added
        session = store.session("s1")
        assert (session.status, session.rounds_done) == ("finished", 1)
        assert session.config == {"rounds": 1}
        assert [r.traffic.combiners_up for r in store.rounds("s1")] == [3]
        assert [c.address for c in store.combiners()] == ["127.0.0.1:7000"]
        assert [c.combiner_id for c in store.clients()] == ["combiner-0"]
        assert [(t.subject, t.max_examples) for t in store.tokens()] == [("client-0", 500)]
        store.add_event("restart", "controller", "after the upgrade")
        assert [e.message for e in store.events()] == ["round 1 finished", "after the upgrade"]
    finally:
        store.close()


def test_a_database_whose_tables_differ_is_refused_and_left_as_it_is(
    database_url: str, engine: Engine
) -> None:
    _make_legacy(engine, rows=False)
    _run(engine, "DROP INDEX ix_tokens_subject; ALTER TABLE models DROP COLUMN num_parameters")
    with pytest.raises(ConfigError, match="add_column models.num_parameters; add_index ix_tok"):
        StateStore(database_url).open()
    assert "alembic_version" not in _tables(engine)
    assert "num_parameters" not in {c["name"] for c in inspect(engine).get_columns("models")}


def test_a_database_a_newer_version_migrated_is_refused(database_url: str, engine: Engine) -> None:
    migrated_engine(database_url)[0].dispose()
    _run(engine, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(ConfigError, match="revision '9999'.*newer version"):
        StateStore(database_url).open()


def test_other_applications_tables_are_left_alone(database_url: str, engine: Engine) -> None:
    _run(engine, "CREATE TABLE billing ( id INTEGER NOT NULL, PRIMARY KEY (id) )")
    migrated_engine(database_url)[0].dispose()
    assert _tables(engine) == OURS | {"alembic_version", "billing"}
    _same_as_the_rows(engine)


def test_every_revision_goes_down_and_up_again(database_url: str, engine: Engine) -> None:
    migrated_engine(database_url)[0].dispose()
    with engine.begin() as db:
        command.downgrade(alembic_config(connection=db), "base")
    assert _tables(engine) == {"alembic_version"}
    migrated, done = migrated_engine(database_url)
    migrated.dispose()
    assert (done.before, done.after) == (None, HEAD)
    _same_as_the_rows(engine)


def test_strata_db_upgrade_adopts_then_does_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["db", "upgrade", "--workdir", str(tmp_path)])
    assert isinstance(missing.exception, ConfigError)
    assert "no controller database" in str(missing.exception)

    legacy = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    _make_legacy(legacy)
    legacy.dispose()
    first = runner.invoke(app, ["db", "upgrade", "--workdir", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert "adopted a database made before migrations" in " ".join(first.output.split())
    url = f"sqlite:///{tmp_path / 'state.db'}"
    second = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert second.exit_code == 0, second.output
    assert f"already at revision {HEAD}" in " ".join(second.output.split())
