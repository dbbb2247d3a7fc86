"""The controller's REST API: typed records in, typed records out, one error format, one
table of who may call what.

`create_api` builds the app explicitly (no globals, starts nothing) from routers, one
concept each:

    rest_federation  health, discovery, assign, certificates, combiners, clients
    rest_models      the model trail: upload, list, fetch, download
    rest_sessions    sessions (start, follow, stop, cancel, promise) and events
    rest_stream      the live events, as Server-Sent Events
    rest_tokens      tokens: create, list, revoke
    rest_audit       the audit log of admin actions (each writing router adds to it)
    rest_metrics     Prometheus metrics
    rest_dashboard   the dashboard's page and scripts (public: they hold no data)

and three cross-cutting pieces, each in one place:

    rest_auth    the app-wide dependency checking every route against REST_ROLES
    rest_bounds  body-size limits (413) and the bounded ``limit`` and ``after`` of lists
    rest_errors  every failure as an ErrorBody, domain errors by `HTTP_STATUS`

Every operation declares its response model, so ``/openapi.json`` describes every answer
(and, from the role table, who may call it) and `stratafl.restapi.client` parses each one
into the same record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI

from stratafl.controller.rest.apps import APPS_PATH, MAX_APP_BYTES, apps_router
from stratafl.controller.rest.audit import audit_router
from stratafl.controller.rest.auth import Authorizer, declare_security
from stratafl.controller.rest.bounds import MAX_JSON_BYTES, MAX_UPLOAD_BYTES, BoundedBodies
from stratafl.controller.rest.dashboard import dashboard_router
from stratafl.controller.rest.errors import HTTP_STATUS, errors_of, install_error_handlers
from stratafl.controller.rest.federation import federation_router
from stratafl.controller.rest.metrics import metrics_router
from stratafl.controller.rest.models import UPLOAD_PATH, models_router
from stratafl.controller.rest.rates import DEFAULT_RATE_LIMITS, RateLimiter, RateLimits
from stratafl.controller.rest.sessions import sessions_router
from stratafl.controller.rest.tokens import tokens_router
from stratafl.errors import ConfigError

if TYPE_CHECKING:
    from stratafl.controller.wiring import Controller

__all__ = ["HTTP_STATUS", "MAX_UPLOAD_BYTES", "create_api", "install_error_handlers"]


class _DeclaredAPI(FastAPI):
    """FastAPI whose OpenAPI document also carries the bearer scheme and the role table."""

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            self.openapi_schema = declare_security(super().openapi())
        return self.openapi_schema


def create_api(
    controller: Controller,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    rate_limits: RateLimits = DEFAULT_RATE_LIMITS,
) -> FastAPI:
    """The REST app over a built `Controller`; model uploads are refused over
    ``max_upload_bytes``. Its security is the controller's: ``controller.trust`` None means
    the controller runs ``--insecure`` (callers are anonymous admins). Each caller may
    send ``rate_limits`` (`RateLimits`), counted per identity (per address when it has
    no token).

    No /docs or /redoc: those pages load scripts from a CDN onto the dashboard's origin,
    where the admin token lives. The schema itself (/openapi.json) is plain JSON that runs
    nothing, so it stays: docs/api.md says how to browse it offline."""
    if not 1 <= max_upload_bytes <= MAX_UPLOAD_BYTES:
        raise ConfigError(
            f"max_upload_bytes={max_upload_bytes} must be from 1 to {MAX_UPLOAD_BYTES} (8 GiB)"
        )
    authorize = Authorizer(controller, RateLimiter(rate_limits))
    app = _DeclaredAPI(
        title="stratafl controller",
        version="0.1.0",
        responses=errors_of(422, 500),
        dependencies=[Depends(authorize)],  # every route, including any added later
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(
        BoundedBodies,
        limits={("POST", UPLOAD_PATH): max_upload_bytes, ("POST", APPS_PATH): MAX_APP_BYTES},
        default=MAX_JSON_BYTES,
    )
    app.include_router(federation_router(controller, authorize))
    app.include_router(models_router(controller, authorize))
    app.include_router(apps_router(controller, authorize))
    app.include_router(sessions_router(controller, authorize))
    app.include_router(tokens_router(controller, authorize))
    app.include_router(audit_router(controller))
    app.include_router(metrics_router(controller))
    app.include_router(dashboard_router())
    return app
