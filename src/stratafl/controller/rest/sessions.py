"""REST endpoints of sessions: start one, follow it, stop or cancel it, store its promise
check; and the events, as pages or live streams (`stratafl.controller.rest.stream`).

Stop ends a session after the round in flight; cancel ends it now (the round in flight is
dropped and leaves nothing behind). Either records who asked: the caller's token subject,
in the session's events and in the audit log (as starting one does).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends

from stratafl.controller.rest.audit import record_action
from stratafl.controller.rest.auth import Authorizer
from stratafl.controller.rest.bounds import DEFAULT_LIMIT, After, Limit
from stratafl.controller.rest.errors import errors_of
from stratafl.controller.rest.stream import add_stream_routes
from stratafl.records import (
    AuditAction,
    EventRecord,
    Page,
    PromiseRecord,
    RoundRecord,
    SessionRecord,
)
from stratafl.security import Claims
from stratafl.settings import SessionConfig
from stratafl.store.protocols import SessionReads

if TYPE_CHECKING:
    from stratafl.controller.wiring import Controller

__all__ = ["sessions_router"]

CANCEL_WAIT_SECONDS = 5.0
"""How long a cancel waits for the session to record its end before answering."""


def sessions_router(controller: Controller, authorize: Authorizer) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    store: SessionReads = controller.store
    read = store.off_loop.read
    caller_of = Depends(authorize.caller)  # the verified token's claims

    @router.post("/sessions", status_code=201, responses=errors_of(400, 404, 413))
    async def start_session(config: SessionConfig, caller: Claims = caller_of) -> SessionRecord:
        """Start a session (400 while another one runs: one runs at a time; 404 if it
        names an app package the controller does not hold)."""
        if config.app_sha256:
            await asyncio.to_thread(controller.apps.record, config.app_sha256)
        session_id = await controller.sessions.start(config)
        record = await read(store.session, session_id)
        await record_action(
            controller.store,
            AuditAction.SESSION_STARTED,
            caller,
            session_id,
            seed_model_id=record.seed_model_id,
            rounds=config.rounds,
            aggregator=config.aggregator,
        )
        return record

    @router.get("/sessions", responses=errors_of(400))
    async def sessions(after: After = None, limit: Limit = DEFAULT_LIMIT) -> Page[SessionRecord]:
        """Sessions in the order they were started."""
        return await read(store.sessions_page, after, limit)

    @router.get("/sessions/{session_id}", responses=errors_of(404))
    async def session(session_id: str) -> SessionRecord:
        return await read(store.session, session_id)

    @router.get("/sessions/{session_id}/rounds", responses=errors_of(400, 404))
    async def rounds(
        session_id: str, after: After = None, limit: Limit = DEFAULT_LIMIT
    ) -> Page[RoundRecord]:
        """The session's rounds by number (a failed round before its retry)."""
        session = await read(store.session, session_id)  # unknown: a 404, not an empty list
        return await read(store.rounds_page, session.id, after, limit)

    @router.put("/sessions/{session_id}/promise", responses=errors_of(404, 413))
    async def promise(session_id: str, body: PromiseRecord) -> SessionRecord:
        """Store the session's promise check (`strata run` measures it after the session)."""
        return await store.off_loop.write(store.set_promise, session_id, body)

    @router.post("/sessions/{session_id}/stop", responses=errors_of(404, 409))
    async def stop(session_id: str, caller: Claims = caller_of) -> SessionRecord:
        """End the session after the round in flight (409 if it is not running)."""
        session_id = await controller.sessions.stop(session_id, by=caller.subject)
        await record_action(controller.store, AuditAction.SESSION_STOPPED, caller, session_id)
        return await read(store.session, session_id)

    @router.post("/sessions/{session_id}/cancel", responses=errors_of(404, 409))
    async def cancel(session_id: str, caller: Claims = caller_of) -> SessionRecord:
        """End the session now; the round in flight is dropped (409 if it is not running)."""
        session_id = await controller.sessions.cancel(session_id, by=caller.subject)
        await record_action(controller.store, AuditAction.SESSION_CANCELLED, caller, session_id)
        running = controller.sessions.current
        if running is not None:  # the answer shows the session cancelled, not cancelling
            await asyncio.wait({running}, timeout=CANCEL_WAIT_SECONDS)
        return await read(store.session, session_id)

    @router.get("/events", responses=errors_of(400))
    async def events(
        session_id: str | None = None, after: After = None, limit: Limit = DEFAULT_LIMIT
    ) -> Page[EventRecord]:
        """Events in the order they happened, all of them or one session's."""
        if session_id is not None:
            session_id = (await read(store.session, session_id)).id
        return await read(store.events_page, session_id, after, limit)

    add_stream_routes(router, controller)
    return router
