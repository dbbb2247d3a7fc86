"""Who is calling the REST API, checked in one place against one table.

`Authorizer` is a dependency of the whole app, so it runs before every endpoint, and
endpoints cannot opt out. For the route that matched it looks up ``(method, path
template)`` in `stratafl.security.policy.REST_ROLES`; a route missing from the table is
refused (403), so nothing is open by accident. A listed route with roles needs
``Authorization: Bearer <token>``; the token is verified by the controller's `Trust`
(signature, expiry, revocation: 401 otherwise) and its role must be listed (403
otherwise). Endpoints that need the caller take `Authorizer.caller`: the same verified
`Claims`, computed once per request. Each request also spends one of its caller's
`RateLimiter` tokens: the token's identity, or the peer address on public routes and for
bad tokens (429 beyond them); an ``--insecure`` controller (loopback only) has no
identities to count by and limits nothing.

A controller started ``--insecure`` has no `Trust`: every caller is an anonymous admin
(`ANONYMOUS`), and the table still refuses unlisted routes.

`declare_security` writes the same table into the OpenAPI document: the bearer scheme,
each operation's security requirement and roles, and its 401/403 answers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from fastapi import Depends, Request

from stratafl.controller.rest.errors import ERROR_TEXT
from stratafl.controller.rest.rates import RateLimiter
from stratafl.errors import AuthError, PermissionDenied
from stratafl.security import Claims, Role
from stratafl.security.policy import REST_ROLES

if TYPE_CHECKING:
    from stratafl.controller.wiring import Controller

__all__ = ["ANONYMOUS", "Authorizer", "declare_security"]

ANONYMOUS = Claims(
    token_id="anonymous",
    subject="anonymous",
    role=Role.ADMIN,
    issued_at=0.0,
    expires_at=math.inf,
)
"""The caller of a controller started ``--insecure``."""
SCHEME = "bearer"
HOW_TO_GET_ONE = (
    "the controller writes an admin token to trust/admin.token in its work folder; an "
    "admin makes others with `strata token create`"
)


class Authorizer:
    """The app-wide dependency: the caller's `Claims`, or None on a public route."""

    def __init__(self, controller: Controller, limiter: RateLimiter | None = None) -> None:
        self._controller = controller
        self._limiter = limiter or RateLimiter()
        itself = Depends(self)  # FastAPI solves it once per request: one verification

        async def caller(claims: Claims | None = itself) -> Claims:
            if claims is None:  # a route that names its caller cannot be public
                raise PermissionDenied(
                    "this endpoint needs a caller but REST_ROLES lists it as public; "
                    "give it roles in stratafl.security.policy"
                )
            return claims

        self.caller = caller
        """The dependency of endpoints that act on the caller's identity."""

    async def __call__(self, request: Request) -> Claims | None:
        template = getattr(request.scope.get("route"), "path", request.url.path)
        where = f"{request.method} {template}"
        roles = REST_ROLES.get((request.method, template))
        if roles is None:
            raise PermissionDenied(
                f"{where} is not in the REST role table (stratafl.security.policy.REST_ROLES)"
                "; it stays closed until it is listed there"
            )
        trust = self._controller.trust
        if trust is None:  # loopback only, and no identities: a swarm's clients share one
            return ANONYMOUS  # address, so a per-address rate would throttle honest runs
        address = f"address {request.client.host if request.client else 'unknown'}"
        if not roles:
            self._limiter.take(address)
            return None
        try:
            claims = trust.verify(_bearer_token(request, where))
        except AuthError:
            self._limiter.take(address)  # bad tokens cost a signature check: bounded too
            raise
        self._limiter.take(f"{claims.role} {claims.subject}")
        if claims.role not in roles:
            allowed = " or ".join(sorted(roles))
            raise PermissionDenied(
                f"{_a(claims.role)} {claims.role} token may not call {where}; it needs "
                f"{_a(allowed)} {allowed} token ({HOW_TO_GET_ONE})"
            )
        return claims


def _a(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def _bearer_token(request: Request, where: str) -> str:
    header = request.headers.get("authorization")
    if header is None:
        raise AuthError(
            f"{where} needs a token: send the header `Authorization: Bearer <token>`; "
            f"{HOW_TO_GET_ONE}"
        )
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != SCHEME or not token.strip():
        raise AuthError(
            "the Authorization header must be `Bearer <token>`, the token exactly as "
            "`strata token create` printed it"
        )
    return token.strip()


def declare_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the bearer scheme and, from `REST_ROLES`, each operation's roles to ``schema``."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": f"a token from the controller: {HOW_TO_GET_ONE}",
    }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            roles = REST_ROLES.get((method.upper(), path))
            if not roles:  # public (no security), or unlisted (refused whatever is sent)
                operation["security"] = []
                continue
            operation["security"] = [{SCHEME: []}]
            names = ", ".join(sorted(roles))
            operation["description"] = f"Callers: {names}. {operation.get('description', '')}"
            for code in (401, 403):
                answer = {"description": ERROR_TEXT[code], "content": error}
                operation["responses"].setdefault(str(code), answer)
    return schema
