"""REST endpoints of the tokens the controller issues: create, list, revoke (admins only;
viewers may list).

A new token is answered once, with its record; the controller keeps only the record (the
claims and a label), so it can be listed and revoked but never shown again. A revoked
token is refused by the REST API at once and by combiners from their next heartbeat.
A renewed token keeps its id, so revoking the id refuses every copy and every ticket.
Issuing and revoking are recorded in the audit log under the caller's subject.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends

from stratafl.controller.rest.audit import record_action
from stratafl.controller.rest.auth import Authorizer
from stratafl.controller.rest.bounds import DEFAULT_LIMIT, After, Limit
from stratafl.controller.rest.errors import errors_of
from stratafl.controller.rest.federation import trust_of
from stratafl.records import AuditAction, Page, TokenRecord
from stratafl.restapi.schema import IssuedToken, TokenRequest
from stratafl.security import Claims, Role

if TYPE_CHECKING:
    from stratafl.controller.wiring import Controller

__all__ = ["tokens_router"]


def tokens_router(controller: Controller, authorize: Authorizer) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    store = controller.store
    caller_of = Depends(authorize.caller)

    @router.post("/tokens", status_code=201, responses=errors_of(400, 413))
    async def create_token(body: TokenRequest, caller: Claims = caller_of) -> IssuedToken:
        """A new token, shown in this answer only: hand it over now."""
        issue = trust_of(controller, "issue tokens").issue
        token, record = await store.off_loop.write(
            issue,
            store,
            name=body.name,
            subject=body.subject or body.name,
            role=Role(body.role),
            ttl_seconds=body.ttl_seconds,
            max_examples=body.max_examples,
            hosts=body.hosts,
        )
        await record_action(
            store,
            AuditAction.TOKEN_ISSUED,
            caller,
            record.token_id,
            role=record.role,
            name=record.name,
            subject=record.subject,
        )
        return IssuedToken(token=token, record=record)

    @router.post("/tokens/renew", responses=errors_of(400))
    async def renew_token(caller: Claims = caller_of) -> IssuedToken:
        """A fresh copy of the caller's own still-valid token, its lifetime counted from
        now; tiers call it well before their token expires and use the new one."""
        renew = trust_of(controller, "renew tokens").renew
        token, record = await store.off_loop.write(renew, store, caller)
        return IssuedToken(token=token, record=record)

    @router.get("/tokens", responses=errors_of(400))
    async def tokens(after: After = None, limit: Limit = DEFAULT_LIMIT) -> Page[TokenRecord]:
        """Every token issued (never the tokens themselves), oldest first."""
        return await store.off_loop.read(store.tokens_page, after, limit)

    @router.delete("/tokens/{token_id}", responses=errors_of(400, 404, 409))
    async def revoke_token(token_id: str, caller: Claims = caller_of) -> TokenRecord:
        """Revoke a token by its id (or a unique prefix of it); revoking it again changes
        nothing. The last admin token that is neither revoked nor expired cannot be
        revoked (409)."""
        revoke = trust_of(controller, "revoke tokens").revoke
        record = await store.off_loop.write(revoke, store, token_id)
        await record_action(
            store,
            AuditAction.TOKEN_REVOKED,
            caller,
            record.token_id,
            role=record.role,
            subject=record.subject,
        )
        return record

    return router
