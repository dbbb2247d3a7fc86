"""Who may call what: one table for every RPC and one for every REST endpoint.

Checked in one place each (the gRPC `AuthInterceptor`, the REST API's auth dependency);
anything not listed is refused, so a new method cannot be forgotten open. Tests walk the
gRPC service descriptors and the OpenAPI document and prove every entry refuses a
missing token, a wrong role, and an expired or revoked one.
"""

from __future__ import annotations

from collections.abc import Mapping

from stratafl.security.roles import Role

_CLIENT = frozenset({Role.CLIENT})
_COMBINER = frozenset({Role.COMBINER})
_CONTROLLER = frozenset({Role.CONTROLLER})
_ADMIN = frozenset({Role.ADMIN})
"""Writes: starting and stopping sessions, uploading models, issuing and revoking tokens."""
_READERS = frozenset({Role.ADMIN, Role.VIEWER})
"""Reads of the federation's records: what the dashboard shows and scripts list."""
_SCRAPERS = frozenset({Role.ADMIN, Role.VIEWER, Role.METRICS})
"""The Prometheus metrics: a metrics token reads them and nothing else."""
PUBLIC: frozenset[Role] = frozenset()
"""No credentials needed: health checks, and the dashboard's files (they hold no data;
the page sends the admin token with each API call it makes)."""

GRPC_ROLES: Mapping[str, frozenset[Role]] = {
    # a client opens its own stream and answers its own tasks
    "/stratafl.v1.Combiner/TaskStream": _CLIENT,
    "/stratafl.v1.Combiner/DownloadModel": _CLIENT,
    "/stratafl.v1.Combiner/UploadUpdate": _CLIENT,
    "/stratafl.v1.Combiner/ReportValidation": _CLIENT,
    "/stratafl.v1.Combiner/ReportFailure": _CLIENT,
    # only the controller may run a round on a combiner or ask who is connected: no one
    # else ever receives a partial, let alone an individual update
    "/stratafl.v1.Combiner/RunRound": _CONTROLLER,
    "/stratafl.v1.Combiner/GetStatus": _CONTROLLER,
    "/stratafl.v1.Combiner/MoveClients": _CONTROLLER,  # rebalancing: only it sees the load
    # a combiner registers itself, reports its clients and fetches global models
    "/stratafl.v1.Controller/RegisterCombiner": _COMBINER,
    "/stratafl.v1.Controller/Heartbeat": _COMBINER,
    "/stratafl.v1.Controller/ReportClientEvent": _COMBINER,
    "/stratafl.v1.Controller/DownloadModel": _COMBINER,
}

REST_ROLES: Mapping[tuple[str, str], frozenset[Role]] = {
    ("GET", "/api/v1/health"): PUBLIC,
    # the dashboard's page, scripts (ours and plotly.js) and style sheet
    ("GET", "/"): PUBLIC,
    ("GET", "/dashboard/{name}.js"): PUBLIC,
    ("GET", "/dashboard/style.css"): PUBLIC,
    ("GET", "/api/v1/discovery"): frozenset({Role.COMBINER, Role.CLIENT, *_READERS}),
    ("POST", "/api/v1/assign"): _CLIENT,
    ("POST", "/api/v1/certificates"): frozenset({Role.COMBINER, Role.CLIENT}),
    ("GET", "/api/v1/combiners"): _READERS,
    ("GET", "/api/v1/clients"): _READERS,
    ("POST", "/api/v1/models"): _ADMIN,
    ("GET", "/api/v1/models"): _READERS,
    ("GET", "/api/v1/models/{model_id}"): _READERS,
    ("GET", "/api/v1/models/{model_id}/trail"): _READERS,
    ("GET", "/api/v1/models/{model_id}/download"): _READERS,
    ("POST", "/api/v1/apps"): _ADMIN,
    ("GET", "/api/v1/apps"): _READERS,
    # a client fetches the running session's package only (controller/rest/apps.py)
    ("GET", "/api/v1/apps/{sha256}/download"): _READERS | {Role.CLIENT},
    ("POST", "/api/v1/sessions"): _ADMIN,
    ("GET", "/api/v1/sessions"): _READERS,
    ("GET", "/api/v1/sessions/{session_id}"): _READERS,
    ("GET", "/api/v1/sessions/{session_id}/rounds"): _READERS,
    ("PUT", "/api/v1/sessions/{session_id}/promise"): _ADMIN,
    ("GET", "/api/v1/sessions/{session_id}/events/stream"): _READERS,
    ("POST", "/api/v1/sessions/{session_id}/stop"): _ADMIN,
    ("POST", "/api/v1/sessions/{session_id}/cancel"): _ADMIN,
    ("GET", "/api/v1/events"): _READERS,
    ("GET", "/api/v1/events/stream"): _READERS,
    ("GET", "/api/v1/audit"): _READERS,
    ("POST", "/api/v1/tokens"): _ADMIN,
    ("GET", "/api/v1/tokens"): _READERS,
    ("DELETE", "/api/v1/tokens/{token_id}"): _ADMIN,
    # every tier renews its own token before it expires (a ticket is refused: audience);
    # viewer and metrics tokens are issued anew instead
    ("POST", "/api/v1/tokens/renew"): frozenset({Role.CLIENT, Role.COMBINER, Role.ADMIN}),
    # Prometheus scrapes with a metrics token (docs/operations.md); a combiner's own
    # /metrics checks this row too
    ("GET", "/metrics"): _SCRAPERS,
}
