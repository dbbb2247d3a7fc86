"""audit: the admin actions (tokens issued and revoked, sessions started, stopped and
cancelled, models uploaded), who asked and when.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

A database upgraded to this revision starts with an empty log: actions taken before it
were never recorded (the events still say what the federation did).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_actor", "audit", ["actor"])


def downgrade() -> None:
    op.drop_index("ix_audit_actor", table_name="audit")
    op.drop_table("audit")
