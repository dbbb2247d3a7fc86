"""events.session_id (indexed): a session's events, streamed live; sessions.promise: the
promise check stored with its session.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Events recorded before this revision keep a null session_id: they are still listed by
``GET /events``, and a session's stream simply starts after them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("session_id", sa.String(64), nullable=True))
        batch.create_index("ix_events_session_id", ["session_id"])
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("promise", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("promise")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_session_id")
        batch.drop_column("session_id")
