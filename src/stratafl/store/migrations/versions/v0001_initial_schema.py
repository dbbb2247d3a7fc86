"""The initial schema: the seven tables `create_all` made before migrations existed.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

The tables are written out here rather than taken from `stratafl.store.tables`, so that this
revision keeps making the same schema however the ORM rows change later. `schema()` is also
what a database made before migrations is compared against before it is adopted (stamped
at this revision): see `stratafl.store.migrations.upgrade`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def schema() -> sa.MetaData:
    """The tables of this revision, exactly as the ORM's `create_all` made them."""
    m = sa.MetaData()
    text = sa.String
    sa.Table(
        "combiners",
        m,
        sa.Column("id", text(64), primary_key=True),
        sa.Column("address", text(256), nullable=False),
        sa.Column("max_clients", sa.Integer, nullable=False),
        sa.Column("status", text(16), nullable=False),
        sa.Column("num_clients", sa.Integer, nullable=False),
        sa.Column("registered_at", sa.Float, nullable=False),
        sa.Column("last_heartbeat", sa.Float, nullable=False),
    )
    sa.Table(
        "clients",
        m,
        sa.Column("id", text(128), primary_key=True),
        sa.Column("combiner_id", text(64), nullable=True),
        sa.Column("status", text(16), nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    sa.Table(
        "sessions",
        m,
        sa.Column("id", text(64), primary_key=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("status", text(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("seed_model_id", text(64), nullable=False),
        sa.Column("final_model_id", text(64), nullable=True),
        sa.Column("rounds_done", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    sa.Table(
        "rounds",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", text(64), nullable=False, index=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("status", text(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("model_in", text(64), nullable=False),
        sa.Column("model_out", text(64), nullable=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("duration", sa.Float, nullable=False),
        *(sa.Column(name, sa.JSON, nullable=False) for name in _ROUND_JSON),
    )
    sa.Table(
        "models",
        m,
        sa.Column("id", text(64), primary_key=True),
        sa.Column("parent_id", text(64), nullable=True),
        sa.Column("session_id", text(64), nullable=True, index=True),
        sa.Column("round", sa.Integer, nullable=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("num_parameters", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    sa.Table(
        "events",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("kind", text(64), nullable=False),
        sa.Column("source", text(128), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    sa.Table(
        "tokens",
        m,
        sa.Column("token_id", text(64), primary_key=True),
        sa.Column("name", text(256), nullable=False),
        sa.Column("subject", text(256), nullable=False, index=True),
        sa.Column("role", text(16), nullable=False),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("max_examples", sa.BigInteger, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    return m


_ROUND_JSON = ("participants", "outcomes", "validation", "traffic", "timings")


def upgrade() -> None:
    # checkfirst=False: a table already there is an error, never silently kept as it is
    schema().create_all(op.get_bind(), checkfirst=False)


def downgrade() -> None:
    schema().drop_all(op.get_bind(), checkfirst=False)
