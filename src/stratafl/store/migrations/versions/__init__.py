"""Alembic revisions of the state store, oldest first by their ``down_revision`` chain."""
