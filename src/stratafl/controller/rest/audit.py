"""``GET /api/v1/audit``: the admin actions, and `record_action`, how the routers that act
add one.

Each write endpoint records its action after it succeeded, under the caller's token
subject (never a name the caller sends), so the log says who issued and revoked which
token, who started, stopped or cancelled which session and who uploaded which model.
Admins and viewers read it a page at a time, oldest first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from stratafl.controller.rest.bounds import DEFAULT_LIMIT, After, Limit
from stratafl.controller.rest.errors import errors_of
from stratafl.records import AuditAction, AuditRecord, Page
from stratafl.security import Claims

if TYPE_CHECKING:
    from stratafl.controller.wiring import Controller
    from stratafl.store.state import StateStore

__all__ = ["audit_router", "record_action"]


async def record_action(
    store: StateStore, action: AuditAction, caller: Claims, target: str, **detail: Any
) -> None:
    """Add ``caller``'s ``action`` on ``target`` to the audit log (off the event loop)."""
    await store.off_loop.write(store.add_audit, action, caller.subject, target, **detail)


def audit_router(controller: Controller) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    store = controller.store

    @router.get("/audit", responses=errors_of(400))
    async def audit(after: After = None, limit: Limit = DEFAULT_LIMIT) -> Page[AuditRecord]:
        """Admin actions (tokens issued and revoked, sessions started, stopped and
        cancelled, models uploaded), who asked and when, oldest first."""
        return await store.off_loop.read(store.audit_page, after, limit)

    return router
