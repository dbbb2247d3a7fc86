"""The audit log: each admin action, who asked (the caller's token subject) and when.

Rows are only added, never changed; the REST API adds one as it acts (`add_audit`) and
serves them a page at a time, oldest first (`audit_page`). These methods are part of
`StateStore` (it inherits them from `AuditTable`); they live here to keep the audit
schema's reads and writes in one module of their own.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stratafl.records import AuditAction, AuditRecord, Page
from stratafl.store.pages import keyset, next_cursor
from stratafl.store.tables import AuditRow

__all__ = ["AuditTable"]

MAX_FIELD_CHARS = 256
"""The actor and target columns' width: a subject or an id is never longer."""


class AuditTable:
    """Reads and writes of the ``audit`` table, mixed into `StateStore`."""

    def _session(self) -> Session:  # StateStore's own opens a session on its engine
        raise NotImplementedError

    def add_audit(self, action: AuditAction, actor: str, target: str, **detail: Any) -> AuditRecord:
        """Record that ``actor`` did ``action`` to ``target``; ``detail`` is kept as JSON
        (values it cannot encode become strings)."""
        row = AuditRow(
            time=time.time(),
            actor=actor[:MAX_FIELD_CHARS],
            action=AuditAction(action).value,
            target=target[:MAX_FIELD_CHARS],
            detail=json.loads(json.dumps(detail, default=str)),
        )
        with self._session() as db, db.begin():
            db.add(row)
        return AuditRecord.model_validate(row)

    def audit_page(self, after: str | None = None, limit: int = 100) -> Page[AuditRecord]:
        """Admin actions in the order they were taken."""
        with self._session() as db:
            rows = list(db.scalars(keyset(select(AuditRow), "audit", (AuditRow.id,), after, limit)))
            items = [AuditRecord.model_validate(row) for row in rows[:limit]]
            return Page[AuditRecord](items=items, next=next_cursor("audit", rows, ["id"], limit))
