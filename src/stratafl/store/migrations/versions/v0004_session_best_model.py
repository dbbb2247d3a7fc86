"""sessions.best_model_id and sessions.best_score: the session's best model by its
validation metric (``SessionConfig.best_model_by``), which the retention policy keeps.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08

Sessions recorded before this revision have no best model named: the retention policy
keeps their last models only, as it did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("best_model_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("best_score", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("best_score")
        batch.drop_column("best_model_id")
