"""REST endpoints of the federation's members: health, discovery, assignment, certificates,
and the lists of combiners and clients.

Identities come from tokens, never from bodies: a client is assigned under its token's
subject, and a certificate is named after the caller's subject (the CSR's own name is
ignored). Only a combiner's certificate may name hosts, and only those the admin put in
its token (`strata token create --host`): a client serves nothing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends
from fastapi.exceptions import RequestValidationError

from stratafl.controller.rest.auth import Authorizer
from stratafl.controller.rest.bounds import DEFAULT_LIMIT, After, Limit
from stratafl.controller.rest.errors import errors_of
from stratafl.errors import PermissionDenied, StrataError
from stratafl.records import ClientRecord, CombinerRecord, Page
from stratafl.restapi.schema import (
    Assignment,
    AssignRequest,
    CertificateRequest,
    DiscoveryInfo,
    Health,
    SignedCertificate,
)
from stratafl.security import Claims, Role
from stratafl.security.receipts import encode_key
from stratafl.store.protocols import FederationReads

if TYPE_CHECKING:
    from stratafl.controller.trust import Trust
    from stratafl.controller.wiring import Controller

__all__ = ["federation_router", "trust_of"]


def trust_of(controller: Controller, what: str) -> Trust:
    """The controller's `Trust`, or a 400 naming the fix when it runs ``--insecure``."""
    if controller.trust is None:
        raise StrataError(
            f"the controller runs --insecure: it has no CA or token key to {what}; "
            "restart it without --insecure"
        )
    return controller.trust


def federation_router(controller: Controller, authorize: Authorizer) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    store: FederationReads = controller.store
    caller_of = Depends(authorize.caller)  # the verified token's claims

    @router.get("/health")
    async def health() -> Health:
        return Health()

    @router.get("/discovery")
    async def discovery() -> DiscoveryInfo:
        """The controller's gRPC address, and the token key and CA that combiners verify
        their peers with (empty when the controller runs --insecure)."""
        trust = controller.trust
        if trust is None:
            return DiscoveryInfo(grpc_address=controller.grpc_address)
        return DiscoveryInfo(
            grpc_address=controller.grpc_address,
            token_public_key_pem=trust.signer.public_key_pem.decode("ascii"),
            ca_pem=trust.authority.ca_pem.decode("ascii"),
        )

    @router.post("/assign", responses=errors_of(413, 503))
    async def assign(body: AssignRequest, caller: Claims = caller_of) -> Assignment:
        """The combiner the calling client should connect to (its id: its token's subject),
        and the key it signs its receipts with (the controller counts no outcome without),
        and its ticket there: a short token that combiner alone accepts. A client renewing
        its ticket names ``current_combiner`` and stays there while it is connected to it."""
        client_id = _client_id(body, caller, secure=controller.trust is not None)
        entry = None
        if body.current_combiner is not None:  # a ticket's renewal: stay, unpinned
            entry = controller.discovery.holding(client_id, body.current_combiner)
        if entry is None:
            entry = await controller.discovery.assign(
                client_id, body.failed_combiner, preferred=body.preferred_combiner
            )
        trust = controller.trust
        ticket = "" if trust is None else trust.ticket(caller, entry.combiner_id)
        key = encode_key(controller.receipts.key_for(client_id))
        return Assignment(
            combiner_id=entry.combiner_id, address=entry.address, ticket=ticket, receipt_key=key
        )

    @router.post("/certificates", responses=errors_of(400, 413))
    async def certificate(
        body: CertificateRequest, caller: Claims = caller_of
    ) -> SignedCertificate:
        """A TLS certificate for the key in a CSR, named after the caller's token subject,
        for hosts the caller's token allows (403 for any other)."""
        trust = trust_of(controller, "sign certificates")
        if body.hosts and caller.role != Role.COMBINER:
            raise PermissionDenied(
                f"a {caller.role} certificate names no hosts (only a combiner serves); "
                "send hosts: []"
            )
        csr = body.csr_pem.encode("utf-8")
        pem = await asyncio.to_thread(trust.sign_certificate, csr, caller, body.hosts)
        return SignedCertificate(
            certificate_pem=pem.decode("ascii"), ca_pem=trust.authority.ca_pem.decode("ascii")
        )

    @router.get("/combiners", responses=errors_of(400))
    async def combiners(after: After = None, limit: Limit = DEFAULT_LIMIT) -> Page[CombinerRecord]:
        """Every combiner that ever registered, online or offline, by id."""
        return await store.off_loop.read(store.combiners_page, after, limit)

    @router.get("/clients", responses=errors_of(400))
    async def clients(after: After = None, limit: Limit = DEFAULT_LIMIT) -> Page[ClientRecord]:
        """Every client that ever connected, by id, and the combiner it is on."""
        return await store.off_loop.read(store.clients_page, after, limit)

    return router


def _client_id(body: AssignRequest, caller: Claims, *, secure: bool) -> str:
    """Who asks: the token's subject; the body's id only when there are no tokens."""
    if not secure:
        if body.client_id is None:
            raise RequestValidationError(
                [
                    {
                        "loc": ("body", "client_id"),
                        "msg": "Field required when the controller runs --insecure "
                        "(no token names the client)",
                        "type": "missing",
                    }
                ]
            )
        return body.client_id
    if body.client_id is not None and body.client_id != caller.subject:
        raise PermissionDenied(
            f"this token belongs to client {caller.subject!r}, not {body.client_id!r}; "
            "leave client_id out (the token names the client) or use that client's own token"
        )
    return caller.subject
