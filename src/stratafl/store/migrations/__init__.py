"""Migrations of the state store (Alembic): every way of opening it gets the current schema.

`upgrade` runs when `StateStore.open` opens a database (so at every controller start) and
in `strata db upgrade`. A database only moves forward, through the revisions in
``versions/``. Three kinds of database arrive here:

- an empty one: every revision runs; the first makes the tables;
- one a controller made before migrations existed (`create_all`, no ``alembic_version``
  table): its tables are compared with those of the first revision and, if they are the
  same, it is adopted (stamped at that revision, its rows untouched) and upgraded from
  there; if not, nothing is changed and the error names what differs;
- one migrated before: the revisions after its own run, none when it is current.

The scripts ship inside the package (no ``alembic.ini``), so an installed wheel migrates
on its own. How to write a new revision: docs/deployment.md, "Upgrades".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import IncludeNameFn, NameFilterParentNames, NameFilterType
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Index, MetaData, Table, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from stratafl.errors import ConfigError, UnavailableError
from stratafl.store.migrations.versions import v0001_initial_schema as first
from stratafl.store.tables import open_engine

__all__ = [
    "INITIAL",
    "Upgrade",
    "alembic_config",
    "differences",
    "migrated_engine",
    "only_tables_of",
    "upgrade",
]

log = logging.getLogger("stratafl.store")

SCRIPTS = Path(__file__).parent
INITIAL = first.revision
"""The first revision: the schema `create_all` made before migrations existed."""


@dataclass(frozen=True)
class Upgrade:
    """What `upgrade` did to one database."""

    before: str | None
    """The revision it was at (None: empty, or made before migrations)."""
    after: str | None
    adopted: bool
    """It was made before migrations and was stamped at `INITIAL` before upgrading."""

    def describe(self) -> str:
        if self.adopted:
            return f"adopted a database made before migrations, now at revision {self.after}"
        if self.before == self.after:
            return f"already at revision {self.after}: nothing to do"
        return f"migrated from revision {self.before or '(empty)'} to {self.after}"


def alembic_config(*, connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration of these scripts: run on ``connection``, or on ``url``
    (for the Alembic commands a developer runs, such as ``command.revision``)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")  # names mypy can import
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def only_tables_of(metadata: MetaData) -> IncludeNameFn:
    """An Alembic ``include_name`` hook that sees only ``metadata``'s tables, so a database
    shared with other applications never has their tables counted as differences."""

    def include(name: str | None, type_: NameFilterType, _: NameFilterParentNames) -> bool:
        return type_ != "table" or name in metadata.tables

    return include


def differences(connection: Connection, metadata: MetaData) -> list[Any]:
    """How the database's tables differ from ``metadata``'s (Alembic's autogenerate diff:
    empty when they are the same), other applications' tables left out."""
    opts = {"include_name": only_tables_of(metadata), "compare_type": True}
    return list(compare_metadata(MigrationContext.configure(connection, opts=opts), metadata))


def migrated_engine(url: str) -> tuple[Engine, Upgrade]:
    """An engine on ``url`` whose database is at the newest revision, and what that took;
    nothing is left open when the migration fails."""
    engine = open_engine(url)
    try:
        return engine, upgrade(engine)
    except BaseException:
        engine.dispose()
        raise


def upgrade(engine: Engine) -> Upgrade:
    """Bring the database to the newest revision, adopting one made before migrations."""
    where = engine.url.render_as_string(hide_password=True)
    try:
        connection = engine.connect()
    except OperationalError as exc:
        raise UnavailableError(
            f"cannot reach the database at {where}: {exc.orig}; start it, or fix --database-url"
        ) from exc
    with connection, connection.begin():
        config = alembic_config(connection=connection)
        versions = MigrationContext.configure(connection)  # reads alembic_version each time
        before = versions.get_current_revision()
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
        if before is not None and before not in known:
            raise ConfigError(
                f"the database at {where} is at revision {before!r}, which this version of "
                "stratafl does not know: a newer version migrated it; run that version, or "
                "restore a backup taken before the upgrade"
            )
        adopted = before is None and _adopt(connection, config, where)
        command.upgrade(config, "head")
        after = versions.get_current_revision()
    done = Upgrade(before=before, after=after, adopted=adopted)
    if adopted or before != after:
        log.info("state store at %s: %s", where, done.describe())
    return done


def _adopt(connection: Connection, config: Config, where: str) -> bool:
    """Stamp a database made before migrations at `INITIAL` if its tables are exactly that
    revision's; False (nothing to adopt) when it has none of them."""
    initial = first.schema()
    if not set(inspect(connection).get_table_names()) & set(initial.tables):
        return False
    found = differences(connection, initial)
    if found:
        listed = "; ".join(_describe(item) for item in found[:5])
        raise ConfigError(
            f"the database at {where} has stratafl's tables but not as a controller made "
            f"them ({listed}{'; ...' if len(found) > 5 else ''}): it was changed by hand or "
            "by another program, so it is left as it is. Restore a backup, or give the "
            "controller an empty database (--database-url)"
        )
    command.stamp(config, INITIAL)
    return True


def _describe(item: Any) -> str:
    """One difference of Alembic's diff in words, e.g. ``add_column sessions.rounds_done``."""
    operation = item[0] if isinstance(item, list) else item  # column changes come in lists
    names = [
        part.name if isinstance(part, Table | Column | Index) else part
        for part in operation[1:4]
        if isinstance(part, str | Table | Column | Index)
    ]
    return f"{operation[0]} {'.'.join(str(name) for name in names)}"
